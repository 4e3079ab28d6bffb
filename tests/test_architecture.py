"""The dependency rules of ARCHITECTURE.md hold: import-linter's contracts (pyproject.toml) over the real code,
and the same contracts catch a rule broken on purpose in a copy of it."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assistant", "lsp", "model", "kernels", "tokenizer")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_the_code_keeps_every_dependency_rule():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_broken_rule_is_caught(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.json", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    state = tmp_path / "assistant" / "engine" / "state.py"
    state.write_text(state.read_text() + "\nimport sqlite3  # noqa\nfrom ..lab.train import loop  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "The engine issues no SQL" in done.stdout and "BROKEN" in done.stdout
    assert "assistant.engine.state -> assistant.lab.train.loop" in done.stdout


def test_the_server_and_the_cli_start_without_the_compiler():
    """On a machine without a GPU nothing on the way to a suggestion imports torch._dynamo (~2 s of every start):
    kernels/compile.py leaves the Triton entry points undecorated there, and loading a model counts its
    parameters on the meta device without running initialisers (model.py: `_ShapesOnly`)."""
    import os

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU machine imports the compiler for the Triton kernels")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    probe = ("import sys, lsp.server, assistant.cli.main; from model import DEFAULT_MODEL; "
             "from model.io import load_model; load_model(DEFAULT_MODEL); print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_cli_module_loads_no_torch():
    """`rustle index` spawns worker processes, and each imports the `rustle` script's module again: with torch among
    its imports (~3.5 s here) every worker started that much later, a third of a fill of the Debian crate tree."""
    probe = "import sys, assistant.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
