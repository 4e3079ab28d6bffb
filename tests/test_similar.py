"""The code most like the lines above the cursor (assistant/engine/similar.py): ranking, the cursor's own lines left
out, the budget, and where the windows stand in a real workspace's prompt."""
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.engine.engine import Request
from assistant.engine.prompt import PromptConfig, assemble
from assistant.engine.similar import SimilarConfig, Window, WindowCache, query_names, select, window_names
from assistant.engine.tokens import Vocab
from assistant.engine.workspace import Workspace
from tokenizer import load_tokenizer

KVSTORE = Path(__file__).resolve().parent.parent / "data" / "workspace"
CONFIG = SimilarConfig(windows=2, lines=2, after=1, least=0.2)
WINDOWED = PromptConfig(context="repo", layout="spm", similar_tokens=1024)


def names(text: str) -> frozenset[str]:
    return frozenset(text.split())


def test_the_likest_windows_come_first_and_none_overlaps_another():
    candidates = {"a.rs": [(0, names("x y z")), (1, names("x y")), (8, names("p q"))],
                  "b.rs": [(0, names("x w")), (4, names("x y z w"))]}
    chosen = select(names("x y z"), candidates, CONFIG, budget=100, cost=lambda w: 10)
    assert [(w.path, w.start) for w in chosen] == [("a.rs", 0), ("b.rs", 4)]   # a.rs:1 overlaps a.rs:0
    assert select(names("x y z"), candidates, replace(CONFIG, least=0.9), 100, lambda w: 10) == [Window("a.rs", 0, 1.0)]
    assert select(frozenset(), candidates, CONFIG, 100, lambda w: 10) == []


def test_the_budget_skips_a_window_that_does_not_fit_and_takes_the_next():
    candidates = {"a.rs": [(0, names("x y z")), (10, names("x y"))], "b.rs": [(0, names("x"))]}
    cost = {("a.rs", 0): 50, ("a.rs", 10): 5, ("b.rs", 0): 5}
    chosen = select(names("x y z"), candidates, CONFIG, 12, lambda w: cost[(w.path, w.start)])
    assert [(w.path, w.start) for w in chosen] == [("a.rs", 10), ("b.rs", 0)]


def test_windows_around_the_cursor_are_left_out():
    candidates = {"a.rs": [(0, names("x y")), (5, names("x y z")), (20, names("x y"))]}
    chosen = select(names("x y z"), candidates, CONFIG, 100, lambda w: 1, skip=("a.rs", 6, 12))
    assert [w.start for w in chosen] == [0, 20]        # 5's shown lines (5-7) reach line 6


def test_the_query_is_the_whole_lines_above_the_cursor_line():
    assert query_names("fn a() {\n    let b = c;\n    d.e", 10) == {"fn", "a", "let", "b", "c"}
    assert query_names("one\ntwo\nthree\n    typed", 2) == {"two", "three"}
    assert query_names("typed on the first line", 10) == frozenset()
    assert [start for start, _ in window_names([f"l{i}" for i in range(7)], 4)] == [0, 2]


def test_a_file_is_split_again_only_when_its_tokens_change():
    decoded = []
    cache = WindowCache(lambda ids: decoded.append(ids) or "\n".join(map(str, ids)))
    tokens = [1, 2, 3]
    first = cache.of("a.rs", tokens, 2)
    assert cache.of("a.rs", tokens, 2) == first and len(decoded) == 1
    cache.of("a.rs", [1, 2, 3], 2)                  # a new list: the file was encoded again
    assert len(decoded) == 2


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(load_tokenizer())


@pytest.fixture
def workspace(tmp_path, vocab) -> Workspace:
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    (root / "src" / "cache.rs").write_text(
        "impl Cache {\n    pub fn get_entry(&self, key: &str) -> Option<&str> {\n"
        "        self.entries.get(key).map(|value| value.as_str())\n    }\n}\n")
    ws = Workspace(root, vocab, tmp_path / "index.sqlite")
    ws.index()
    return ws


def request_at(ws: Workspace, text: str) -> Request:
    return Request(ws.root, "src/main.rs", text, len(text))


BUFFER = ("use kvstore::Store;\n\nimpl Cache {\n    pub fn get_entry(&self, key: &str) -> Option<&str> {\n"
          "        self.entries.")


def test_the_likest_window_ends_the_repository_part_and_typing_on_the_line_keeps_it(workspace, vocab):
    prompt, _ = assemble(workspace, request_at(workspace, BUFFER), WINDOWED, 131072, 1024)
    part = vocab.tok.decode(prompt.ids[:prompt.local_start], skip_special_tokens=False)
    likest = part.split("<|file_sep|>")[-1]                       # the likest window is the nearest the buffer
    assert likest.startswith("src/cache.rs\nimpl Cache {\n    pub fn get_entry") and "value.as_str())" in likest
    header = vocab.file_header("src/main.rs")
    assert prompt.ids[prompt.local_start:prompt.local_start + len(header)] == prompt.copy_ids[:len(header)] == header
    typed, _ = assemble(workspace, request_at(workspace, BUFFER + "get(k"), WINDOWED, 131072, 1024)
    assert typed.ids[:typed.local_start] == prompt.ids[:prompt.local_start]   # served from the same prefilled part


@pytest.mark.parametrize("config", [replace(WINDOWED, context="local"), replace(WINDOWED, layout="psm"),
                                    replace(WINDOWED, similar_tokens=20)])
def test_no_window_without_the_repository_the_spm_layout_or_the_budget(workspace, config):
    prompt, _ = assemble(workspace, request_at(workspace, BUFFER), config, 131072, 1024)
    plain, _ = assemble(workspace, request_at(workspace, BUFFER), replace(config, similar_tokens=0), 131072, 1024)
    assert prompt.ids == plain.ids
    windowed, _ = assemble(workspace, request_at(workspace, BUFFER), WINDOWED, 131072, 1024)
    assert windowed.ids != assemble(workspace, request_at(workspace, BUFFER), PromptConfig(similar_tokens=0), 131072,
                                    1024)[0].ids


def test_the_choice_is_remembered_for_the_same_lines_and_the_same_files_only():
    cache, calls = WindowCache(str), []
    files = [[1, 2], [3]]
    choose = lambda: calls.append(1) or len(calls)   # noqa: E731
    assert cache.remembered(("a.rs", "above"), files, choose) == 1
    assert cache.remembered(("a.rs", "above"), list(files), choose) == 1     # the same token lists
    assert cache.remembered(("a.rs", "above"), [[1, 2], files[1]], choose) == 2   # a file encoded again
    assert cache.remembered(("a.rs", "moved"), [[1, 2], files[1]], choose) == 3
