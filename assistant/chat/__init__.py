"""`rustle chat`: a conversation about a codebase in the terminal, over the index and the engine."""
