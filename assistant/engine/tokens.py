"""Text ↔ tokens for the engine: encoding in line chunks (so an edit re-encodes only its line) and the
bytes of every token (token healing and the copy model work on bytes).

Our pre-tokenizer glues a newline run to the indentation that follows it ("\\n    "), never to the
text before it, so cutting a text where a newline run starts gives the same tokens chunk by chunk as
in one piece (tests check this on real files).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property, lru_cache

from tokenizer import Layout

NEWLINE_RUN = re.compile(r"(?<![\r\n])(?=\r?\n)")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes (the inverse of its bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def line_chunks(text: str) -> list[str]:
    """`text` cut before every newline run: "a\\n  b\\n\\nc" → ["a", "\\n  b", "\\n\\nc"]."""
    return list(iter_line_chunks(text))


def iter_line_chunks(text: str) -> Iterator[str]:
    """`line_chunks`, one at a time (a window of the suffix needs only its first few)."""
    start = 0
    for match in NEWLINE_RUN.finditer(text):
        if match.start() > 0:
            yield text[start:match.start()]
            start = match.start()
    yield text[start:]


class Vocab(Layout):
    """The repository layout plus what the engine needs to know about its tokens."""

    @cached_property
    def token_bytes(self) -> list[bytes]:
        """The bytes each id stands for (b"" for special tokens)."""
        decode = _byte_decoder()
        special = set(self.special.values())
        return [b"" if i in special else bytes(decode[c] for c in self.tok.id_to_token(i)) for i in range(self.size)]

    def encode_chunks(self, text: str) -> list[tuple[int, ...]]:
        return [self.chunk_ids(chunk) for chunk in line_chunks(text)]

    def iter_chunks(self, text: str) -> Iterator[tuple[int, ...]]:
        return (self.chunk_ids(chunk) for chunk in iter_line_chunks(text))

    @lru_cache(maxsize=1 << 16)
    def chunk_ids(self, chunk: str) -> tuple[int, ...]:
        """One line chunk's ids, remembered: a request re-encodes only the lines edited since the last one
        (the whole buffer up to the cursor took ~45 ms a request on an 800-line file)."""
        return tuple(self.encode(chunk))

    def file_header(self, path: str) -> list[int]:
        return list(self._file_header(path))

    @lru_cache(maxsize=1 << 14)
    def _file_header(self, path: str) -> tuple[int, ...]:
        """Remembered: a prompt has one per repository file, and encoding them all took ~2 ms a request."""
        return tuple(super().file_header(path))

    def decode_bytes(self, ids: list[int]) -> bytes:
        table = self.token_bytes
        return b"".join(table[i] for i in ids)
