"""Evaluation: bits per byte on files, HumanEval-Rust with rustc, recall at a distance."""
