"""The index's lexical scanner (scan.c) against the tree-sitter parse it stands in for, on real files: how many
definitions agree in every field, the references' recall and precision, and each reader's speed."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ...index.indexer import MAX_SOURCE_BYTES
from ...index.parse import parse_source, parser
from ...index.scan import scan_source
from ...index.workspace import rust_files


@dataclass
class ScanBench:
    files: int
    source_bytes: int
    definitions: int               # tree-sitter's
    definitions_identical: float   # share of tree-sitter's definitions the scan returns field for field
    imports_identical: float       # share of files whose imports agree
    references_recall: float       # of tree-sitter's references, the share the scan finds
    references_precision: float    # of the scan's, the share tree-sitter finds
    scan_mb_per_s: float           # one core, Python rows included
    tree_sitter_mb_per_s: float


def run(root: Path, every: int = 10) -> ScanBench:
    sources = [source for i, rel in enumerate(rust_files(root)) if i % every == 0
               for source in [(root / rel).read_bytes()] if len(source) <= MAX_SOURCE_BYTES]
    ts_parser, ts_seconds, scan_seconds = parser(), 0.0, 0.0
    same = total = imports = found = scanned = both = 0
    for source in sources:
        started = time.perf_counter()
        reference = parse_source(source, ts_parser)
        ts_seconds += time.perf_counter() - started
        started = time.perf_counter()
        symbols = scan_source(source)
        scan_seconds += time.perf_counter() - started
        total += len(reference.definitions)
        same += len(set(reference.definitions) & set(symbols.definitions))
        imports += reference.imports == symbols.imports
        a, b = reference.reference_sites(), symbols.reference_sites()
        found, scanned, both = found + len(a), scanned + len(b), both + len(a & b)
    size = sum(map(len, sources))
    return ScanBench(len(sources), size, total, same / max(total, 1), imports / max(len(sources), 1),
                     both / max(found, 1), both / max(scanned, 1), size / 1e6 / scan_seconds,
                     size / 1e6 / ts_seconds)
