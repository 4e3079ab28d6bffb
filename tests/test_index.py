"""The repository index: extraction (tree-sitter; scan.c in test_scan.py), the walk, updates, concurrency, damage."""
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from assistant.index.indexer import index_file, index_workspace
from assistant.index.parse import parse_source
from assistant.index.store import SECONDARY_INDEXES, bulk_pending, connect, find, members, related_files, search
from assistant.index.workspace import module_path, rust_files

ROOT = Path(__file__).resolve().parent.parent
KVSTORE = ROOT / "data" / "workspace"

SOURCE = b'''use std::fmt::{self, Display};

/// A point.
/// In two dimensions.
#[derive(Debug)]
pub struct Point { pub x: i32, y: i32 }

pub enum Shape { Circle(Point), Square }

impl Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}", self.x) }
}

impl Point {
    pub const ORIGIN: Point = Point { x: 0, y: 0 };
    /// Distance to the origin.
    pub fn norm(&self) -> f64 { helper(self.x) }
}

mod inner { pub trait Area { fn area(&self) -> f64; } }
macro_rules! twice { ($e:expr) => { $e * 2 } }
type Pair = (Point, Point);
static COUNT: u32 = 0;
fn helper(v: i32) -> f64 { v as f64 }
'''


def test_definitions_with_scope_signature_and_doc():
    symbols = parse_source(SOURCE)
    by_name = {(d.kind, d.name): d for d in symbols.definitions}
    assert {("struct", "Point"), ("enum", "Shape"), ("variant", "Circle"), ("field", "x"), ("impl", "Point"),
            ("fn", "fmt"), ("fn", "norm"), ("const", "ORIGIN"), ("mod", "inner"), ("trait", "Area"), ("fn", "area"),
            ("macro", "twice"), ("type", "Pair"), ("static", "COUNT"), ("fn", "helper")} <= set(by_name)
    assert by_name[("struct", "Point")].doc == "A point.\nIn two dimensions."
    assert by_name[("fn", "norm")].doc == "Distance to the origin."
    assert by_name[("fn", "norm")].scope == "Point" and by_name[("fn", "norm")].signature == "pub fn norm(&self) -> f64"
    assert by_name[("fn", "fmt")].scope == "Point"
    assert by_name[("fn", "area")].scope == "Area"
    impls = [d for d in symbols.definitions if d.kind == "impl"]
    assert {(d.name, d.trait) for d in impls} == {("Point", "Display"), ("Point", "")}
    assert by_name[("struct", "Point")].start == (5, 0)
    assert ("std::fmt::{self, Display}", 0) in symbols.imports
    refs = {(r.name, r.kind) for r in symbols.references}
    assert ("helper", "call") in refs and ("write", "call") in refs and ("Formatter", "type") in refs
    sites = symbols.reference_sites()
    assert not any(name == "Point" and line == 5 for name, _, line, _ in sites)  # a definition is no reference


def test_broken_code_is_indexed_as_far_as_it_parses():
    symbols = parse_source(b"fn ok() {}\nfn broken( {\n struct Later;\n")
    assert "ok" in {d.name for d in symbols.definitions}


def test_the_walk_honours_gitignore_skips_target_and_stays_inside(tmp_path):
    root = tmp_path / "ws"
    (root / "src" / "gen").mkdir(parents=True)
    (root / "target" / "debug").mkdir(parents=True)
    (root / ".gitignore").write_text("src/gen/\n*.bak.rs\n")
    for rel in ("src/lib.rs", "src/gen/out.rs", "src/old.bak.rs", "target/debug/build.rs", "src/a.rs"):
        (root / rel).write_text("fn f() {}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.rs").write_text("fn secret() {}\n")
    (root / "src" / "escape.rs").symlink_to(outside / "secret.rs")
    (root / "src" / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "src" / "alias.rs").symlink_to(root / "src" / "a.rs")
    assert sorted(p.as_posix() for p in rust_files(root)) == ["src/a.rs", "src/alias.rs", "src/lib.rs"]


def test_module_paths():
    assert module_path(Path("src/lib.rs")) == "crate"
    assert module_path(Path("src/a/mod.rs")) == "crate::a"
    assert module_path(Path("crates/x/src/a/b.rs")) == "crate::a::b"


def test_incremental_update_by_mtime_and_hash(tmp_path):
    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    (root / "src").mkdir(parents=True)
    for i in range(5):
        (root / "src" / f"m{i}.rs").write_text(f"pub fn f{i}() -> u32 {{ {i} }}\n")
    first = index_workspace(root, db, workers=1, on_message=lambda m: None)
    assert (first.files, first.parsed, first.definitions) == (5, 5, 5)
    (root / "src" / "m1.rs").write_text("pub fn renamed() -> u32 { 1 }\npub struct Extra;\n")
    os.utime(root / "src" / "m2.rs", ns=(1, 1))  # touched, same content: hashed, not parsed
    (root / "src" / "m4.rs").unlink()
    second = index_workspace(root, db, workers=1, on_message=lambda m: None)
    assert (second.files, second.parsed, second.unchanged, second.removed) == (4, 1, 3, 1)
    conn = connect(db)
    assert find(conn, "f1") == [] and [s.path for s in find(conn, "renamed")] == ["src/m1.rs"]
    assert find(conn, "f4") == [] and search(conn, "f1") == [] and search(conn, "f4") == []
    conn.close()
    (root / "src" / "m0.rs").write_text("pub fn zero_again() {}\n")
    assert index_file(root, db, "src/m0.rs")
    conn = connect(db)
    assert [s.name for s in search(conn, "again")] == ["zero_again"] and search(conn, "f0") == []
    conn.execute("INSERT INTO symbol_search (symbol_search, rank) VALUES ('integrity-check', 1)")  # vs symbols
    conn.close()


def test_queries_on_the_bundled_workspace(tmp_path):
    db = tmp_path / "index.sqlite"
    summary = index_workspace(KVSTORE, db, workers=1, on_message=lambda m: None)
    assert summary.files == 4 and summary.definitions > 20
    conn = connect(db)
    assert {s.name for s in members(conn, "Store")} >= {"new", "get", "set", "delete", "len"}
    assert [s.path for s in search(conn, "parse command")][0] == "src/command.rs"
    assert related_files(conn, "src/lib.rs")[0][0] in ("src/store.rs", "src/command.rs")
    conn.close()


def _many_files(root: Path, n: int) -> None:
    (root / "src").mkdir(parents=True)
    for i in range(n):
        body = "".join(f"pub fn f{i}_{j}(x: u32) -> u32 {{ x + {j} }}\n" for j in range(20))
        (root / "src" / f"m{i}.rs").write_text(body)


def test_readers_see_whole_files_while_the_indexer_writes(tmp_path):
    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    _many_files(root, 600)
    connect(db).close()
    problems, stop = [], threading.Event()

    def read() -> None:
        conn = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            # every committed file has all 20 of its functions: a reader never sees half a file
            partial = conn.execute("SELECT COUNT(*) FROM files f WHERE (SELECT COUNT(*) FROM symbols s "
                                   "WHERE s.file_id = f.id) != 20").fetchone()[0]
            if partial:
                problems.append(partial)
        conn.close()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        summary = index_workspace(root, db, workers=2, on_message=lambda m: None)
    finally:
        stop.set()
        reader.join()
    assert summary.parsed == 600 and not problems


def test_a_corrupt_index_is_moved_aside_and_rebuilt_with_a_message(tmp_path):
    db = tmp_path / "index.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    messages = []
    summary = index_workspace(KVSTORE, db, workers=1, on_message=messages.append)
    assert summary.parsed == 4 and "rebuilding" in messages[0]
    conn = connect(db)
    assert find(conn, "Store")
    conn.close()
    [aside] = tmp_path.glob("index.sqlite.unusable-*")          # moved, never deleted
    assert aside.read_bytes() == b"this is not a database" * 100


def test_a_file_named_with_db_that_is_not_an_index_is_left_as_it_is(tmp_path, rustle):
    notes = tmp_path / "notes.sqlite"
    conn = sqlite3.connect(notes)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('buy milk')")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    for path in (notes, text):
        before = path.read_bytes()
        for command in (("index", str(KVSTORE)), ("query", str(KVSTORE), "def Store")):
            proc = rustle(*command, "--db", str(path), check=False)
            assert proc.returncode == 2 and "leaves it as it is" in proc.stdout + proc.stderr, command
            assert path.read_bytes() == before and not list(tmp_path.glob("*.unusable-*"))


def test_damaged_pages_in_an_unchanged_workspace_are_found_by_the_quick_check(tmp_path):
    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    _many_files(root, 300)
    index_workspace(root, db, workers=1, on_message=lambda m: None)
    data = bytearray(db.read_bytes())
    data[-16384:-8192] = b"\xff" * 8192              # two interior pages near the end: the schema still reads
    db.write_bytes(bytes(data))
    messages = []
    summary = index_workspace(root, db, workers=1, on_message=messages.append)
    assert any("moved to" in m for m in messages) and summary.parsed == 300 and summary.unchanged == 0
    conn = connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_killed_indexer_leaves_a_usable_index(tmp_path):
    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    _many_files(root, 3000)
    exe = Path(sys.executable).parent / "rustle"
    proc = subprocess.Popen([str(exe), "index", str(root), "--db", str(db), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for a first committed batch, then kill mid-run
        time.sleep(0.2)
        try:
            conn = sqlite3.connect(db, timeout=5)
            done = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            conn.close()
        except sqlite3.OperationalError:
            continue
        if done > 0:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conn = connect(db)
    partial = conn.execute("SELECT COUNT(*) FROM files f WHERE (SELECT COUNT(*) FROM symbols s "
                           "WHERE s.file_id = f.id) != 20").fetchone()[0]
    done = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    first = conn.execute("SELECT path FROM files ORDER BY id LIMIT 1").fetchone()[0]
    conn.close()
    assert partial == 0 and 0 < done < 3000
    summary = index_workspace(root, db, workers=2, on_message=lambda m: None)
    assert summary.files == 3000 and summary.parsed == 3000 - done
    # the killed run was a bulk fill (no secondary indexes, no full-text rows yet): the next run finished it
    conn = connect(db)
    indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    name = f"f{Path(first).stem[1:]}_3"
    assert set(SECONDARY_INDEXES) <= indexes and not bulk_pending(conn)
    assert [s.name for s in search(conn, name)] == [name]
    conn.execute("INSERT INTO symbol_search (symbol_search, rank) VALUES ('integrity-check', 1)")
    conn.close()


def test_a_bulk_fill_merges_its_workers_databases_and_clears_a_killed_fills(tmp_path):
    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    _many_files(root, 300)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"index.sqlite.parts-{dead.pid}-x"           # a fill killed before it merged its parts
    stale.mkdir()
    (stale / "1.sqlite").write_bytes(b"left behind")
    summary = index_workspace(root, db, workers=2, on_message=lambda m: None)
    assert summary.parsed == 300 and summary.definitions == 300 * 20
    assert not stale.exists() and not list(tmp_path.glob("index.sqlite.parts-*"))
    conn = connect(db)
    assert conn.execute("SELECT COUNT(DISTINCT file_id), COUNT(*) FROM symbols").fetchone() == (300, 300 * 20)
    assert [s.path for s in find(conn, "f7_3")] == ["src/m7.rs"] and search(conn, "f7_3")[0].name == "f7_3"
    assert len(related_files(conn, "src/m7.rs")) == 0 and not bulk_pending(conn)
    conn.execute("INSERT INTO symbol_search (symbol_search, rank) VALUES ('integrity-check', 1)")
    conn.close()


def test_a_damaged_page_is_found_and_rebuilt(tmp_path):
    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    _many_files(root, 300)
    index_workspace(root, db, workers=1, on_message=lambda m: None)
    data = bytearray(db.read_bytes())
    data[8192:40960] = b"\xff" * (40960 - 8192)   # overwrite pages after the header and schema
    db.write_bytes(bytes(data))
    for f in list(root.glob("src/m1*.rs")):
        f.write_text(f.read_text() + "pub fn more() {}\n")
    messages = []
    summary = index_workspace(root, db, workers=1, on_message=messages.append)
    assert summary.files == 300 and any("rebuild" in m for m in messages)
    conn = connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_hostile_repository_cannot_hang_or_exhaust_the_indexer(tmp_path):
    from assistant.index.indexer import MAX_SOURCE_BYTES

    root, db = tmp_path / "ws", tmp_path / "index.sqlite"
    shutil.copytree(KVSTORE, root)
    for ignore in (root / ".gitignore", root / "src" / ".gitignore"):
        ignore.unlink(missing_ok=True)
    (root / ".gitignore").symlink_to("/dev/zero")                 # read until memory runs out, before
    os.mkfifo(root / "src" / ".gitignore")                        # hung the walk, before
    outside = tmp_path / "elsewhere.rs"
    outside.write_text("pub fn elsewhere() {}\n")
    (root / "src" / "link.rs").symlink_to(outside)                # a link out of the workspace
    (root / "src" / "huge.rs").write_text("pub fn f() {}\n" * (MAX_SOURCE_BYTES // 14 + 1))
    started = time.monotonic()
    summary = index_workspace(root, db, workers=1, on_message=lambda m: None)
    assert time.monotonic() - started < 60 and summary.definitions > 0
    conn = connect(db)
    assert find(conn, "Store") and not find(conn, "elsewhere")
    assert not conn.execute("SELECT COUNT(*) FROM symbols s JOIN files f ON f.id = s.file_id "
                            "WHERE f.path = 'src/huge.rs'").fetchone()[0]
    conn.close()
