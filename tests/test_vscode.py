"""The VS Code extension: it packages into a .vsix that carries its language client, and, installed in a real
code-server driven by headless Chromium, shows our model's ghost text while typing and inserts it on Tab."""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "editors" / "vscode" / "e2e"
CLIENT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rustle" / "e2e"
CODE_SERVER = CLIENT_CACHE / "code-server-4.100.3" / "out" / "node" / "entry.js"


@pytest.fixture(scope="module")
def vsix(tmp_path_factory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    source = tmp_path_factory.mktemp("vscode") / "vscode"
    shutil.copytree(ROOT / "editors" / "vscode", source, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    install = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=source, capture_output=True, text=True,
                             timeout=600)
    if install.returncode != 0 and "ENOTFOUND" in install.stderr + install.stdout:
        pytest.skip("the npm registry cannot be reached")
    assert install.returncode == 0, install.stderr
    subprocess.run(["npm", "run", "package"], cwd=source, check=True, capture_output=True, timeout=600)
    return source / "rustle.vsix"


@pytest.mark.slow
def test_the_extension_packages_as_a_vsix(vsix: Path):
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("extension/package.json"))
    assert "extension/out/extension.js" in names
    assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names)
    assert manifest["activationEvents"] == ["onLanguage:rust"]
    assert {c["command"] for c in manifest["contributes"]["commands"]} == {"rustle.enable", "rustle.disable",
                                                                         "rustle.restart"}


@pytest.fixture(scope="module")
def code_server() -> Path:
    """code-server and puppeteer-core, installed once outside the repository (editors/vscode/e2e/install.sh)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the VS Code end-to-end test needs code-server")
    done = subprocess.run([str(E2E / "install.sh"), str(CLIENT_CACHE)], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        pytest.skip("code-server could not be installed (editors/vscode/e2e/install.sh): "
                    + (done.stderr or done.stdout).strip()[-400:])
    return CODE_SERVER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ghost_text_from_our_model_appears_in_code_server_and_tab_inserts_it(vsix, code_server, tmp_path):
    workspace = tmp_path / "kvstore"
    shutil.copytree(ROOT / "data" / "workspace", workspace)
    user, extensions, cache = tmp_path / "user", tmp_path / "extensions", tmp_path / "cache"
    (user / "User").mkdir(parents=True)
    (user / "User" / "settings.json").write_text(json.dumps({
        "rustle.serverPath": str(Path(sys.executable).parent / "rustle"),
        "rustle.debounceMs": 30,
        "editor.inlineSuggest.enabled": True,
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "workbench.startupEditor": "none", "security.workspace.trust.enabled": False,
        "telemetry.telemetryLevel": "off", "update.mode": "none", "extensions.autoCheckUpdates": False,
    }))
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}   # the server's feedback database lands here
    common = ["node", str(code_server), "--config", str(tmp_path / "config.yaml"), "--user-data-dir", str(user),
              "--extensions-dir", str(extensions)]
    subprocess.run([*common, "--install-extension", str(vsix)], check=True, capture_output=True, env=env, timeout=120)
    port = _free_port()
    server = subprocess.Popen([*common, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
                               "--disable-update-check", "--disable-workspace-trust", str(workspace)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        typed = "let mut store = "
        line = (workspace / "src" / "main.rs").read_text().split("\n").index("    let mut store = Store::new();")
        drive = subprocess.run(["node", str(E2E / "ghost_text.cjs")], capture_output=True, text=True, timeout=300,
                               env={**env, "NODE_PATH": str(CLIENT_CACHE / "node_modules"),
                                    "RUSTLE_E2E_URL": f"http://127.0.0.1:{port}/?folder={workspace}",
                                    "RUSTLE_E2E_FILE": "main.rs", "RUSTLE_E2E_LINE": str(line + 1),
                                    "RUSTLE_E2E_TYPE": typed})
    finally:
        os.killpg(server.pid, signal.SIGTERM)   # code-server, its extension host and our language server
        server.wait(timeout=30)
    assert drive.returncode == 0, drive.stderr[-2000:]
    result = json.loads(drive.stdout.strip().splitlines()[-1])
    assert "model rustle-small" in result["status"]["label"]
    ghost = result["ghost"]
    assert ghost.strip(), result
    assert result["after"][line] == "    " + typed + ghost        # Tab inserted exactly the ghost text
    assert result["ghostAfterTab"] == 0
    db = sqlite3.connect(cache / "rustle" / "feedback.sqlite")  # VS Code ran the item's accept command
    rows = db.execute("SELECT verdict, suggestion, line, character FROM feedback").fetchall()
    db.close()
    suggestion = "\n".join([ghost, *result["ghostLines"]])
    # the accepted item may be one VS Code asked for a few keystrokes back and kept showing as they were typed
    typed_line = "    " + typed
    assert any(verdict == "accept" and at_line == line and at <= len(typed_line)
               and text == typed_line[at:] + suggestion for verdict, text, at_line, at in rows), rows
