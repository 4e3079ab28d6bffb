"""The lab: building the corpus, training, evaluating and benchmarking. It may import the product
(`assistant.index`, `assistant.engine`, `model`, `tokenizer`); the product never imports it."""
