"""The completion engine: prompt layout, model state checkpoints, token healing, copy model, stop rules."""
