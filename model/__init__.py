"""The hybrid-attention decoder: configs, attention kinds, caches."""
from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "checkpoints" / "rustle-small"  # what every command uses by default; here,
                                                                        # not in io.py, so naming it loads no torch
