"""The Rustle assistant: corpus and training commands, repository index, prompts, completion engine, CLI."""
