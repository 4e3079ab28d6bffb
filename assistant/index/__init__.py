"""The repository index: tree-sitter definitions, imports and references of a workspace, stored in SQLite."""
