"""What one Rust file contributes to the index, read by a lexical scan in C (scan.c): the same FileSymbols as the
tree-sitter reading in parse.py, several times faster, which is what indexing a whole crate tree needs.

parse.py is the reference: the tests hold the scan to its definitions (kind, name, scope, lines, signature,
doc) on real crates. References differ by design where only a syntax tree can tell (a tuple-struct pattern
reads as a call here; a constant in an expression is no type): the scan takes every identifier before `(` as
a call and every capitalised one as a type, except a path's head (`Vec::new`) and ALL_CAPS constants.
Where no C compiler works, `available()` is False and the indexer parses with tree-sitter.
"""
from __future__ import annotations

import ctypes
import re
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np

from kernels.clib import compiled

from .parse import SIGNATURE_CHARS, Definition, FileSymbols, Reference, doc_line

KINDS = ("fn", "struct", "enum", "union", "trait", "impl", "const", "static", "type", "macro", "mod", "variant",
         "field")                                   # scan.c's K_* in order
REF_KINDS = ("call", "type")                        # R_CALL, R_TYPE
IMPORT = 2                                          # R_IMPORT: a `use` declaration's argument
DEF_COLUMNS, REF_COLUMNS = 15, 5                    # int32 fields of scan.c's Def and Ref
SIGNATURE_WINDOW = 8 * SIGNATURE_CHARS              # bytes read for a signature: whitespace collapses into it
DOC_COMMENT = re.compile(rb"///[^\n]*|/\*\*.*?\*/", re.DOTALL)


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    here = Path(__file__).parent
    lib = compiled("scan", (here / "scan.c",), (here / "lex.h",))
    if lib is not None:
        p, i = ctypes.c_void_p, ctypes.c_int32
        lib.rust_scan.argtypes, lib.rust_scan.restype = [ctypes.c_char_p, i, p, i, p, i, p], i
    return lib


def available() -> bool:
    return _library() is not None


def _doc(comments: bytes) -> str:
    """The doc comments right above a definition: scan.c finds where they are, parse.doc_line reads each."""
    lines = (doc_line(match.group().decode("utf-8", "replace")) for match in DOC_COMMENT.finditer(comments))
    return "\n".join(line for line in lines if line is not None)


def _run(source: bytes) -> tuple[np.ndarray, np.ndarray]:
    lib = _library()
    defs = np.empty((len(source) // 32 + 64, DEF_COLUMNS), np.int32)
    refs = np.empty((len(source) // 8 + 64, REF_COLUMNS), np.int32)
    counts = np.zeros(2, np.int32)
    while True:
        if lib.rust_scan(source, len(source), defs.ctypes.data, len(defs), refs.ctypes.data, len(refs),
                         counts.ctypes.data):
            raise MemoryError(f"scanning {len(source):,} bytes of Rust")
        if counts[0] <= len(defs) and counts[1] <= len(refs):
            return defs[:counts[0]], refs[:counts[1]]
        defs = np.empty((max(counts[0], len(defs)), DEF_COLUMNS), np.int32)   # exact sizes: the retry fits
        refs = np.empty((max(counts[1], len(refs)), REF_COLUMNS), np.int32)


def _slices(source: bytes, starts: list[int], ends: list[int]) -> list[str]:
    if source.isascii():        # most files: a str's indexes are the byte offsets, and slicing it decodes nothing
        text = source.decode("ascii")
        return [text[a:b] for a, b in zip(starts, ends)]
    return [source[a:b].decode("utf-8", "replace") for a, b in zip(starts, ends)]


def _signature(source: bytes, start: int, end: int) -> str:
    return " ".join(source[start:min(end, start + SIGNATURE_WINDOW)].decode("utf-8", "replace").split())[
        :SIGNATURE_CHARS]


def scan_source(source: bytes) -> FileSymbols:
    """A file's definitions, imports and references, as parse.parse_source returns them."""
    def_rows, ref_rows = _run(source)
    (kinds, name_starts, name_ends, scopes, trait_starts, trait_ends, starts, ends, sig_ends, doc_starts, doc_ends,
     start_lines, start_cols, end_lines, end_cols) = def_rows.T.tolist() if len(def_rows) else [[]] * DEF_COLUMNS
    names = _slices(source, name_starts, name_ends)
    definitions = sorted(map(
        Definition, [KINDS[k] for k in kinds], names, [names[i] if i >= 0 else "" for i in scopes],
        _slices(source, trait_starts, trait_ends), zip(start_lines, start_cols), zip(end_lines, end_cols), starts,
        ends, map(_signature, repeat(source), starts, sig_ends),
        [_doc(source[a:b]) if a >= 0 else "" for a, b in zip(doc_starts, doc_ends)]), key=lambda d: d.start_byte)
    kinds, starts, ends, lines, columns = ref_rows.T.tolist() if len(ref_rows) else [[]] * REF_COLUMNS
    texts = _slices(source, starts, ends)
    imports = [(text, line) for text, kind, line in zip(texts, kinds, lines) if kind == IMPORT]
    references = [Reference(text, REF_KINDS[kind], line, column)
                  for text, kind, line, column in zip(texts, kinds, lines, columns) if kind != IMPORT]
    return FileSymbols(definitions, imports, references)
