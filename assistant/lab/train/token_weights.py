"""Which next tokens the training loss weighs more: the pieces of names, and the far repeats.

Why: most of the engine's wrong suggestions are wrong names (issue 19), while the loss is spent evenly on
punctuation, indentation and keywords that the model already predicts well. A recipe's `name_weight` multiplies
the loss on every token that holds a piece of an identifier (after any white space or punctuation it starts with:
`.parse`, ` foo`, `_bar`), keywords excepted. Words of comments and strings count too: the table knows tokens, not
where they stand. A recipe's `far_repeat_weight` multiplies the loss on every next name piece that, with the token
before it, repeats a pair last seen more than the model's window back: there only a global layer (lql, gdn) can
copy it, and that is the retrieval issue 20 asks for (about a tenth of a 16K-token window's tokens). With
`far_repeat_from = "other-files"` only the far repeats whose latest earlier occurrence is in another file of the
packed crate count (a third to a half of them): a name that the repository defines or uses elsewhere, as in line
completion's cross-file tasks, not a synthetic copy block or a file's own earlier line. The loss stays a weighted
mean (model/model.py), so the learning rate means what it did.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tokenizer import load_tokenizer
from tokenizer.special import FILE_SEP

NAME_PIECE = re.compile(r"[^A-Za-z0-9_]*([A-Za-z0-9_]*[A-Za-z_][A-Za-z0-9_]*)")
KEYWORDS = frozenset("""as async await break const continue crate dyn else enum extern false fn for if impl in let loop
match mod move mut pub ref return self Self static struct super trait true type unsafe use where while""".split())


def is_name_piece(text: str) -> bool:
    """`text` (a token's) holds part of an identifier: after any white space and punctuation, letters, digits and
    underscores with at least one letter or underscore; a keyword is not one."""
    match = NAME_PIECE.match(text)
    return match is not None and match.group(1) not in KEYWORDS


def name_pieces(tokenizer: Path) -> torch.Tensor:
    """[vocab] bool: the tokens that are name pieces."""
    tok = load_tokenizer(tokenizer)
    return torch.tensor([is_name_piece(tok.decode([i], skip_special_tokens=False))
                         for i in range(tok.get_vocab_size())])


def far_repeats(x: torch.Tensor, y: torch.Tensor, window: int, separator: int | None = None) -> torch.Tensor:
    """[B, T] bool: the pair (x[t], y[t]) occurred earlier in the row and its latest earlier occurrence ends more than
    `window` positions before t (so a sliding window cannot see it); with a file `separator` token, also in another
    file (a separator between the two)."""
    keys = x.long() * (int(y.max().clamp_min(0)) + 1) + y.clamp_min(0).long()
    order = torch.sort(keys, dim=1, stable=True).indices           # equal keys stay in position order
    sorted_keys = keys.gather(1, order)
    repeat = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    far = repeat & (order[:, 1:] - order[:, :-1] > window)
    if separator is not None:
        file = torch.cumsum(x == separator, dim=1)
        far &= file.gather(1, order[:, 1:]) != file.gather(1, order[:, :-1])
    mask = torch.zeros_like(y, dtype=torch.bool)
    return mask.scatter(1, order[:, 1:], far)


@dataclass(frozen=True)
class TokenWeighing:
    """A batch's loss weights: `name_weight` on the name pieces, times `far_weight` on those that are far repeats."""
    names: torch.Tensor           # [vocab] bool: the name pieces (name_pieces)
    name_weight: float = 1.0
    far_weight: float = 1.0
    window: int = 512             # the model's sliding window: repeats farther back than this are far
    separator: int | None = None  # the file separator's id: only repeats from another file are far (None: any)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        name = self.names.to(y.device)[y.clamp_min(0)]
        weights = torch.where(name, self.name_weight, 1.0)
        if self.far_weight == 1.0:
            return weights
        return weights * torch.where(name & far_repeats(x, y, self.window, self.separator), self.far_weight, 1.0)


def token_weighing(tokenizer: Path, name_weight: float, far_repeat_weight: float, window: int,
                   far_repeat_from: str = "anywhere") -> TokenWeighing | None:
    """A recipe's weighing, or None where it weighs every token alike. `far_repeat_from`: "anywhere" or
    "other-files"."""
    if name_weight == 1.0 and far_repeat_weight == 1.0:
        return None
    separator = load_tokenizer(tokenizer).token_to_id(FILE_SEP) if far_repeat_from == "other-files" else None
    return TokenWeighing(name_pieces(tokenizer), name_weight, far_repeat_weight, window, separator)
