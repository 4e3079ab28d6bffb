"""`rustle serve --model DIR`: the language server, driven by a real LSP client (pytest-lsp) over stdio, serves the
model folder its command line names (a fine-tuned one) until the editor's `rustle.model` names another."""
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from assistant.cli.main import main
from lsp_session import open_session
from model import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path(tempfile.mkdtemp(prefix="rustle-lsp-model-"))
TEAM = SCRATCH / "team-model"         # a model folder by another name: the status bar shows which one serves
WORKSPACE = SCRATCH / "kvstore"


@pytest_lsp.fixture(config=ClientServerConfig(
    server_command=[sys.executable, "-m", "assistant.cli", "serve", "--model", str(TEAM)],
    server_env={"XDG_CACHE_HOME": str(SCRATCH / "cache")}))
async def client(lsp_client: LanguageClient):
    shutil.copytree(DEFAULT_MODEL, TEAM, dirs_exist_ok=True)     # before `initialized`, which loads it
    shutil.copytree(ROOT / "data" / "workspace", WORKSPACE, dirs_exist_ok=True)
    await open_session(lsp_client, WORKSPACE)
    yield
    await lsp_client.shutdown_session()


async def test_the_model_the_command_line_names_serves_until_the_editor_names_another(client: LanguageClient):
    for _ in range(600):
        if any(s.state == "ready" for s in client.statuses):
            break
        await asyncio.sleep(0.1)
    ready = [s for s in client.statuses if s.state == "ready"]
    assert ready and ready[0].model == "team-model" and ready[0].message.startswith("model team-model"), \
        client.statuses
    assert {s.model for s in client.statuses} == {"team-model"}
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"rustle": {"model": str(DEFAULT_MODEL)}}))
    for _ in range(300):
        if client.statuses[-1].model == DEFAULT_MODEL.name and client.statuses[-1].state == "ready":
            break
        await asyncio.sleep(0.1)
    assert client.statuses[-1].model == DEFAULT_MODEL.name and client.statuses[-1].state == "ready"


def test_a_model_option_that_is_not_a_model_folder_is_refused(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "not a model folder" in capsys.readouterr().out
