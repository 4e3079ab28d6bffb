"""Training: tokenized repository-level shards, the training loop, checkpoints."""
