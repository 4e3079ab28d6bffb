"""The pygls language server that streams completions into editors."""
