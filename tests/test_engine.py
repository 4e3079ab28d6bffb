"""The completion engine on a tiny random model with the shipped tokenizer: prompt layout, state reuse,
healing, the copy model, stop rules and post-processing, streaming and cancellation."""
import asyncio
import os
import shutil
import threading
from pathlib import Path
from dataclasses import replace

import pytest
import torch

from assistant.engine.copy import CopyConfig, CopyModel
from assistant.engine.engine import Change, Engine, EngineConfig, Request, with_context
from assistant.engine.healing import Healer, back_up
from assistant.engine.persist import state_file
from assistant.engine.prompt import PromptConfig, build_prompt
from assistant.engine.shape import cut, shape_at, tidy
from assistant.engine.tokens import Vocab, line_chunks
from tokenizer import load_tokenizer

from conftest import save_tiny_model

ROOT = Path(__file__).resolve().parent.parent
KVSTORE = ROOT / "data" / "workspace"


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(load_tokenizer())


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


# ----- tokens, healing, copy model --------------------------------------------------------------------------------
def test_line_chunks_encode_like_the_whole_text(vocab):
    for path in sorted(KVSTORE.rglob("*.rs")):
        text = path.read_text()
        assert "".join(line_chunks(text)) == text
        assert [i for chunk in vocab.encode_chunks(text) for i in chunk] == vocab.encode(text)
        assert vocab.decode_bytes(vocab.encode(text)) == text.encode()


def test_healing_allows_exactly_the_tokens_that_agree_with_the_removed_bytes(vocab):
    healer = Healer(vocab.token_bytes)
    prompt, healed = back_up(vocab.encode("    let x = fo"), vocab.token_bytes)
    assert healed and vocab.decode_bytes(prompt) + healed == b"    let x = fo"
    for pending in (healed, b" fo"):
        allowed = healer.allowed(pending)
        everything = [i for i, b in enumerate(vocab.token_bytes)
                      if b and (b.startswith(pending) or pending.startswith(b))]
        assert allowed and sorted(allowed) == sorted(everything)


def test_healing_after_an_indentation_writes_it_whole(vocab):
    healer = Healer(vocab.token_bytes)
    prompt, healed = back_up(vocab.encode("fn f() {\n    "), vocab.token_bytes)
    assert healed == b"\n    "
    allowed = {vocab.token_bytes[i] for i in healer.allowed(healed, whole=True)}
    assert {healed, b"\n    }", b"\n        "} <= allowed                  # the indent, a merge, a deeper indent
    assert b"\n" not in allowed and b"\n  " not in allowed                  # never a shallower run, then spaces
    assert all(b.startswith(healed) for b in allowed)
    deep = vocab.encode("fn f() {\n" + " " * 36)                             # a newline run, then 12 spaces
    prompt, healed = back_up(deep, vocab.token_bytes)
    assert healed == b" " * 12 and vocab.token_bytes[prompt[-1]].startswith(b"\n")
    allowed = {vocab.token_bytes[i] for i in healer.allowed(healed, whole=True)}
    assert {healed, healed + b"}"} <= allowed and b" " * 11 not in allowed
    prompt, healed = back_up(vocab.encode("    Foo      "), vocab.token_bytes)    # alignment inside a line…
    assert healed == b"      " and vocab.token_bytes[vocab.encode("    Foo      = 1")[-3]] == b"     "
    assert vocab.encode("     ")[0] in healer.allowed(healed)                     # …goes on as `     ` + ` =`


def test_greedy_choice_at_an_indentation_cannot_take_a_shallower_run(vocab):
    from assistant.engine.decode import choose

    healer, token = Healer(vocab.token_bytes), {b: i for i, b in enumerate(vocab.token_bytes)}
    logits = torch.zeros(len(vocab.token_bytes))
    logits[token[b"\n  "]], logits[token[b"\n    "]] = 5.0, 1.0       # the model would rather indent less
    assert choose(logits, [], b"\n    ", healer) == token[b"\n  "]
    assert choose(logits, [], b"\n    ", healer, indentation=True) == token[b"\n    "]


def test_copy_model_drafts_what_followed_and_forgets_on_truncate():
    copy = CopyModel(CopyConfig(n_min=3, draft_tokens=4))
    copy.extend([1, 2, 3, 4, 5, 6, 7, 8])
    assert copy.draft([9, 2, 3, 4]) == [5, 6, 7, 8]
    before = {k: list(v) for k, v in copy.table.items()}
    copy.extend([2, 3, 4, 99])
    assert copy.draft([2, 3, 4]) == [99]          # the most recent longest match wins
    copy.truncate(8)
    assert copy.table == before and copy.draft([2, 3, 4]) == [5, 6, 7, 8]
    probs = torch.full((100,), 0.01)
    mixed = copy.mix(probs, [1, 2, 3, 4])
    assert int(mixed.argmax()) == 5 and abs(float(mixed.sum()) - 1.0) < 1e-5


# ----- shape: stop rules and post-processing ----------------------------------------------------------------------
def test_multiline_only_in_an_empty_block_body():
    text = "fn f() {\n    \n}\n\nfn g() {\n    let a = 1;\n    \n}\n"
    assert shape_at(text, text.index("\n    \n") + 5).multiline
    assert not shape_at(text, text.rindex("    \n}\n") + 4).multiline         # g's body is not empty
    assert not shape_at(text, text.index("let a") + 4).multiline


def test_block_stops_at_an_unmatched_bracket_or_a_dedent():
    block = shape_at("fn f() {\n    \n}\n", 13)
    assert cut("let x = 1;\n    x + 1\n}\nfn other() {}", block) == ("let x = 1;\n    x + 1", True)
    assert cut("let x = vec![1,\n        2];\n    x\n", block)[1] is False
    assert cut("a();\nfn top_level() {}\n", block) == ("a();", True)
    line = shape_at("let x = \n", 8)
    assert cut("foo();\nbar();", line) == ("foo();", True)


def test_a_loop_stops_and_its_repeats_are_dropped():
    block = shape_at("fn f() {\n    \n}\n", 13)
    assert cut("let a = 1;\n    let s = [0; N];\n    let s = [0; N];\n    let", block) == \
        ("let a = 1;\n    let s = [0; N];", True)
    assert cut("a();\n    }\n    }\n", block)[0] == "a();"                # brackets close, no loop
    line = shape_at("use net::{\n", 9)
    assert cut("Incoming, TcpStream, TcpStream, TcpStream, TcpStream, TcpStream", line) == \
        ("Incoming, TcpStream, TcpStream", True)
    assert cut("f(name, name, name, name, name,", line) == ("f(name, name,", True)
    for table in ("[0, 0, 0, 0, 0, 0, 0, 0", "0xFF, 0xFF, 0xFF, 0xFF, 0xFF", 'b"aaaaaaaaaaaa', "a.b.c.d.e.f.g.h"):
        assert cut(table, line) == (table, False)                     # numbers and words repeat in real code


def test_tidy_drops_what_follows_the_cursor_and_closes_brackets():
    shape = shape_at("    call(a, )\n", 12)
    assert shape.line_suffix == ")"
    assert tidy("b)", shape) == "b"
    assert tidy("foo(b", shape) == "foo(b)"                   # its own bracket closed; the line's ) stays
    tabbed = "fn f() {\n\t\n}\nfn g() {\n\tx();\n}\n"
    block = shape_at(tabbed, tabbed.index("\t\n") + 1)
    assert block.tab_indent and tidy("a();\n    b();\n", block) == "a();\n\tb();"
    spaced = "fn f() {\n    \n}\n"
    assert tidy("x();\n}", shape_at(spaced, 13), "\n}\n") == "x();"


# ----- prompt -----------------------------------------------------------------------------------------------------
def test_prompt_layout_is_spm_after_the_repository(vocab):
    text = "fn main() {\n    let x = 1;\n    pri\n}\n"
    offset = text.index("pri") + 3
    context = [("src/a.rs", vocab.encode("pub fn a() {}\n")), ("src/b.rs", vocab.encode("pub fn b() {}\n"))]
    p = build_prompt(vocab, PromptConfig(context="repo", layout="spm"), "src/main.rs", text, offset,
                     shape_at(text, offset), context, "demo")
    decoded = vocab.tok.decode(p.ids, skip_special_tokens=False)
    assert decoded.startswith("<|repo_name|>demo\n<|file_sep|>src/a.rs\npub fn a() {}\n<|file_sep|>src/b.rs\n")
    local = decoded[decoded.index("<|file_sep|>src/main.rs"):]
    assert p.healed and local == ("<|file_sep|>src/main.rs\n<|fim_prefix|><|fim_suffix|>\n}\n<|fim_middle|>"
                                  + text[:offset - len(p.healed)])
    assert (vocab.decode_bytes(p.ids[p.local_start:]) + p.healed).endswith(b"    pri")
    assert p.boundaries == sorted(p.boundaries) and all(0 < b < len(p.ids) for b in p.boundaries)
    none = build_prompt(vocab, PromptConfig(context="none"), "src/main.rs", text, offset, shape_at(text, offset),
                        context, "demo")
    assert vocab.fim_suffix not in none.ids and vocab.repo_name not in none.ids


def test_psm_and_prefix_prompts_end_where_the_copy_model_continues(vocab):
    text = "fn main() {\n    let x = 1;\n    pri\n    done();\n}\n"
    offset = text.index("pri") + 3
    shape = shape_at(text, offset)
    psm = build_prompt(vocab, PromptConfig(context="local", layout="psm"), "src/main.rs", text, offset, shape, [], "d")
    assert psm.ids[-1] == vocab.fim_middle and not psm.healed
    prefix = build_prompt(vocab, PromptConfig(context="local", layout="prefix"), "src/main.rs", text, offset, shape,
                          [], "d")
    assert vocab.fim_suffix not in prefix.ids and prefix.healed                       # the model sees no suffix…
    for p in (psm, prefix):                                                           # …the copy model does
        copied = vocab.decode_bytes(p.copy_ids) + p.healed
        assert b"done();" in copied and copied.endswith(b"    pri")


def test_prompt_budgets_and_a_stable_prefix_start(vocab):
    text = "".join(f"let v{i} = {i};\n" for i in range(400))
    config = PromptConfig(context="local", layout="spm", prefix_tokens=300, suffix_tokens=50, window_lines=32,
                          anchor_lines=32)
    shape = shape_at(text, 0)
    p = build_prompt(vocab, config, "a.rs", text, len(text) // 2, shape, [], "r")
    suffix = p.ids[p.ids.index(vocab.fim_suffix) + 1:p.ids.index(vocab.fim_middle)]
    prefix = p.ids[p.ids.index(vocab.fim_middle) + 1:]
    assert len(suffix) <= 50 and 300 <= len(prefix) + 1 <= 300 + 32 * 8
    # typing on the cursor's line keeps every token before that line
    q = build_prompt(vocab, config, "a.rs", text[:len(text) // 2] + "x" + text[len(text) // 2:], len(text) // 2 + 1,
                     shape, [], "r")
    line_start = max(b for b in p.boundaries if b <= len(p.ids) - 1)
    assert q.ids[:line_start] == p.ids[:line_start]


def test_the_buffer_outside_the_window_is_a_file_before_it(vocab):
    lines = [f"let v{i} = {i};\n" for i in range(400)]
    text = "".join(lines)
    offset = len("".join(lines[:200])) + 4                    # in `let |v200 = 200;`
    config = PromptConfig(context="local", prefix_tokens=64, suffix_tokens=64, head_tokens=300, tail_tokens=200)
    p = build_prompt(vocab, config, "a.rs", text, offset, shape_at(text, offset), [], "r")
    part = vocab.tok.decode(p.ids[:p.local_start], skip_special_tokens=False)
    local = vocab.tok.decode(p.ids[p.local_start:], skip_special_tokens=False)
    suffix = local[local.index("<|fim_suffix|>") + len("<|fim_suffix|>"):local.index("<|fim_middle|>")]
    prefix = local[local.index("<|fim_middle|>") + len("<|fim_middle|>"):] + p.healed.decode()
    start, end = offset - len(prefix), offset + len(suffix)  # the window: [start, end)
    header = "<|repo_name|>r\n<|file_sep|>a.rs\n"
    assert part.startswith(header) and p.local_start in p.boundaries
    body = part[len(header):]
    cut = body.index(text[end:text.index("\n", end + 1)])    # the first line after the suffix window
    assert 0 < cut < len(body) and text[:start].endswith(body[:cut]) and text[end:].startswith(body[cut:])
    assert len(p.ids[:p.local_start]) <= len(vocab.repo_header("r") + vocab.file_header("a.rs")) + 300 + 200
    typed = build_prompt(vocab, config, "a.rs", text[:offset] + "x" + text[offset:], offset + 1,
                         shape_at(text, offset), [], "r")      # a keystroke leaves the part as it is
    assert typed.ids[:typed.local_start] == p.ids[:p.local_start]
    for other in (replace(config, head_tokens=0, tail_tokens=0), replace(config, layout="psm"),
                  replace(config, context="none")):
        assert build_prompt(vocab, other, "a.rs", text, offset, shape_at(text, offset), [], "r").local_start == 0


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


def test_an_open_bracket_at_the_end_of_a_line_is_left_open():
    assert tidy("let v = foo(", shape_at("    \n", 4)) == "let v = foo("


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
