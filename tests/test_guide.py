"""Index-guided decoding (assistant/engine/guide.py) on the bundled kvstore crate: the candidate names at member,
path and bare positions, the boosted tokens, and that a boost steers without forbidding."""
import shutil
from pathlib import Path

import pytest
import torch

from assistant.engine.decode import choose
from assistant.engine.engine import Engine, EngineConfig, Request
from assistant.engine.guide import Guide, GuideConfig, Spellings
from assistant.engine.healing import Healer
from assistant.engine.tokens import Vocab
from assistant.engine.workspace import Workspace
from conftest import save_tiny_model
from tokenizer import load_tokenizer

KVSTORE = Path(__file__).resolve().parent.parent / "data" / "workspace"


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(load_tokenizer())


@pytest.fixture(scope="module")
def spellings(vocab) -> Spellings:
    return Spellings(vocab.token_bytes)


@pytest.fixture
def workspace(tmp_path, vocab) -> Workspace:
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    return Workspace(root, vocab, tmp_path / "index.sqlite")


def _guide(workspace, spellings, prefix: str, **config) -> Guide:
    return Guide(GuideConfig(**{"bare": True, **config}), spellings, workspace.names, prefix)


def test_candidates_at_member_path_and_bare_positions(workspace, spellings):
    typed = "fn f(store: &mut Store) {\n    store."
    assert _guide(workspace, spellings, typed).candidates(typed)[1] == [
        "delete", "entries", "get", "is_empty", "len", "new", "set", "writes"]      # methods and fields
    assert _guide(workspace, spellings, typed + "is_").candidates(typed + "is_")[1:] == (["is_empty"], "is_")
    in_impl = "impl Store {\n    fn twice(&self) -> usize {\n        self.le"
    assert _guide(workspace, spellings, in_impl).candidates(in_impl)[1] == ["len"]
    assert _guide(workspace, spellings, "    Command::").candidates("    Command::")[1] == [
        "Delete", "Get", "Len", "Set"]                                                # an enum's variants
    assert "parse_command" in _guide(workspace, spellings, "use command::").candidates("use command::")[1]
    listed = "pub use command::{parse_command, Co"
    assert _guide(workspace, spellings, listed).candidates(listed)[1:] == (["Command"], "Co")   # in a use list
    bare = _guide(workspace, spellings, "    let x = pars").candidates("    let x = pars")[1]
    assert bare == ["parse_command", "parses_set"]                                # a fn and a test fn
    unknown = "    let v = compute();\n    v."
    assert _guide(workspace, spellings, unknown).candidates(unknown)[1] == []   # an unknown type: not steered
    assert _guide(workspace, spellings, "    x.", bare=False).token_ids("    let y = ") == []


def test_the_tokenizers_own_spelling_of_every_candidate_is_boosted(workspace, spellings, vocab):
    typed = "fn f(store: &mut Store) {\n    store."
    guide = _guide(workspace, spellings, typed)
    for name in guide.candidates(typed)[1]:
        for cut in range(len(name)):                     # wherever the name was interrupted
            before = typed + name[:cut]
            first = vocab.encode(name[cut:] + "(")[0]    # what the tokenizer writes next
            assert first in guide.token_ids(before), (name, cut, vocab.token_bytes[first])


def test_a_boost_steers_but_a_new_name_can_still_win(workspace, spellings, vocab):
    typed = "fn f(store: &mut Store) {\n    store."
    guide = _guide(workspace, spellings, typed, boost=3.0)
    healer = Healer(vocab.token_bytes)
    get, other = vocab.encode("get")[0], vocab.encode("frobnicate")[0]
    assert get in guide.token_ids(typed) and other not in guide.token_ids(typed)
    logits = torch.full((vocab.size,), -10.0)
    logits[other], logits[get] = 2.0, 0.0
    assert choose(logits, [], b"", healer) == other
    assert choose(logits, [], b"", healer, guide=guide, generated="") == get       # steered within the boost
    logits[other] = 5.0
    assert choose(logits, [], b"", healer, guide=guide, generated="") == other     # a name the index lacks


def test_candidates_follow_the_index_when_a_file_changes(workspace, spellings):
    from assistant.engine.workspace import Change

    typed = "fn f(store: &mut Store) {\n    store."
    assert "clear" not in _guide(workspace, spellings, typed).candidates(typed)[1]
    store_rs = workspace.root / "src" / "store.rs"
    store_rs.write_text(store_rs.read_text().replace("impl Store {", "impl Store {\n    pub fn clear(&mut self) {}"))
    workspace.apply_change(Change("src/store.rs"))
    assert "clear" in _guide(workspace, spellings, typed).candidates(typed)[1]


def test_guided_completion_is_the_same_warm_and_cold_and_with_or_without_drafts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "tiny")
    root = tmp_path / "kvstore"
    shutil.copytree(KVSTORE, root)
    text = (root / "src" / "lib.rs").read_text()
    offset = text.index("store.get(") + len("store.")
    request = Request(root, "src/lib.rs", text, offset)
    warm = Engine(model, EngineConfig(max_new_tokens=8, dtype="fp32"))
    first = warm.complete_sync(request).text
    assert warm.complete_sync(request).text == first
    assert Engine(model, EngineConfig(max_new_tokens=8, dtype="fp32", copy_draft=False)).complete_sync(
        request).text == first


def test_the_receivers_type_is_the_last_declaration_before_the_cursor_however_far_back():
    from assistant.engine.context import TAIL_CHARS, receiver_type

    filler = "    let _ = 1;\n" * (2 * TAIL_CHARS // 15)          # pushes a declaration into the remembered head
    head = "fn f(tree: RBTree, n: usize) {\n" + filler
    assert receiver_type(head + "    tree.", "tree") == "RBTree"
    assert receiver_type(head.replace("RBTree", "Other") + "    tree.", "tree") == "Other"   # a changed head
    assert receiver_type(head + "    let tree = Forest::new();\n    tree.", "tree") == "Forest"   # nearer wins
    assert receiver_type(head + "    node.", "node") is None
    impl = "impl<T> Drop for Cursor<T> {\n" + filler + "    fn drop(&mut self) {\n        self."
    assert receiver_type(impl, "self") == "Cursor"
