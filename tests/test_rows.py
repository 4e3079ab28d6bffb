"""rows.c: a bulk fill's rows written by C, held to what store.write_file writes from scan.py's FileSymbols, in real
SQLite files."""
import sqlite3
from pathlib import Path

import pytest

from assistant.index import bulk, rows, scan, store
from assistant.index.indexer import index_workspace
from assistant.index.workspace import module_path

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "tests" / "fixtures" / "tricky.rs", *sorted((ROOT / "tests" / "fixtures" / "shop").rglob("*.rs")),
         *sorted((ROOT / "data" / "workspace").rglob("*.rs")), ROOT / "data" / "sample.rs"]
# str.split() and str.strip() treat these as whitespace too; signatures are cut at 240 characters, not bytes
UNICODE = ("// /// in a plain comment\n//// not a doc\n/// Ünïcode\u00a0doc\u2003 \n///\n/** block\u3000*/\n"
           "pub fn f<T>(x:\u2002T,\u00a0y: u8, " + ", ".join(f"ä{i}: u8" for i in range(60)) + ") -> T { g(x) }\n"
           "struct S { a: u8 }\n/**/ fn h() {}\n").encode()
DUMPS = {
    "symbols": "SELECT f.path, s.kind, s.name, s.scope, s.trait, s.start_line, s.start_col, s.end_line, s.end_col, "
               "s.start_byte, s.end_byte, s.signature, s.doc FROM symbols s JOIN files f ON f.id = s.file_id",
    "imports": "SELECT f.path, i.path, i.line FROM imports i JOIN files f ON f.id = i.file_id",
    "refs": "SELECT f.path, r.name, r.kind, r.places FROM refs r JOIN files f ON f.id = r.file_id",
    "files": "SELECT path, module, mtime_ns, size, hash FROM files",
}

pytestmark = pytest.mark.skipif(not rows.available(), reason="no compiled scan: a bulk fill writes through Python")


def _dump(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(db)
    try:
        return {table: sorted(conn.execute(sql)) for table, sql in DUMPS.items()}
    finally:
        conn.close()


def _write_both(tmp_path: Path, sources: dict[str, bytes]) -> tuple[Path, Path, list[str]]:
    """The same files into two parts: by rows.c, and by store.write_file; and the files rows.c left."""
    by_c, by_python = tmp_path / "c.sqlite", tmp_path / "python.sqlite"
    bulk.part(by_c).close()
    writer, left = rows.PartWriter(by_c), []
    for name, source in sources.items():
        if writer.write(name, module_path(Path(name)), 7, len(source), "hash", source) is None:
            left.append(name)
    writer.close()
    db, next_id = bulk.part(by_python), 1
    store.begin(db)
    for name, source in sources.items():
        if name not in left:
            next_id = store.write_file(db, name, module_path(Path(name)), 7, len(source), "hash",
                                       scan.scan_source(source), next_id, search=False)
    store.commit(db)
    db.close()
    return by_c, by_python, left


def test_c_writes_the_rows_python_writes(tmp_path):
    sources = {path.name: path.read_bytes() for path in FILES} | {"src/unicode.rs": UNICODE}
    by_c, by_python, left = _write_both(tmp_path, sources)
    c, python = _dump(by_c), _dump(by_python)
    assert not left and c == python
    assert len(c["symbols"]) > 50 and c["imports"] and c["refs"]
    unicode = {row[2]: row for row in c["symbols"] if row[0] == "src/unicode.rs"}
    assert unicode["f"][12] == "Ünïcode\u00a0doc\n\nblock" and len(unicode["f"][11]) == 240


def test_a_file_rows_c_cannot_match_is_left_to_python_and_still_indexed(tmp_path):
    latin1 = b"/// caf\xe9\npub fn latin() {}\n"                       # not UTF-8: Python reads U+FFFD there
    by_c, _, left = _write_both(tmp_path, {"src/latin1.rs": latin1})
    assert left == ["src/latin1.rs"] and _dump(by_c)["files"] == []
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    for i in range(300):                                 # enough for a bulk fill in worker processes
        (root / "src" / f"m{i}.rs").write_text(f"pub fn f{i}(x: u32) -> u32 {{ g{i}(x) }}\n")
    (root / "src" / "latin1.rs").write_bytes(latin1)
    (root / "src" / "unicode.rs").write_bytes(UNICODE)
    in_workers, one_process = tmp_path / "workers.sqlite", tmp_path / "one.sqlite"
    assert index_workspace(root, in_workers, workers=2, on_message=lambda m: None).parsed == 302
    assert index_workspace(root, one_process, workers=1, on_message=lambda m: None).parsed == 302
    workers, python = _dump(in_workers), _dump(one_process)
    assert workers == python and ("src/latin1.rs", "fn", "latin") in {row[:3] for row in workers["symbols"]}
