"""The CPU kernels' C sources, compiled on first use with the machine's C compiler for this CPU into one
library kept in the user's cache (keyed by the sources, the flags and the CPU). Where no compiler works,
`library()` is None and every caller keeps its PyTorch path."""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = [HERE / "attention" / "segments.c", HERE / "block" / "dense.c", HERE / "decode" / "step.c",
           HERE / "gdn" / "step.c", HERE / "linear" / "gemv.c"]
HEADERS = [HERE / "linear" / "gemv.h"]
COMPILE = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]   # -ffast-math for vectorised expf
LINK = ["-shared", "-fopenmp", "-lm"]   # not -ffast-math: that would set flush-to-zero for the whole process

log = logging.getLogger("rustle.kernels")


def _machine() -> str:
    """What -march=native compiles for: the CPU's model and flags."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return os.uname().machine
    return "\n".join(line for line in info.splitlines() if line.startswith(("model name", "flags")))


def _build(target: Path) -> None:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError("no C compiler (cc) found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [Path(tmp) / f"{source.parent.name}-{source.stem}.o" for source in SOURCES]
        lib = Path(tmp) / "kernels.so"
        for command in ([*([compiler, *COMPILE, "-c", str(s), "-o", str(o)] for s, o in zip(SOURCES, objects))]
                        + [[compiler, *map(str, objects), *LINK, "-o", str(lib)]]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise OSError(f"{' '.join(command)}: {done.stderr.strip()}")
        os.replace(lib, target)          # atomic: another process may be building the same library


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built now if this machine has not built these sources before), or None."""
    if os.environ.get("RUSTLE_C_KERNELS", "1") == "0":
        return None
    digest = hashlib.blake2b(digest_size=8)
    for part in (*(s.read_bytes() for s in SOURCES + HEADERS), " ".join(COMPILE + LINK).encode(),
                 _machine().encode()):
        digest.update(part)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rustle" / "kernels"
    target = cache / f"kernels-{digest.hexdigest()}.so"
    try:
        if not target.exists():
            _build(target)
        return ctypes.CDLL(str(target))
    except OSError as err:
        log.warning("the CPU kernels are unavailable, using PyTorch's: %s", err)
        return None


def declare(**functions: tuple[list, object]) -> ctypes.CDLL | None:
    """The library with each named function's (argument types, result type) set, or None where there is none."""
    lib = library()
    if lib is not None:
        for name, (arguments, result) in functions.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = arguments, result
    return lib
