"""The language server driven by a real LSP client (pytest-lsp) over stdio, on a copy of the bundled workspace
with the shipped model; the server runs under an audit hook that records every socket it would open."""
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from lsp_session import open_session

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path(tempfile.mkdtemp(prefix="rustle-lsp-"))
WORKSPACE = SCRATCH / "kvstore"
AUDIT = SCRATCH / "audit.jsonl"
MAIN = WORKSPACE / "src" / "main.rs"
OUTSIDE = SCRATCH / "outside"     # a folder beside the workspace: the server must never read it

AUDITED_SERVER = f"""
import json, sys
log = open({str(AUDIT)!r}, "a")
log.write(json.dumps({{"event": "started", "args": ""}}) + "\\n"); log.flush()
def hook(event, args):
    if event in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg") or (
            event in ("open", "os.listdir", "os.scandir") and args and str(args[0]).startswith({str(OUTSIDE)!r})):
        log.write(json.dumps({{"event": event, "args": repr(args)}}) + "\\n"); log.flush()
sys.addaudithook(hook)
from assistant.cli import main
sys.exit(main(["serve"]))
"""


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-c", AUDITED_SERVER],
                                              server_env={"XDG_CACHE_HOME": str(SCRATCH / "cache")}))
async def client(lsp_client: LanguageClient):
    if not WORKSPACE.exists():
        shutil.copytree(ROOT / "data" / "workspace", WORKSPACE)
    lsp_client.partials = []
    lsp_client.feature("rustle/partialCompletion")(lambda params: lsp_client.partials.append(params))
    await open_session(lsp_client, WORKSPACE)
    for _ in range(600):  # indexing reports its end through $/progress
        if any(isinstance(r, types.WorkDoneProgressEnd) for reports in lsp_client.progress_reports.values()
               for r in reports):
            break
        await asyncio.sleep(0.1)
    yield
    await lsp_client.shutdown_session()


def _open(client: LanguageClient, text: str, path: Path = MAIN, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="rust", version=version, text=text)))
    return uri


def _inline(client: LanguageClient, uri: str, line: int, character: int):
    return client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))


def _typed_main() -> tuple[str, int, int]:
    text = MAIN.read_text().replace("    let mut store = Store::new();", "    let mut store = ")
    line = text.split("\n").index("    let mut store = ")
    return text, line, len("    let mut store = ")


async def test_indexing_reports_progress_and_inline_completion_streams(client: LanguageClient):
    reports = [r for reports in client.progress_reports.values() for r in reports]
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and isinstance(reports[-1], types.WorkDoneProgressEnd)
    assert "files" in reports[-1].message
    text, line, col = _typed_main()
    uri = _open(client, text)
    result = await _inline(client, uri, line, col)
    assert len(result.items) == 1 and result.items[0].insert_text
    assert result.items[0].range.start == types.Position(line, col)
    assert client.partials, "no rustle/partialCompletion notification"
    assert result.items[0].insert_text.startswith(client.partials[0].text.split("\n")[0][:1])
    for _ in range(300):  # the repository part's prefill runs in the background and says when it is done
        if any("repository in context" in s.message for s in client.statuses):
            break
        await asyncio.sleep(0.1)
    assert any("repository in context" in s.message and "files" in s.message for s in client.statuses)


async def test_completion_items_carry_a_text_edit(client: LanguageClient):
    text, line, col = _typed_main()
    uri = _open(client, text)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col)))
    assert result.is_incomplete and len(result.items) == 1
    edit = result.items[0].text_edit
    assert edit.range.start == types.Position(line, col) and edit.new_text


async def test_a_newer_request_supersedes_an_older_one_and_cancel_works(client: LanguageClient):
    text, line, col = _typed_main()
    uri = _open(client, text)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(   # both requests arrive within it
        settings={"rustle": {"debounceMs": 400}}))                                  # on a busy machine too
    first = _inline(client, uri, line, col)
    second = _inline(client, uri, line, col)
    older, newer = await asyncio.gather(first, second)
    assert not older.items and len(newer.items) == 1
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
    pending = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me")
    await asyncio.sleep(0.01)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wrap_future(pending)
    again = await _inline(client, uri, line, col)   # the server is still up and answering
    assert len(again.items) == 1


async def test_debounce_waits_and_a_request_superseded_while_waiting_never_runs(client: LanguageClient):
    text, line, col = _typed_main()
    uri = _open(client, text)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"rustle": {"debounceMs": 400}}))
    await asyncio.sleep(0.1)
    client.partials.clear()
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = _inline(client, uri, line - 1, 4)   # superseded 50 ms into its 400 ms wait
    await asyncio.sleep(0.05)
    older, newer = await asyncio.gather(first, _inline(client, uri, line, col))
    assert loop.time() - started >= 0.45           # the newer request waited out its own debounce
    assert not older.items and len(newer.items) == 1
    assert {(p.position.line, p.position.character) for p in client.partials} == {(line, col)}


async def test_configuration_changes_apply(client: LanguageClient):
    text, line, col = _typed_main()
    uri = _open(client, text)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"rustle": {"maxTokens": 1, "multiline": False, "debounceMs": "fast"}}))
    result = await _inline(client, uri, line, col)
    assert len(result.items[0].insert_text) <= 12   # one token at most


async def test_bad_input_gets_empty_answers_and_the_server_stays_up(client: LanguageClient):
    text, line, col = _typed_main()
    uri = _open(client, text)
    assert not (await _inline(client, uri, 10_000, 3)).items
    huge = _open(client, "fn main() {\n" + "    let x = 1;\n" * 700_000 + "    \n}\n",
                 WORKSPACE / "src" / "huge.rs")
    big = await _inline(client, huge, 700_001, 4)
    assert isinstance(big.items, (list, tuple))
    for version in range(2, 1002):  # 1,000 rapid edits
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, col), types.Position(line, col)), text="x")]))
    with pytest.raises(Exception):
        await client.protocol.send_request_async("rustle/noSuchMethod", {})
    result = await _inline(client, uri, line, col + 1000)
    assert isinstance(result.items, (list, tuple))


async def test_accept_and_reject_are_stored_locally(client: LanguageClient):
    uri = MAIN.as_uri()
    client.protocol.notify("rustle/didAccept", {"uri": uri, "position": {"line": 5, "character": 20},
                                                "text": "Store::new();"})
    client.protocol.notify("rustle/didReject", {"uri": uri, "position": {"line": 5, "character": 20},
                                                "text": "vec![];"})
    client.protocol.notify("rustle/didReject", {"uri": uri, "text": 42})   # malformed: ignored
    await asyncio.sleep(0.5)
    db = sqlite3.connect(SCRATCH / "cache" / "rustle" / "feedback.sqlite")
    rows = db.execute("SELECT verdict, suggestion FROM feedback ORDER BY id").fetchall()
    db.close()
    assert ("accept", "Store::new();") in rows and ("reject", "vec![];") in rows


async def test_the_inline_item_carries_an_accept_command_that_stores_feedback(client: LanguageClient):
    text, line, col = _typed_main()
    uri = _open(client, text)
    item = (await _inline(client, uri, line, col)).items[0]
    assert item.command.command == "rustle.accepted"
    await client.workspace_execute_command_async(types.ExecuteCommandParams(item.command.command,
                                                                            item.command.arguments))
    db = sqlite3.connect(SCRATCH / "cache" / "rustle" / "feedback.sqlite")
    rows = db.execute("SELECT verdict, suggestion, line, character FROM feedback ORDER BY id").fetchall()
    db.close()
    assert ("accept", item.insert_text, line, col) in rows


async def test_a_document_outside_the_workspace_is_completed_from_its_buffer_alone(client: LanguageClient):
    OUTSIDE.mkdir(exist_ok=True)
    (OUTSIDE / "neighbour.rs").write_text("pub fn zebra_qxv7k_helper() -> u32 { 1234 }\n")
    text = "fn main() {\n    let value = zebra_qxv7k"
    (OUTSIDE / "main.rs").write_text(text)
    sneaky = f"{WORKSPACE.as_uri()}/../outside/main.rs"               # inside by its spelling, outside resolved
    for uri in ((OUTSIDE / "main.rs").as_uri(), sneaky, "untitled:Untitled-1"):
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="rust", version=1, text=text)))
        result = await _inline(client, uri, 1, len("    let value = zebra_qxv7k"))
        assert all("helper" not in item.insert_text for item in result.items), uri
    for unopened in ((OUTSIDE / "neighbour.rs").as_uri(), (WORKSPACE / "src" / "missing.rs").as_uri()):
        assert not (await _inline(client, unopened, 0, 3)).items   # never read from disk, no -32603 when missing
    events = [json.loads(line) for line in AUDIT.read_text().splitlines()]
    assert not [e for e in events if e["event"] in ("open", "os.listdir", "os.scandir")]   # nothing read there
    assert not list((SCRATCH / "cache" / "rustle" / "index").glob("outside-*"))        # nor indexed


def test_the_server_opened_no_network_connection():
    """Runs after the sessions above (same module): the audit log of every server process they started."""
    events = [json.loads(line) for line in AUDIT.read_text().splitlines()] if AUDIT.exists() else []
    assert sum(e["event"] == "started" for e in events) >= 5        # the hook was in every server process
    network = [e for e in events if e["event"].startswith("socket")]
    assert not network, network


def _verdict(text: str):
    from lsp.protocol import Feedback

    return Feedback.from_json({"uri": "file:///x.rs", "text": text})


def test_a_damaged_feedback_store_is_moved_aside_and_the_verdict_kept(tmp_path):
    from lsp.feedback import FeedbackStore

    path = tmp_path / "feedback.sqlite"
    path.write_bytes(b"not a database, but somebody's bytes" * 50)
    store = FeedbackStore(path)
    assert store.record("accept", _verdict("x + 1"))
    [aside] = tmp_path.glob("feedback.sqlite.unusable-*")
    assert aside.read_bytes() == b"not a database, but somebody's bytes" * 50
    db = sqlite3.connect(path)
    assert db.execute("SELECT verdict, suggestion FROM feedback").fetchall() == [("accept", "x + 1")]
    db.close()


async def test_a_feedback_write_blocked_by_another_writer_never_stalls_the_event_loop(tmp_path):
    from lsp.feedback import FeedbackStore

    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path, busy_seconds=0.3)
    assert store.record("accept", _verdict("first"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")                     # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    stored = await asyncio.to_thread(store.record, "reject", _verdict("second"))   # as the server calls it
    beat.cancel()
    assert not stored and store.dropped == 1 and ticks >= 20     # ~0.6 s of retries, the loop ticking meanwhile
    other.execute("COMMIT")
    other.close()
    assert store.record("accept", _verdict("third")) and not list(tmp_path.glob("*.unusable-*"))


async def test_a_model_folder_that_cannot_be_loaded_keeps_the_model_serving_and_says_why(client: LanguageClient,
                                                                                       tmp_path):
    bad = tmp_path / "huge-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"vocab_size": 10 ** 12, "n_heads": 0, "layer_pattern": ["gdn"]}))
    (bad / "model.safetensors").write_bytes(b"\0" * 64)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"rustle": {"model": str(bad)}}))
    for _ in range(300):
        if client.messages:
            break
        await asyncio.sleep(0.1)
    [message] = client.messages
    assert message.type == types.MessageType.Error and "huge-model not loaded" in message.message
    assert "vocab_size" in message.message and "still using rustle-small" in message.message
    assert any("still using rustle-small" in s.message for s in client.statuses)
    text, line, col = _typed_main()
    result = await _inline(client, _open(client, text), line, col)   # the shipped model still answers
    assert len(result.items) == 1 and result.items[0].insert_text


async def test_a_second_initialize_does_not_silence_the_server(client: LanguageClient):
    again = await client.protocol.send_request_async("initialize", types.InitializeParams(
        capabilities=types.ClientCapabilities()))
    assert again.capabilities.inline_completion_provider
    text, line, col = _typed_main()
    result = await asyncio.wait_for(_inline(client, _open(client, text), line, col), 120)   # it once never came
    assert len(result.items) == 1 and result.items[0].insert_text
