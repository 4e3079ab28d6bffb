"""The JSON-RPC layer under the language server (lsp/jsonrpc.py) and its settings, below any client library: raw
bytes on `rustle serve`'s stdin (framing, bad messages, shutdown), a seeded fuzz, and the protocol class itself."""
import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _serve_bytes(stream: bytes, cache: Path) -> tuple[list[dict], str, int]:
    """`rustle serve` fed these bytes on stdin, then stdin closed: its replies, its log (stderr), its exit status."""
    done = subprocess.run([sys.executable, "-m", "assistant.cli", "serve"], input=stream, capture_output=True,
                          timeout=120, cwd=ROOT, env={"XDG_CACHE_HOME": str(cache), "PATH": "/usr/bin:/bin"})
    replies = [json.loads(b) for b in re.split(rb"Content-Length: \d+\r\n(?:[\w-]+: [^\r]*\r\n)*\r\n",
                                                 done.stdout) if b]
    return replies, done.stderr.decode(errors="replace"), done.returncode


def _serve_raw(messages: list[dict], cache: Path) -> tuple[list[dict], str]:
    """`rustle serve` fed these messages, well framed: its replies and its log."""
    replies, log, _ = _serve_bytes(b"".join(b"Content-Length: %d\r\n\r\n" % len(b) + b
                                            for b in (json.dumps(m).encode() for m in messages)), cache)
    return replies, log


def test_malformed_frames_and_invalid_utf8_get_errors_and_the_server_stays_up(tmp_path):
    """Raw bytes on stdin, below any client library: each bad frame is reported, the next request answered."""
    bad = [b"{not json", b"[1, 2", b'{"jsonrpc": "2.0", "id": 7}',
           b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"x": "\xff\xfe"}}',  # invalid UTF-8
           b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": "file:///a.rs", '
           b'"languageId": "rust", "version": 1, "text": "fn \xc3\x28"}}}']
    good = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"capabilities": {}}}).encode()
    frames = b"".join(b"Content-Length: %d\r\n\r\n" % len(body) + body for body in [*bad, good])
    replies, _, status = _serve_bytes(frames, tmp_path)
    errors = [r for r in replies if r.get("method") == "window/showMessage" and r["params"]["type"] == 1]
    assert len(errors) == len(bad)
    assert any(r.get("id") == 2 and "capabilities" in r.get("result", {}) for r in replies)
    assert status == 0   # stdin closed: a clean exit, not a crash


def test_the_whole_disk_is_refused_as_a_workspace(tmp_path):
    replies, _ = _serve_raw([
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}, "rootUri": "file:///"}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}}], tmp_path)
    warnings = [r["params"]["message"] for r in replies if r.get("method") == "window/showMessage"]
    assert any("does not index /" in m for m in warnings), replies
    assert not (tmp_path / "rustle" / "index").exists()                 # nothing indexed


def test_every_request_is_answered_even_with_bad_params_or_after_shutdown(tmp_path):
    doc = {"textDocument": {"uri": "file:///tmp/x.rs"}}
    replies, log = _serve_raw([
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion",
         "params": {**doc, "position": "oops", "context": {"triggerKind": 1}}},
        {"jsonrpc": "2.0", "id": 3, "method": "textDocument/inlineCompletion",
         "params": {**doc, "position": {"line": 0, "character": 0}, "context": None}},
        {"jsonrpc": "2.0", "id": 4, "method": "textDocument/completion", "params": None},
        {"jsonrpc": "2.0", "id": 5, "method": "shutdown"},
        {"jsonrpc": "2.0", "id": 6, "method": "textDocument/completion",
         "params": {**doc, "position": {"line": 0, "character": 0}}},
        {"jsonrpc": "2.0", "method": "exit"}], tmp_path)
    answers = {r["id"]: r for r in replies if "id" in r and "method" not in r}
    assert {answers[i]["error"]["code"] for i in (2, 3, 4)} == {-32602}                # invalid params
    assert "result" in answers[5] and answers[6]["error"]["code"] == -32600           # after shutdown
    assert "Traceback" not in log and len(log.strip().splitlines()) == 3                # one line per failure


def test_a_shutdown_while_the_workspace_still_loads_is_answered_with_a_result(tmp_path):
    """The `initialized` handler waits for an answer to its progress request that never comes: still running
    when `shutdown` arrives, it is cancelled and the shutdown answered with a result, not an error."""
    workspace = shutil.copytree(ROOT / "data" / "workspace", tmp_path / "kvstore")
    replies, log = _serve_raw([
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"capabilities": {"window": {"workDoneProgress": True}}, "rootUri": workspace.as_uri()}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "shutdown"},
        {"jsonrpc": "2.0", "method": "exit"}], tmp_path)
    answers = {r["id"]: r for r in replies if "id" in r and "method" not in r}
    assert answers[2] == {"jsonrpc": "2.0", "id": 2, "result": None}, (answers, log[-1500:])
    assert "Exception" not in log


def test_bad_framing_is_resynchronised_and_the_next_request_answered(tmp_path):
    def frame(message: dict, header: bytes = b"Content-Length: %d\r\n\r\n", extra: int = 0) -> bytes:
        body = json.dumps(message).encode()
        return header % (len(body) + extra) + body

    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
    ask = lambda i: {"jsonrpc": "2.0", "id": i, "method": "shutdown"}  # noqa: E731  (a request any server answers)
    stream = b"".join([
        frame(initialize),
        frame(ask(2), b"content-length: %d\r\n\r\n"),                   # lower-case header
        frame(ask(3), b"Content-Length: %d\n\n"),                         # LF-only line ends
        frame(ask(4), extra=-9),                                           # a length shorter than the body
        b"Content-Length: 100000000000000\r\n\r\n" + b"x" * 100,          # 10^14 announced
        frame({"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"capabilities": {}}}),  # again
        frame(ask(6)),
    ])
    replies, log, status = _serve_bytes(stream, tmp_path)
    answered = {r["id"] for r in replies if "id" in r and "method" not in r}
    assert {1, 2, 3, 6} <= answered and status == 0, (answered, log[-1500:])
    assert "Traceback" not in log


def test_a_seeded_fuzz_of_bad_messages_leaves_every_request_answered():
    """Hundreds of hostile messages (wrong types, out-of-range positions, unopened and outside URIs, unknown
    methods, garbage and misframed messages, huge lengths) in batches, each followed by a valid probe: every
    request gets a response or an error, every probe the first probe's suggestion (`rustle bench fuzz`)."""
    from assistant.lab.bench.fuzz import session

    report = session(messages=400, batch=100, seed=18)
    assert report.requests > 100 and report.answered == report.requests, report
    assert report.probes == 5 and report.probes_equal == 5 and report.probe_text, report
    assert report.exit_status == 0 and report.tracebacks == 0, report


def test_settings_of_the_wrong_type_or_out_of_range_are_ignored():
    from lsp.settings import Settings

    kept = Settings().updated({"rustle": {"maxTokens": -5, "debounceMs": 10 ** 9, "maxMs": 0, "multiline": "yes"}})
    assert kept == Settings()
    assert Settings().updated({"maxTokens": True}) == Settings()          # a bool is not a count
    assert Settings().updated({"rustle": {"maxTokens": 12, "maxMs": 250}}) == Settings(max_tokens=12, max_ms=250.0)


async def test_a_finished_notification_handler_is_not_kept():
    """pygls keeps the future of every async notification handler it ran (~1 KB each, forever): a long session's
    memory grew with every accept or reject. Our protocol drops it when the handler is done."""
    from pygls.lsp.server import LanguageServer

    from lsp.jsonrpc import AnsweringProtocol

    ls = LanguageServer("probe", "0", protocol_cls=AnsweringProtocol)
    seen = []

    @ls.feature("rustle/didSomething")
    async def something(ls, params) -> None:
        seen.append(params)

    for _ in range(50):
        ls.protocol.handle_message(json.loads('{"jsonrpc": "2.0", "method": "rustle/didSomething", "params": {}}',
                                              object_hook=ls.protocol.structure_message))
    await asyncio.sleep(0.1)
    assert len(seen) == 50 and not ls.protocol._request_futures
