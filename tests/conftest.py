import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rustle():
    """Run the installed `rustle` console script as a user would."""
    import subprocess

    exe = Path(sys.executable).parent / "rustle"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "COLUMNS": "200"}, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"rustle {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run
