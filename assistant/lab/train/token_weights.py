"""Which next tokens the training loss weighs more: the pieces of names.

Why: most of the engine's wrong suggestions are wrong names (issue 19), while the loss is spent evenly on
punctuation, indentation and keywords that the model already predicts well. A recipe's `name_weight` multiplies
the loss on every token that holds a piece of an identifier (after any white space or punctuation it starts with:
`.parse`, ` foo`, `_bar`), keywords excepted. Words of comments and strings count too: the table knows tokens, not
where they stand. The loss stays a weighted mean (model/model.py), so the learning rate means what it did.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from tokenizer import load_tokenizer

NAME_PIECE = re.compile(r"[^A-Za-z0-9_]*([A-Za-z0-9_]*[A-Za-z_][A-Za-z0-9_]*)")
KEYWORDS = frozenset("""as async await break const continue crate dyn else enum extern false fn for if impl in let loop
match mod move mut pub ref return self Self static struct super trait true type unsafe use where while""".split())


def is_name_piece(text: str) -> bool:
    """`text` (a token's) holds part of an identifier: after any white space and punctuation, letters, digits and
    underscores with at least one letter or underscore; a keyword is not one."""
    match = NAME_PIECE.match(text)
    return match is not None and match.group(1) not in KEYWORDS


def name_weights(tokenizer: Path, weight: float) -> torch.Tensor:
    """[vocab] loss weights: `weight` for the tokens that are name pieces, 1 for the rest."""
    tok = load_tokenizer(tokenizer)
    return torch.tensor([weight if is_name_piece(tok.decode([i], skip_special_tokens=False)) else 1.0
                         for i in range(tok.get_vocab_size())])
