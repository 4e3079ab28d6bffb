"""C sources compiled on first use with the machine's C compiler for this CPU into a library kept in the user's
cache (keyed by the sources, the flags and the CPU): the CPU kernels (`library()`), and any other C the product
carries (`compiled()`: the index's Rust scanner). Where no compiler works, the library is None and every caller
keeps its Python path. RUSTLE_C_KERNELS=0 turns all of them off."""
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


def _build(target: Path, sources: tuple[Path, ...]) -> None:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError("no C compiler (cc) found")
    target.parent.mkdir(parents=True, exist_ok=True)
    # cc finds ld through PATH: a process started without one (an editor's bare environment, pytest-lsp's server)
    # searches where `which` did, instead of falling back to the Python path
    env = {**os.environ, "PATH": os.environ.get("PATH") or os.defpath}
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [Path(tmp) / f"{source.parent.name}-{source.stem}.o" for source in sources]
        lib = Path(tmp) / "library.so"
        for command in ([*([compiler, *COMPILE, "-c", str(s), "-o", str(o)] for s, o in zip(sources, objects))]
                        + [[compiler, *map(str, objects), *LINK, "-o", str(lib)]]):
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                raise OSError(f"{' '.join(command)}: {done.stderr.strip()}")
        os.replace(lib, target)          # atomic: another process may be building the same library


@lru_cache(maxsize=None)
def compiled(name: str, sources: tuple[Path, ...], headers: tuple[Path, ...] = ()) -> ctypes.CDLL | None:
    """The library `name` built from `sources` (now, if this machine has not built these sources before), or None."""
    if os.environ.get("RUSTLE_C_KERNELS", "1") == "0":
        return None
    digest = hashlib.blake2b(digest_size=8)
    for part in (*(s.read_bytes() for s in sources + headers), " ".join(COMPILE + LINK).encode(),
                 _machine().encode()):
        digest.update(part)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rustle" / "kernels"
    target = cache / f"{name}-{digest.hexdigest()}.so"
    try:
        if not target.exists():
            _build(target, sources)
        return ctypes.CDLL(str(target))
    except OSError as err:
        log.warning("the C library '%s' is unavailable, using the Python path: %s", name, err)
        return None


def library() -> ctypes.CDLL | None:
    """The compiled CPU kernels, or None (PyTorch's ops then)."""
    return compiled("kernels", tuple(SOURCES), tuple(HEADERS))


def declare(**functions: tuple[list, object]) -> ctypes.CDLL | None:
    """The library with each named function's (argument types, result type) set, or None where there is none."""
    lib = library()
    if lib is not None:
        for name, (arguments, result) in functions.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = arguments, result
    return lib
