"""The tree of model states (assistant/engine/state.py) on a tiny random model and the bundled workspace:
every warm prefill equals a cold one (up to bf16 rounding), switching files and moving the cursor restore their own
branch, and the memory budget evicts the least recently used snapshots."""
import shutil
import threading
from pathlib import Path

import pytest
import torch

from dataclasses import replace

from assistant.engine.engine import Engine, EngineConfig, Request
from assistant.engine.prompt import PromptConfig
from assistant.engine.state import PrefixDigests, StateCache, prefix_digests
from model.model import RustleLM

from conftest import save_tiny_model

KVSTORE = Path(__file__).resolve().parent.parent / "data" / "workspace"
CURSORS = [("src/main.rs", "let stdin = "), ("src/store.rs", "self.entries."), ("src/main.rs", "Ok(())"),
           ("src/lib.rs", "Ok(Command::Len) => store.")]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> tuple[RustleLM, list[tuple[list[int], list[int]]]]:
    """A tiny model with every layer kind (in bf16, as the engine serves it) and the prompts at CURSORS."""
    out = save_tiny_model(tmp_path_factory.mktemp("tiny"), ("gdn", "swa", "full", "lql"))
    root = tmp_path_factory.mktemp("ws") / "kvstore"
    shutil.copytree(KVSTORE, root)
    index = tmp_path_factory.mktemp("index") / "index.sqlite"
    engine = Engine(out, EngineConfig(dtype="bf16"), db_for=lambda _: index)
    built = []
    for path, marker in CURSORS:
        text = (root / path).read_text()
        prompt, _ = engine.prompt(Request(root, path, text, text.index(marker) + len(marker)))
        built.append((prompt.ids, prompt.boundaries))
    return engine.model, built


def _same(warm: torch.Tensor, cold: torch.Tensor) -> bool:
    """Warm equals cold up to bf16 rounding (a branch attends over shared segments, merged: model/cache.py),
    with the same greedy choice."""
    return bool((warm.float() - cold.float()).abs().max() < 0.02 * cold.float().abs().max()
                and torch.equal(warm.argmax(-1), cold.argmax(-1)))


def _cold(model: RustleLM, ids: list[int], boundaries: list[int]) -> torch.Tensor:
    return StateCache(model).prefill(ids, boundaries)[0]


def test_prefix_digests_tell_prefixes_apart():
    a, b = prefix_digests([1, 2, 3, 4], {2, 4}), prefix_digests([1, 2, 3, 5], {2, 4})
    assert a[2] == b[2] and a[4] != b[4]


def test_digests_that_reuse_the_last_prompts_bytes_equal_fresh_ones(monkeypatch):
    from assistant.engine import state

    monkeypatch.setattr(state, "SHARED_BLOCK", 5)       # shared parts that end inside a block and on its edge
    memo = PrefixDigests()
    base = list(range(1000, 1023))
    for ids in (base, base + [7, 8], base[:10] + [9] + base[11:], base[:15], base[:15] + [4] * 20, [], base):
        positions = {p for p in (1, 5, 10, 11, 15, 23, len(ids)) if p <= len(ids)}
        assert memo(ids, positions) == prefix_digests(ids, positions)


def test_switching_files_and_cursors_restores_each_branch_and_equals_a_cold_run(prompts):
    model, built = prompts
    state = StateCache(model)
    for ids, boundaries in built:                       # first visits: the repository part is shared
        state.prefill(ids, boundaries)
    for ids, boundaries in built:                       # back to each cursor: its own branch is still there
        logits, stats = state.prefill(ids, boundaries)
        assert stats.reused == max(b for b in boundaries if b < len(ids))
        assert _same(logits, _cold(model, ids, boundaries))


def test_generation_past_a_prompt_leaves_the_other_branches_intact(prompts):
    model, built = prompts
    state = StateCache(model)
    (a, a_cuts), (b, b_cuts) = built[0], built[1]
    state.prefill(a, a_cuts)
    state.feed([5, 6, 7])                               # a suggestion decoded after prompt a…
    mark = state.mark()
    state.feed([8, 9])
    state.rewind(mark)                                  # …with a rejected draft
    state.prefill(b, b_cuts)
    logits, stats = state.prefill(a, a_cuts)
    assert _same(logits, _cold(model, a, a_cuts))
    cold = StateCache(model)
    cold.prefill(a, a_cuts)
    assert _same(state.feed([5, 6, 7]), cold.feed([5, 6, 7]))


def test_the_budget_evicts_least_recently_used_snapshots(prompts):
    model, built = prompts
    roomy = StateCache(model)
    for ids, boundaries in built:
        _, stats = roomy.prefill(ids, boundaries)
    budget = int(stats.held_mb * 2**20 * 0.8)
    state = StateCache(model, budget_bytes=budget)
    for ids, boundaries in built:
        _, stats = state.prefill(ids, boundaries)
        assert stats.held_mb * 2**20 <= budget
    assert stats.snapshots < len(roomy.checkpoints)
    ids, boundaries = built[-1]                         # the last used branch survived…
    assert state.prefill(ids, boundaries)[1].reused == max(b for b in boundaries if b < len(ids))
    ids, boundaries = built[0]                          # …an evicted one is recomputed, to the same result
    logits, stats = state.prefill(ids, boundaries)
    assert stats.computed > 0 and _same(logits, _cold(model, ids, boundaries))


@pytest.mark.parametrize("layout", ["prefix", "psm"])
def test_cursors_resume_from_the_documents_lines_prefilled_in_the_background(tmp_path, layout):
    """Layouts prefix and psm: the background prefills the repository, then the open document's lines as saved;
    a new cursor deep in the file then feeds only the lines after the anchor above it, its own line and (psm)
    the suffix, and its suggestion equals a cold engine's."""
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    prompt = PromptConfig(layout=layout, suffix_tokens=16, anchor_lines=4, window_lines=64, prefix_tokens=4096)
    config = EngineConfig(prompt=prompt, dtype="fp32", max_new_tokens=8)
    index = tmp_path / "index.sqlite"
    warm = Engine(out, replace(config, background=True), db_for=lambda _: index)
    warm.workspace(root).index()
    path = "src/command.rs"
    warm.prefill_repository(root, path)
    assert warm.prefill.wait(60)
    text = (root / path).read_text()
    cold = Engine(out, config, db_for=lambda _: index)
    for line in (41, 58, 23):                              # down the file, then back up
        offset = sum(len(x) + 1 for x in text.split("\n")[:line]) + 4
        request = Request(root, path, text, offset)
        built, _ = warm.prompt(request)
        resumed = max(a for a in built.anchors if a <= len(built.ids) - 2)
        got = warm.complete_sync(request)
        assert got.reused_tokens >= resumed > built.local_start  # the document's lines came from the background
        assert got.prompt_tokens - got.reused_tokens < 4 * 40 + 16 + 8
        assert got.text == cold.complete_sync(request).text


def test_an_engines_forwards_all_run_on_the_model_thread_whoever_asks(tmp_path, monkeypatch):
    # Once two threads of a process have run OpenMP work, each parallel op waits for a futex wake (model_thread.py):
    # the background prefill, the saved state's load and every request run on the one model thread.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    config = EngineConfig(dtype="fp32", max_new_tokens=2, background=True, persist=True)
    ran: set[int] = set()
    for _ in range(2):                                   # the second engine loads the state the first saved
        engine = Engine(out, config, db_for=lambda _: tmp_path / "index.sqlite")
        engine.model.register_forward_pre_hook(lambda module, args: ran.add(threading.get_ident()))
        engine.prefill_repository(root, "src/store.rs")
        assert engine.prefill.wait(60)
        text = (root / "src/command.rs").read_text()
        request = Request(root, "src/command.rs", text, text.index("Ok(Command::Len)"))
        engine.complete_sync(request)
        elsewhere = threading.Thread(target=engine.complete_sync, args=(request,))
        elsewhere.start()
        elsewhere.join()
    assert len(ran) == 1
    assert threading.get_ident() not in ran and elsewhere.ident not in ran


def _prefix_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Engine]:
    """The bundled workspace and a served engine with the prefix layout, whose short prefix is 200 tokens."""
    from assistant.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "SHORT", engine_module.ShortPrefix(prefix_tokens=200, window_lines=4,
                                                                            anchor_lines=4))
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    config = EngineConfig(prompt=PromptConfig(layout="prefix", anchor_lines=4, window_lines=64, prefix_tokens=4096),
                          dtype="fp32", max_new_tokens=4, background=True)
    return root, Engine(out, config, db_for=lambda _: tmp_path / "index.sqlite")


def test_a_cursor_whose_lines_are_not_prefilled_yet_gets_a_short_prefix_and_asks_for_them(tmp_path, monkeypatch):
    root, engine = _prefix_layout(tmp_path, monkeypatch)
    engine.prefill_repository(root, "src/store.rs")        # another document's repository part and lines
    assert engine.prefill.wait(60)
    text = (root / "src/command.rs").read_text()
    request = Request(root, "src/command.rs", text, text.index("Ok(Command::Len)"))
    short = engine.complete_sync(request)                 # not the file from its first line: a short prefix
    assert engine.prefill.wait(60)                         # …while its own part and lines are prefilled
    full = engine.complete_sync(request)
    document = full.prompt_tokens - len(engine.prefill.ready[root.resolve()].ids)   # from its first line
    assert short.prompt_tokens - short.reused_tokens < document and full.prompt_tokens - full.reused_tokens < 200


def test_the_lines_prefilled_on_opening_a_document_may_be_given_rather_than_read(tmp_path, monkeypatch):
    # `rustle eval lines --served` opens each task's file as saved before its line was typed, not as on disk.
    root, engine = _prefix_layout(tmp_path, monkeypatch)
    text = "// a line that is not on disk\n" + (root / "src/command.rs").read_text()
    engine.prefill_repository(root, "src/command.rs", text)
    assert engine.prefill.wait(60)
    with engine.lock:   # its lines are held: the prompt is the document from its first line, not a short prefix
        prompt, _ = engine.prompt(Request(root, "src/command.rs", text, text.index("Ok(Command::Len)")))
    assert "not on disk" in engine.vocab.tok.decode(prompt.ids, skip_special_tokens=False)


def test_a_part_prefilled_for_another_document_is_served_whole_with_this_ones_saved_copy_in_it(tmp_path):
    # The part ready for store.rs holds main.rs as saved; a request in main.rs, served before its own part is ready,
    # gets that part whole, main.rs's saved copy with it (more than the files before it: BENCHMARKS.md).
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    engine = Engine(out, EngineConfig(dtype="fp32", max_new_tokens=2, background=True),
                    db_for=lambda _: tmp_path / "index.sqlite")
    engine.prefill_repository(root, "src/store.rs")
    assert engine.prefill.wait(60)
    text = (root / "src/main.rs").read_text()
    with engine.lock:   # main.rs's own part, wanted by this request, is fed only once the lock is let go
        prompt, _ = engine.prompt(Request(root, "src/main.rs", text, len(text) // 2))
        ready = engine.prefill.ready[root.resolve()].ids
    part = engine.vocab.tok.decode(prompt.ids[:prompt.local_start], skip_special_tokens=False)
    assert prompt.ids[:prompt.local_start] == ready
    assert "<|file_sep|>src/main.rs" in part and "src/store.rs" not in part


def test_the_index_context_serves_each_cursor_its_own_snippets_in_the_background_mode_too(tmp_path):
    # Snippets depend on the cursor (the names near it): a part prefilled for another cursor is not this one's.
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    config = EngineConfig(prompt=PromptConfig(context="index"), dtype="fp32", max_new_tokens=2)
    served = Engine(out, replace(config, background=True), db_for=lambda _: tmp_path / "index.sqlite")
    foreground = Engine(out, config, db_for=lambda _: tmp_path / "index.sqlite")
    text = (root / "src/main.rs").read_text()
    for offset in (text.index("Store::new()"), text.index("execute(&mut"), len(text)):   # other names near each
        request = Request(root, "src/main.rs", text, offset)
        assert served.prompt(request)[0].ids == foreground.prompt(request)[0].ids
        served.complete_sync(request)
        assert served.prefill.wait(60)


def test_opening_an_empty_document_prefills_the_repository_without_error(tmp_path):
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    (root / "src" / "empty.rs").write_text("")             # a new file: no line to anchor a snapshot at
    engine = Engine(out, EngineConfig(dtype="fp32", max_new_tokens=2, background=True),
                    db_for=lambda _: tmp_path / "index.sqlite")
    engine.prefill_repository(root, "src/empty.rs")
    assert engine.prefill.wait(60) and root.resolve() in engine.prefill.ready
    assert engine.complete_sync(Request(root, "src/empty.rs", "fn ", 3)).prompt_tokens > 0


def _small_windows(tmp_path: Path) -> tuple[Path, Engine, Engine]:
    """The bundled workspace, and a served (background) and a foreground engine with windows of a few lines."""
    out = save_tiny_model(tmp_path / "tiny", ("gdn", "swa", "full", "lql"))
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    config = EngineConfig(prompt=PromptConfig(prefix_tokens=24, suffix_tokens=24, window_lines=2), dtype="fp32",
                          max_new_tokens=2)
    served = Engine(out, replace(config, background=True), db_for=lambda _: tmp_path / "index.sqlite")
    foreground = Engine(out, config, db_for=lambda _: tmp_path / "index.sqlite")
    return root, served, foreground


def test_a_new_cursor_is_served_without_its_buffer_part_until_the_background_has_it(tmp_path):
    # The buffer outside the window ends the repository part (prompt.py): a new cursor does not wait for it, and
    # once prefilled, the next request there feeds only its window, with the prompt a foreground engine builds.
    root, served, foreground = _small_windows(tmp_path)
    served.prefill_repository(root, "src/command.rs")
    assert served.prefill.wait(60)
    text = (root / "src/command.rs").read_text()
    request = Request(root, "src/command.rs", text, text.index("Ok(Command::Len)"))
    with served.lock:
        first, _ = served.prompt(request)
    assert "src/command.rs" not in served.vocab.tok.decode(first.ids[:first.local_start], skip_special_tokens=False)
    assert served.prefill.wait(60)
    with served.lock:
        second, _ = served.prompt(request)
    assert second.ids == foreground.prompt(request)[0].ids and second.local_start > first.local_start
    assert "<|file_sep|>src/command.rs" in served.vocab.tok.decode(second.ids[:second.local_start],
                                                                  skip_special_tokens=False)
    done = served.complete_sync(request)
    assert done.prompt_tokens - done.reused_tokens <= len(second.ids) - second.local_start   # its window only


def test_a_new_cursor_is_served_with_the_last_cursors_part_whole(tmp_path):
    # Until the background has fed a new cursor's own part, the last cursor's stands in whole: the buffer outside
    # its window is this document as it was then, whether the cursor moved a line or to the file's end; for a cursor
    # in another document, that one's saved copy is among the files.
    root, served, foreground = _small_windows(tmp_path)
    text = (root / "src/command.rs").read_text()
    get = text.index("Ok(Command::Get(key.to_string()))")
    before = Request(root, "src/command.rs", text, get)
    served.complete_sync(before)
    assert served.prefill.wait(60)
    with served.lock:
        old, _ = served.prompt(before)
    assert old.outside_start < old.local_start
    near = Request(root, "src/command.rs", text, text.index('"SET" => {', get))   # two lines down
    far = Request(root, "src/command.rs", text, len(text.rstrip()))
    main = (root / "src/main.rs").read_text()
    other = Request(root, "src/main.rs", main, len(main) // 2)
    for moved in (near, far):
        own = foreground.prompt(moved)[0]
        assert own.ids[:own.local_start] != old.ids[:old.local_start]
        with served.lock:
            stand_in, _ = served.prompt(moved)
        assert stand_in.ids[:stand_in.local_start] == old.ids[:old.local_start]
        assert stand_in.outside_start == old.outside_start
        assert stand_in.ids[stand_in.local_start:] == own.ids[own.local_start:]
        done = served.complete_sync(moved)
        assert done.prompt_tokens - done.reused_tokens <= len(stand_in.ids) - stand_in.local_start   # its window only
        assert served.prefill.wait(60)
        with served.lock:
            old, _ = served.prompt(moved)
        assert old.ids == own.ids
    served.prefill_repository(root, "src/command.rs")   # saved: its files' part (the same files) leaves it ready
    assert served.prefill.wait(60)
    with served.lock:
        after_save, _ = served.prompt(Request(root, "src/command.rs", text, text.index("Ok(Command::Len)")))
        elsewhere, _ = served.prompt(other)
    assert after_save.ids[:after_save.local_start] == old.ids[:old.local_start]
    assert elsewhere.ids[:elsewhere.local_start] == old.ids[:old.local_start]   # and in another document too
