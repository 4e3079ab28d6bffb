"""Debian's `librust-*-dev` packages as a corpus source: download (resumable) and extract; and Debian's `rust-src`,
the Rust tree itself (the standard library and the compiler)."""
from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_PATTERN = "^librust-.*-dev$"
REGISTRY = Path("usr/share/cargo/registry")
RUST_SRC = "rust-src"
RUST_SRC_PARTS = ("library", "compiler")   # not src/test (UI tests of compiler errors) nor src/doc, src/tools
RUST_SRC_LICENSE = "MIT OR Apache-2.0"     # the Rust tree's (Debian's copyright file for rust-src)
BATCH = 100  # apt-get's per-package overhead dominates; batching names makes the download ~3 minutes


@dataclass
class FetchReport:
    packages: int = 0
    downloaded: int = 0
    already_had: int = 0
    failed: list[str] = field(default_factory=list)
    extracted: int = 0
    extract_failed: int = 0


def list_packages() -> list[str]:
    """Names of every `librust-*-dev` package the apt cache knows, sorted."""
    out = subprocess.run(
        ["apt-cache", "search", "--names-only", PACKAGE_PATTERN],
        check=True, capture_output=True, text=True,
    ).stdout
    return sorted({line.split(" ", 1)[0] for line in out.splitlines() if line.strip()})


def _package_of(deb: Path) -> str:
    return deb.name.split("_", 1)[0]


def download(names: list[str], debs: Path, report: FetchReport,
             advance: Callable[[int], None] = lambda n: None) -> None:
    """`apt-get download` every name not already in `debs`; failures are counted, not fatal. `report` adds up
    over calls (the crates, then rust-src)."""
    debs.mkdir(parents=True, exist_ok=True)
    have = {_package_of(p) for p in debs.glob("*.deb")}
    todo = [n for n in names if n not in have]
    report.packages, report.already_had = report.packages + len(names), report.already_had + len(names) - len(todo)
    advance(len(names) - len(todo))
    for i in range(0, len(todo), BATCH):
        batch = todo[i:i + BATCH]
        if _apt_download(batch, debs):
            report.downloaded += len(batch)
        else:  # one bad name fails the whole batch: retry one by one to find it
            for name in batch:
                if _apt_download([name], debs):
                    report.downloaded += 1
                else:
                    report.failed.append(name)
        advance(len(batch))


def _apt_download(names: list[str], cwd: Path) -> bool:
    proc = subprocess.run(["apt-get", "download", "-q", *names], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("apt-get download failed for %d package(s): %s", len(names), proc.stderr.strip()[-300:])
    return proc.returncode == 0


def extract(debs: Path, dest: Path, report: FetchReport,
            advance: Callable[[int], None] = lambda n: None) -> Path:
    """`dpkg -x` each package once (a stamp file makes this resumable); returns the cargo registry folder."""
    dest.mkdir(parents=True, exist_ok=True)
    stamps = dest / "extracted.txt"
    done = set(stamps.read_text().split()) if stamps.exists() else set()
    with stamps.open("a") as stamp_file:
        for deb in sorted(debs.glob("*.deb")):
            if deb.name not in done:
                proc = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True)
                if proc.returncode == 0:
                    stamp_file.write(deb.name + "\n")
                    stamp_file.flush()
                    report.extracted += 1
                else:  # most likely a download cut short: remove it so the next run fetches it again
                    log.warning("cannot extract %s (%s); removed, rerun to fetch it again",
                                deb.name, proc.stderr.strip()[-200:])
                    deb.unlink(missing_ok=True)
                    report.extract_failed += 1
            advance(1)
    return dest / REGISTRY


def rust_src(dest: Path, report: FetchReport) -> list[Path]:
    """Download and extract `rust-src` (once); the folders of its tree that the corpus takes."""
    debs, root = dest / "debs", dest / "root"
    download([RUST_SRC], debs, report)
    extract(debs, root, report)
    trees = sorted((root / "usr" / "src").glob("rustc-*"))
    return [trees[-1] / part for part in RUST_SRC_PARTS if (trees[-1] / part).is_dir()] if trees else []
