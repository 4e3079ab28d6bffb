"""One module per attention kind; each has a parallel form (training, prefill) and a one-token form (decode)."""
