"""The `rustle` command line: one module per command group, each with `register(subparsers)` and thin handlers
that parse arguments, call the product or the lab, and print (`console.py` is the one place that draws)."""
from .main import main

__all__ = ["main"]
