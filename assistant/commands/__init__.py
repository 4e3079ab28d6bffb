"""One module per `rustle` command group: each has `register(subparsers)` and thin handlers."""
