"""The hybrid-attention decoder: configs, attention kinds, caches."""
