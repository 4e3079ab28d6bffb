import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():   # the Triton kernels run under the interpreter on CPU tensors (test_flash.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from assistant.lab.corpus.build import BuildConfig, build
from assistant.lab.corpus.split import SplitConfig

ROOT = Path(__file__).resolve().parent.parent


def save_tiny_model(out: Path, layer_pattern: tuple[str, ...] = ("gdn", "swa", "gdn", "lql")) -> Path:
    """A tiny random model with the shipped tokenizer, saved as a model folder (engine and state tests)."""
    import torch

    from model.config import ModelConfig
    from model.io import save_model
    from model.model import RustleLM
    from tokenizer import DEFAULT_TOKENIZER

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                         layer_pattern=layer_pattern, window=64, gdn_heads=2, gdn_head_dim=16, chunk_size=16,
                         lql_dim=16, lql_heads=1)
    save_model(RustleLM(config), out, DEFAULT_TOKENIZER)
    return out


@pytest.fixture
def rustle():
    """Run the installed `rustle` console script as a user would."""
    import subprocess

    exe = Path(sys.executable).parent / "rustle"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "COLUMNS": "200"}, timeout=900)
        if check and proc.returncode != 0:
            raise AssertionError(f"rustle {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


SOURCE = '''use std::collections::HashMap;

/// Counts words.
pub fn count_{i}(text: &str) -> HashMap<&str, usize> {{
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {{
        *counts.entry(word).or_insert(0) += {i};
    }}
    counts
}}
'''


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repos")
    for c in range(8):
        crate = root / f"crate{c}"
        (crate / "src").mkdir(parents=True)
        (crate / "Cargo.toml").write_text(f'[package]\nname = "crate{c}"\nversion = "0.1.0"\n')
        for f in range(3):
            (crate / "src" / f"m{f}.rs").write_text(SOURCE.format(i=c * 10 + f) + f"// crate {c} file {f}\n" * (c + f))
    out = tmp_path_factory.mktemp("corpus")
    build(BuildConfig(out=out, repos=[root], split=SplitConfig(validation=0.5, test=0.0)))
    return out
