"""`rustle corpus build`: sources → filters → manifest → crate split → JSONL text shards.

Every stage can be interrupted and rerun: downloads and extraction skip what is done, the filter
stage skips files already in the manifest, and splits and shards are rebuilt from the manifest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from . import debian, pypi
from .filters import FilterConfig, NearDuplicates, examine
from .manifest import Manifest
from .sources import SourceFile, crate_files, repository_files
from .split import SplitConfig

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


class Reporter(Protocol):
    def stage(self, name: str, total: int | None) -> Callable[[int], None]:
        """Start a stage; returns a function that advances it."""


class Silent:
    def stage(self, name: str, total: int | None) -> Callable[[int], None]:
        return lambda n: None


@dataclass
class BuildConfig:
    out: Path
    debian: bool = False
    rust_src: bool = False               # Debian's rust-src: the standard library and the compiler, train split only
    sdists: tuple[pypi.Sdist, ...] = ()  # PyPI source distributions (pypi.SDISTS: --pypi), train split only
    repos: list[Path] = field(default_factory=list)
    filters: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shard_bytes: int = 64 << 20
    workers: int = os.cpu_count() or 1


@dataclass
class BuildSummary:
    seconds: float
    fetch: debian.FetchReport | None
    sdists: pypi.PypiReport | None
    splits: list[tuple[str, int, int, int]]
    sources: list[tuple[str, str, int, int, int]]      # (source, split, crates, files, bytes) of kept files
    dropped: list[tuple[str, int, int]]
    shards: list[str]


def build(config: BuildConfig, reporter: Reporter = Silent()) -> BuildSummary:
    start = time.monotonic()
    config.out.mkdir(parents=True, exist_ok=True)
    fetch, crate_dirs = None, []
    if config.debian:
        fetch = debian.FetchReport()
        names = debian.list_packages()
        debian.download(names, config.out / "debian" / "debs", fetch, reporter.stage("download packages", len(names)))
        debs = config.out / "debian" / "debs"
        registry = debian.extract(debs, config.out / "debian" / "root", fetch,
                                  reporter.stage("extract packages", len(list(debs.glob("*.deb")))))
        crate_dirs = sorted(d for d in registry.iterdir() if (d / "Cargo.toml").is_file()) if registry.is_dir() else []
    rust_trees = debian.rust_src(config.out / debian.RUST_SRC, fetch or debian.FetchReport()) if config.rust_src else []
    sdists = pypi.PypiReport() if config.sdists else None
    sdist_trees = pypi.sdist_trees(config.out / pypi.SOURCE, config.sdists, sdists,
                                   reporter.stage("PyPI sdists", len(config.sdists))) if sdists else []

    files = sorted(_sources(crate_dirs, rust_trees, sdist_trees, config.repos), key=_order)
    manifest = Manifest(config.out / "manifest.sqlite")
    try:
        _filter(files, manifest, config, reporter)
        # rust-src's and PyPI's crates are for training only, so the held-out crates the evaluations read stay as
        # they were: their files of a crate name that another source holds out are dropped, so nothing leaks
        manifest.assign_splits(config.split, train_only={debian.RUST_SRC, pypi.SOURCE})
        shards = _write_shards(manifest, config, reporter)
        manifest.set_meta("config", json.dumps(asdict(config), default=str))
        return BuildSummary(time.monotonic() - start, fetch, sdists, manifest.split_counts(), manifest.source_counts(),
                            manifest.drop_counts(), shards)
    finally:
        manifest.close()


def _sources(crate_dirs: list[Path], rust_trees: list[Path], sdist_trees: list[tuple[Path, pypi.Sdist]],
             repos: list[Path]) -> Iterator[SourceFile]:
    for crate_dir in crate_dirs:
        yield from crate_files(crate_dir, "debian")
    for tree in rust_trees:
        yield from repository_files(tree, debian.RUST_SRC, debian.RUST_SRC_LICENSE)
    for tree, sdist in sdist_trees:
        yield from repository_files(tree, pypi.SOURCE, sdist.license)
    for repo in repos:
        yield from repository_files(repo)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _order(f: SourceFile) -> tuple:
    # Newest version of a crate first, so that near-duplicate removal keeps the newest copy.
    return (f.source != "debian", f.source, f.crate, tuple(-k for k in _version_key(f.version)), f.path)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _filter(files: list[SourceFile], manifest: Manifest, config: BuildConfig, reporter: Reporter) -> None:
    seen = manifest.seen()
    todo = [f for f in files if f.abspath not in seen]
    kept_hashes: set[str] = set()
    near = NearDuplicates(config.filters.near_duplicate_threshold)
    for abspath, sha, signature in manifest.kept_signatures():  # resume: rebuild the indexes
        kept_hashes.add(sha)
        near.seen_or_add(abspath, signature)
    advance = reporter.stage("filter files", len(files))
    advance(len(files) - len(todo))
    with multiprocessing.Pool(config.workers, initializer=_ignore_sigint) as pool:
        results = pool.imap(partial(examine, config=config.filters), [f.abspath for f in todo], chunksize=16)
        for i, (f, examined) in enumerate(zip(todo, results)):
            reason = examined.reason
            if reason is None and examined.sha256 in kept_hashes:
                reason = "exact_duplicate"
            elif reason is None and near.seen_or_add(f.abspath, examined.signature):
                reason = "near_duplicate"
            elif reason is None:
                kept_hashes.add(examined.sha256)
            manifest.add(f, examined, reason)
            if i % 256 == 0:
                manifest.commit()
            advance(1)
    manifest.commit()


def _write_shards(manifest: Manifest, config: BuildConfig, reporter: Reporter) -> list[str]:
    """JSONL shards per split, a crate's files together; written to temp names and renamed when whole."""
    shard_dir = config.out / "shards"
    shard_dir.mkdir(exist_ok=True)
    for old in shard_dir.glob("*.jsonl*"):
        old.unlink()
    total = sum(n for _, _, n, _ in manifest.split_counts())
    advance = reporter.stage("write shards", total)
    written: list[str] = []
    for split in SPLITS:
        index, size, out = 0, 0, None
        for row in manifest.kept(split):
            try:
                data = Path(row["abspath"]).read_bytes()
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                data = b""
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                manifest.drop(row["abspath"], "changed_during_build")
                advance(1)
                continue
            if out is None or size >= config.shard_bytes:
                if out is not None:
                    written.append(_finish(out))
                out, size = (shard_dir / f"{split}-{index:05d}.jsonl.tmp").open("w", encoding="utf-8"), 0
                index += 1
            record = {k: row[k] for k in ("source", "crate", "version", "license", "path")} | {"text": text}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            size += row["bytes"]
            advance(1)
        if out is not None:
            written.append(_finish(out))
    manifest.commit()
    return written


def _finish(handle) -> str:
    handle.close()
    final = Path(handle.name).with_suffix("")
    os.replace(handle.name, final)
    return final.name
