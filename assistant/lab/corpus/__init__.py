"""Building the Rust training corpus: sources, filters, the crate split, the manifest and text shards."""
