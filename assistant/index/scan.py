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
from pathlib import Path

import numpy as np

from kernels.clib import compiled

from .parse import SIGNATURE_CHARS, Definition, FileSymbols, References, doc_line

KINDS = ("fn", "struct", "enum", "union", "trait", "impl", "const", "static", "type", "macro", "mod", "variant",
         "field")                                   # scan.c's K_* in order
REF_KINDS = ("call", "type")                        # R_CALL, R_TYPE
IMPORT = 2                                          # R_IMPORT: a `use` declaration's argument
DEF_COLUMNS, REF_COLUMNS = 15, 5                    # int32 fields of scan.h's Def and Ref
REF_PLACE_BYTES = 24                                # refs.c writes " line:col" in at most this
SIGNATURE_WINDOW = 8 * SIGNATURE_CHARS              # bytes read for a signature: whitespace collapses into it
DOC_COMMENT = re.compile(rb"///[^\n]*|/\*\*.*?\*/", re.DOTALL)


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    here = Path(__file__).parent
    lib = compiled("scan", (here / "scan.c", here / "refs.c", here / "rows.c"), (here / "lex.h", here / "scan.h"))
    if lib is not None:
        p, i, text, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int64
        lib.rust_scan.argtypes, lib.rust_scan.restype = [text, i, p, i, p, i, p], i
        lib.group_refs.argtypes, lib.group_refs.restype = [text, p, i, p, p], i
        lib.rows_open.argtypes, lib.rows_open.restype = [p, text, i, i], p                    # rows.py's
        lib.rows_write.argtypes = [p, text, text, i64, i64, text, ctypes.c_double, text, i, p]
        lib.rows_write.restype = i
        lib.rows_close.argtypes, lib.rows_close.restype = [p, i], None
    return lib


def available() -> bool:
    return library() is not None


def _doc(comments: bytes) -> str:
    """The doc comments right above a definition: scan.c finds where they are, parse.doc_line reads each."""
    lines = (doc_line(match.group().decode("utf-8", "replace")) for match in DOC_COMMENT.finditer(comments))
    return "\n".join(line for line in lines if line is not None)


def _run(source: bytes) -> tuple[np.ndarray, np.ndarray]:
    lib = library()
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


class _Text:
    """A file's bytes, and for an ASCII file (most) its str too: then byte offsets index the str and slicing it
    decodes nothing."""

    def __init__(self, source: bytes):
        self.source = source
        self.ascii = source.decode("ascii") if source.isascii() else None

    def slices(self, starts: list[int], ends: list[int]) -> list[str]:
        if self.ascii is not None:
            text = self.ascii
            return [text[a:b] for a, b in zip(starts, ends)]
        return [self.source[a:b].decode("utf-8", "replace") for a, b in zip(starts, ends)]


def scan_source(source: bytes) -> FileSymbols:
    """A file's definitions, imports and references, as parse.parse_source returns them."""
    def_rows, ref_rows = _run(source)
    def_rows[:, 8] = np.minimum(def_rows[:, 8], def_rows[:, 6] + SIGNATURE_WINDOW)   # the signatures' ends
    (kinds, name_starts, name_ends, scopes, trait_starts, trait_ends, starts, ends, sig_ends, doc_starts, doc_ends,
     start_lines, start_cols, end_lines, end_cols) = def_rows.T.tolist() if len(def_rows) else [[]] * DEF_COLUMNS
    text = _Text(source)
    names = text.slices(name_starts, name_ends)
    definitions = list(map(Definition._make, zip(     # _make: tuple.__new__, without a Python call per row
        [KINDS[k] for k in kinds], names, [names[i] if i >= 0 else "" for i in scopes],
        text.slices(trait_starts, trait_ends), zip(start_lines, start_cols), zip(end_lines, end_cols), starts, ends,
        [" ".join(signature.split())[:SIGNATURE_CHARS] for signature in text.slices(starts, sig_ends)],
        [_doc(source[a:b]) if a >= 0 else "" for a, b in zip(doc_starts, doc_ends)])))
    if (np.diff(def_rows[:, 6]) < 0).any():     # the scan adds definitions in source order: a guard, not a step
        definitions.sort(key=lambda d: d.start_byte)
    is_import = ref_rows[:, 0] == IMPORT
    _, starts, ends, lines, _ = ref_rows[is_import].T.tolist() if is_import.any() else [[]] * REF_COLUMNS
    imports = list(zip(text.slices(starts, ends), lines))
    return FileSymbols(definitions, imports, _references(text, np.ascontiguousarray(ref_rows[~is_import])))


def _references(text: _Text, rows: np.ndarray) -> list[References]:
    """Grouped by name and kind in C (refs.c): Python runs once per group, not once per place."""
    buffer = np.empty(len(rows) * REF_PLACE_BYTES, np.uint8)
    groups = np.empty((len(rows), 3), np.int32)
    count = library().group_refs(text.source, rows.ctypes.data, len(rows), buffer.ctypes.data, groups.ctypes.data)
    if count < 0:
        raise MemoryError(f"grouping {len(rows):,} references")
    if count == 0:
        return []
    firsts, text_starts, text_ends = groups[:count].T.tolist()
    kinds, starts, ends, _, _ = rows[firsts].T.tolist()
    places = buffer[:text_ends[-1]].tobytes().decode("ascii")
    return list(map(References._make, zip(text.slices(starts, ends), [REF_KINDS[k] for k in kinds],
                                          [places[a:b] for a, b in zip(text_starts, text_ends)])))
