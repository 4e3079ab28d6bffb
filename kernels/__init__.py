"""Attention kernels: Triton GPU kernels, each beside a plain PyTorch reference, and the CPU path."""
