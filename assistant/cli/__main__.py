"""`python -m assistant.cli`: the `rustle` command without its installed script."""
import sys

from .main import main

sys.exit(main())
