"""The token layout of a repository, one definition for training (packing) and serving (prompts):

    <|repo_name|>name⏎ (<|file_sep|>path⏎ text)… <|endoftext|>
    a file cut for fill-in-the-middle, after its header (StarCoder's conventions):
        PSM  <|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>middle
        SPM  <|fim_prefix|><|fim_suffix|>suffix<|fim_middle|>prefix middle

The engine's prompt is SPM with the middle still to come, so `spm(prefix, suffix)` is exactly what a
prompt holds once its prefix is in; `tests/test_layout.py` holds packing and prompts to the same tokens.
"""
from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

from .special import ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME, SPECIAL_TOKENS


class Layout:
    """A tokenizer's special ids and the headers and FIM orders built from them."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self.size = tok.get_vocab_size()
        self.special = {name: tok.token_to_id(name) for name in SPECIAL_TOKENS}
        self.eos, self.file_sep = self.special[ENDOFTEXT], self.special[FILE_SEP]
        self.fim_prefix, self.fim_suffix = self.special[FIM_PREFIX], self.special[FIM_SUFFIX]
        self.fim_middle, self.repo_name = self.special[FIM_MIDDLE], self.special[REPO_NAME]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids if text else []

    def repo_header(self, name: str) -> list[int]:
        return [self.repo_name] + self.encode(name + "\n")

    def file_header(self, path: str) -> list[int]:
        """`<|file_sep|>path⏎`, as every file starts."""
        return [self.file_sep] + self.encode(path + "\n")

    def psm(self, prefix: list[int], suffix: list[int], middle: list[int]) -> list[int]:
        return [self.fim_prefix] + prefix + [self.fim_suffix] + suffix + [self.fim_middle] + middle

    def spm(self, prefix: list[int], suffix: list[int], middle: Sequence[int] = ()) -> list[int]:
        return [self.fim_prefix, self.fim_suffix] + suffix + [self.fim_middle] + prefix + list(middle)
