"""The completion engine on a tiny random model with the shipped tokenizer: the repository in its prompts, state
reuse, the background prefill and the saved states, streaming and cancellation, the command line, the workspace's
reads (the pieces that need no model: test_prompt_shape.py)."""
import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from assistant.engine.engine import Change, Engine, EngineConfig, Request
from assistant.engine.persist import state_file
from assistant.engine.prompt import PromptConfig

from conftest import save_tiny_model

ROOT = Path(__file__).resolve().parent.parent
KVSTORE = ROOT / "data" / "workspace"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    return root


def _engine(model_dir: Path, **changes) -> Engine:
    return Engine(model_dir, EngineConfig(**changes))


# ----- engine -----------------------------------------------------------------------------------------------------
def _request(root: Path, path: str = "src/main.rs", marker: str = "let stdin = ") -> Request:
    text = (root / path).read_text()
    offset = text.index(marker) + len(marker)
    return Request(root, path, text, offset)


def test_warm_state_gives_the_same_suggestion_as_a_cold_run(tiny_model_dir, workspace):
    config = dict(max_new_tokens=24, copy_draft=False, copy_mix=False, max_ms=60_000)
    warm = _engine(tiny_model_dir, **config)
    other = _request(workspace, "src/store.rs", "self.entries.")
    first = warm.complete_sync(other)
    again = warm.complete_sync(other)
    assert again.text == first.text and again.reused_tokens > 0.9 * again.prompt_tokens
    request = _request(workspace)
    warm_result = warm.complete_sync(request)
    cold_result = _engine(tiny_model_dir, **config).complete_sync(request)
    assert warm_result.reused_tokens > 0 and cold_result.reused_tokens == 0
    assert warm_result.text == cold_result.text and warm_result.generated_tokens == cold_result.generated_tokens


def test_copy_drafts_take_fewer_forward_steps_for_the_same_text(tiny_model_dir, workspace):
    request = _request(workspace, "src/lib.rs", "Ok(Command::Len) => store.")
    plain = _engine(tiny_model_dir, copy_draft=False, copy_mix=False, max_new_tokens=16).complete_sync(request)
    drafted = _engine(tiny_model_dir, copy_draft=True, copy_mix=False, max_new_tokens=16).complete_sync(request)
    assert drafted.text == plain.text                  # verification keeps greedy decoding exact
    assert drafted.forward_steps <= plain.forward_steps


def test_the_saved_copy_of_the_edited_document_has_no_say_at_its_cursor(tiny_model_dir, workspace):
    # Auto-save mid-line: the file on disk ends the line at the cursor, as the buffer does. Its saved copy
    # would vote for that newline (the shipped model suggested nothing): neither the repository part nor the
    # copy table holds it, so the suggestion is the same whatever the file on disk says.
    main = workspace / "src" / "main.rs"
    text = main.read_text()
    offset = text.index("let mut store = ") + len("let mut store = ")
    buffer = text[:offset] + text[text.index("\n", offset):]
    request = Request(workspace, "src/main.rs", buffer, offset)
    engine = _engine(tiny_model_dir, max_new_tokens=8)
    prompt, paths = engine.prompt(request)
    assert "src/main.rs" not in paths and paths
    header = engine.vocab.file_header("src/main.rs")
    windows = [prompt.ids[i:i + len(header)] for i in range(prompt.local_start)]
    assert header not in windows and prompt.ids[prompt.local_start:][:len(header)] == header   # once: the buffer
    as_typed = engine.complete_sync(request).text
    main.write_text(buffer)
    engine.workspace(workspace).apply_change(Change("src/main.rs", "saved"))
    assert engine.complete_sync(request).text == as_typed


def test_repo_context_puts_the_workspace_before_the_buffer(tiny_model_dir, workspace):
    engine = _engine(tiny_model_dir, max_new_tokens=4)
    request = _request(workspace)
    prompt, files = engine.prompt(request)
    assert sorted(files) == ["src/command.rs", "src/lib.rs", "src/store.rs"]    # every file but the document's
    decoded = engine.vocab.tok.decode(prompt.ids, skip_special_tokens=False)
    assert decoded.index("<|file_sep|>src/store.rs") < decoded.index("<|file_sep|>src/main.rs\n")   # the buffer
    os.utime(workspace / "src" / "command.rs")       # just edited: it moves to the end of the repository part
    _, files = engine.prompt(request)
    assert files[-1] == "src/command.rs"


def test_background_prefill_serves_requests_without_waiting_for_the_repository(tiny_model_dir, workspace):
    config = dict(max_new_tokens=6, copy_draft=False, copy_mix=False, max_ms=60_000)
    engine = _engine(tiny_model_dir, background=True, **config)
    request = _request(workspace)
    local = engine.complete_sync(request)            # nothing prefilled yet: local context, no waiting
    local_prompt, _ = _engine(tiny_model_dir, **config, prompt=PromptConfig(context="local")).prompt(request)
    assert local.prompt_tokens == len(local_prompt.ids)
    assert engine.prefill.wait(timeout=300)
    full = engine.complete_sync(request)             # the repository part is in the state tree now
    foreground = _engine(tiny_model_dir, **config).complete_sync(request)
    assert full.prompt_tokens == foreground.prompt_tokens
    assert full.reused_tokens >= full.prompt_tokens - local.prompt_tokens
    assert full.text == foreground.text
    store = workspace / "src" / "store.rs"           # a save: served with the stale part until the new one is in
    store.write_text(store.read_text() + "\n// saved\n")
    stale = engine.complete_sync(request)
    assert stale.prompt_tokens == full.prompt_tokens and stale.reused_tokens >= full.reused_tokens
    assert engine.prefill.wait(timeout=300)
    fresh = engine.complete_sync(request)
    assert fresh.prompt_tokens > full.prompt_tokens
    assert fresh.reused_tokens >= fresh.prompt_tokens - local.prompt_tokens


def test_the_repository_state_persists_for_the_same_model_and_files_only(tiny_model_dir, workspace, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr("assistant.engine.persist.KEPT", 1)   # snapshots saved at the first file and the end only
    lines = PromptConfig(layout="prefix", prefix_tokens=8192, window_lines=256)   # the document's line snapshots
    config = dict(max_new_tokens=6, copy_draft=False, copy_mix=False, max_ms=60_000, background=True, persist=True,
                  prompt=lines)
    request = _request(workspace)

    def reopen(model_dir: Path) -> tuple[Engine, str]:
        engine = _engine(model_dir, **config)
        engine.prefill_repository(workspace, request.path)   # the server, after indexing, for the open document
        assert engine.prefill.wait(timeout=300)
        return engine, engine.complete_sync(request).text

    first, text = reopen(tiny_model_dir)
    assert first.prefill.fed > 0 and state_file(workspace).is_file()
    again, again_text = reopen(tiny_model_dir)          # nothing changed: of the repository nothing is prefilled,
    document = len(first.vocab.file_header(request.path) + first.vocab.encode(request.text))   # of the document
    assert 0 < again.prefill.fed < document and again_text == text   # the lines between its saved snapshots
    lib = workspace / "src" / "lib.rs"                  # a saved file: only the part from it on is prefilled
    lib.write_text(lib.read_text() + "\n// saved\n")
    changed, _ = reopen(tiny_model_dir)
    assert 0 < changed.prefill.fed < first.prefill.fed
    other = save_tiny_model(tmp_path / "other", ("gdn", "swa", "full", "lql"))   # another model: not read
    fresh, _ = reopen(other)
    assert fresh.prefill.fed >= first.prefill.fed


def test_a_cursors_own_part_is_not_saved_and_a_reopen_feeds_none_of_the_files(tiny_model_dir, workspace, monkeypatch):
    # The buffer outside a cursor's window ends the repository part (prompt.py); on disk only the files' state is
    # kept, so a reopen resumes at their end, whichever cursor was served last.
    monkeypatch.setattr("assistant.engine.persist.KEPT", 1)   # snapshots saved at the first file and the end only
    window = PromptConfig(prefix_tokens=24, suffix_tokens=24, window_lines=2)
    config = dict(max_new_tokens=2, copy_draft=False, copy_mix=False, background=True, persist=True, prompt=window)
    request = _request(workspace, "src/command.rs", "Ok(Command::Len)")
    first = _engine(tiny_model_dir, **config)
    first.prefill_repository(workspace, request.path)
    assert first.prefill.wait(timeout=300)
    saved = state_file(workspace).stat().st_mtime_ns
    first.complete_sync(request)
    assert first.prefill.wait(timeout=300)
    with first.lock:
        prompt, _ = first.prompt(request)
    assert prompt.outside_start < prompt.local_start           # the cursor's own part is in the state tree…
    assert state_file(workspace).stat().st_mtime_ns == saved    # …and not on disk
    again = _engine(tiny_model_dir, **config)
    again.prefill_repository(workspace, request.path)
    assert again.prefill.wait(timeout=300) and again.prefill.fed == 0


def test_bad_positions_are_clear_errors(tiny_model_dir, workspace):
    engine = _engine(tiny_model_dir)
    request = _request(workspace)
    with pytest.raises(ValueError, match="outside the buffer"):
        engine.complete_sync(Request(request.root, request.path, request.text, len(request.text) + 5))


def test_streaming_cancellation_and_typing_along_the_suggestion(tiny_model_dir, workspace):
    engine = _engine(tiny_model_dir, max_new_tokens=40, copy_draft=False, copy_mix=False, max_ms=60_000)
    request = _request(workspace)
    full = engine.complete_sync(request).text
    assert len(full) >= 2

    async def scenario():
        parts = [text async for text in engine.complete(request)]
        assert parts[-1] == full
        # the user types the first two suggested characters: served from a running generation, no restart
        cancelled = threading.Event()
        stream = engine.complete(request, cancelled)
        await stream.__anext__()
        first = engine.inflight
        typed = Request(request.root, request.path, request.text[:request.offset] + full[:2]
                        + request.text[request.offset:], request.offset + 2)
        rest = [text async for text in engine.complete(typed)]
        assert engine.inflight is first and rest[-1] == full[2:]
        await stream.aclose()
        # a request elsewhere cancels the one in flight
        slow = engine.complete(request)
        await slow.__anext__()
        running = engine.inflight
        elsewhere = _request(workspace, "src/store.rs", "self.entries.")
        [text async for text in engine.complete(elsewhere)]
        assert running.cancelled.is_set()
        await slow.aclose()

    asyncio.run(scenario())


def test_eval_lines_and_complete_on_the_command_line(rustle, tiny_model_dir, workspace, tmp_path):
    import json

    out = json.loads(rustle("complete", f"{workspace}/src/main.rs:9:17", "--model", str(tiny_model_dir),
                            "--json").stdout)
    assert set(out) >= {"text", "ms", "stopped", "prompt_tokens"} and out["repository_computed"] > 0
    again = json.loads(rustle("complete", f"{workspace}/src/main.rs:9:17", "--model", str(tiny_model_dir),
                              "--json").stdout)   # the repository part's state, saved by the first run
    assert again["repository_computed"] == 0 and again["text"] == out["text"]
    bad = rustle("complete", f"{workspace}/src/main.rs:999:1", "--model", str(tiny_model_dir), check=False)
    assert bad.returncode == 2 and "past the end" in bad.stdout
    bad = rustle("complete", "nowhere.rs:x:1", check=False)
    assert bad.returncode == 2 and "FILE:LINE:COL" in bad.stdout
    lines = (workspace / "src" / "store.rs").read_text().split("\n")
    n = next(i for i, line in enumerate(lines) if "self.entries.len()" in line)
    col = lines[n].index("self")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": "t1", "root": str(workspace), "path": "src/store.rs", "line": n,
                                 "character": col, "target": lines[n][col:], "kind": "line"}) + "\n")
    for context, saved, served in (("none", "before", []), ("repo", "before", []), ("repo", "cut", []),
                                   ("repo", "before", ["--served"]),
                                   ("repo", "before", ["--served", "--after-lines-above", "2"])):
        report = json.loads(rustle("eval", "lines", str(tasks), "--model", str(tiny_model_dir), "--json",
                                   "--context", context, "--saved", saved, *served).stdout)
        assert report["n"] == 1 and set(report["by_kind"]) == {"line"} and 0 <= report["edit_similarity"] <= 1
        assert report["saved"] == saved and report["served"] == bool(served) and report["mean_ms"] > 0
        assert report["after_lines_above"] == (2 if len(served) > 1 else 0)
    bad = rustle("eval", "lines", str(tasks), "--model", str(tiny_model_dir), "--after-lines-above", "1", check=False)
    assert bad.returncode == 2 and "--served" in bad.stdout
    bad = rustle("eval", "make-lines", "--corpus", str(tmp_path), "--out", str(tmp_path / "set.jsonl"), "--exclude",
                 str(tmp_path / "missing.jsonl"), check=False)
    assert bad.returncode == 2 and "--exclude" in bad.stdout and not (tmp_path / "set.jsonl").exists()


def test_a_buffer_outside_every_workspace_is_completed_alone(tiny_model_dir, workspace):
    """Request.root None: the prompt is the buffer's own prefix and suffix; nothing is indexed or read."""
    engine = _engine(tiny_model_dir, max_new_tokens=8, max_ms=60_000)
    text = (workspace / "src" / "main.rs").read_text()
    offset = text.index("let stdin = ") + len("let stdin = ")
    done = engine.complete_sync(Request(None, "main.rs", text, offset))
    assert done.generated_tokens > 0 and not engine.workspaces
    assert not (workspace.parent / "cache" / "rustle" / "index").exists()
    alone = engine.prompt(Request(None, "main.rs", text, offset))[0]
    assert alone.local_start == 0 and len(alone.ids) < len(engine.prompt(_request(workspace))[0].ids)


def test_the_kept_index_connection_sees_saves_and_a_rebuilt_index(tiny_model_dir, workspace):
    from assistant.index.store import find

    ws = _engine(tiny_model_dir).workspace(workspace)
    with ws.reading() as db:
        assert not find(db, "fresh_name")
    extra = workspace / "src" / "extra.rs"
    extra.write_text("pub fn fresh_name() {}\n")
    ws.apply_change(Change("src/extra.rs", "created"))           # written through another connection
    with ws.reading() as db:
        assert [s.path for s in find(db, "fresh_name")] == ["src/extra.rs"]
    extra.unlink()
    for suffix in ("", "-wal", "-shm"):                           # the file replaced, as a rebuild does
        Path(f"{ws.db_path}{suffix}").unlink(missing_ok=True)
    ws.index()
    with ws.reading() as db:
        assert not find(db, "fresh_name") and find(db, "Store")


def test_workspace_files_are_read_only_inside_the_root_and_under_the_size_cap(tiny_model_dir, workspace, tmp_path):
    from assistant.engine.workspace import MAX_FILE_BYTES

    secret = tmp_path / "secret.rs"
    secret.write_text("pub const SECRET: &str = \"outside\";\n")
    store_rs = workspace / "src" / "store.rs"
    ws = _engine(tiny_model_dir).workspace(workspace)
    assert ws.file("src/store.rs", {})[1]          # read (and cached) while it is a plain file
    store_rs.unlink()
    store_rs.symlink_to(secret)                   # what a pull can do to a workspace file
    (workspace / "src" / "big.rs").write_text("// x\n" * (MAX_FILE_BYTES // 5 + 1))
    assert ws.file("src/store.rs", {})[1] == [] and ws.file("src/big.rs", {})[1] == []
    assert ws.file("src/main.rs", {})[1]           # an ordinary file is read
