"""The language server: pygls over the completion engine."""
