"""The Rustle assistant. The product: `index` (the repository index) and `engine` (prompts, decoding,
streaming). The lab: `lab` (corpus, training, evaluation, benchmarks). The command line: `cli`."""
