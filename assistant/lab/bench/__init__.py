"""Benchmarks that print numbers (see BENCHMARKS.md); none of them asserts a timing."""
