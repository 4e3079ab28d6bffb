"""Finding `.rs` files: crate folders of the Debian registry and local repositories (honouring .gitignore)."""
from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

log = logging.getLogger(__name__)

SKIP_DIRS = {".git", "target", ".hg", ".svn", "node_modules"}


@dataclass(frozen=True)
class SourceFile:
    source: str   # "debian" or the local repository's folder name
    crate: str
    version: str
    license: str
    path: str     # relative to the crate's root
    abspath: str


@dataclass(frozen=True)
class Crate:
    name: str
    version: str
    license: str


def read_crate(manifest: Path) -> Crate:
    """Name, version and license from a Cargo.toml; the folder name where the file says nothing."""
    try:
        package = tomllib.loads(manifest.read_text(encoding="utf-8")).get("package", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        log.warning("unreadable %s: %s", manifest, err)
        package = {}

    def text(key: str, default: str) -> str:
        value = package.get(key, default)
        return value if isinstance(value, str) else "workspace"  # `key.workspace = true`

    license = text("license", "") or (f"file:{text('license-file', '')}" if "license-file" in package else "unknown")
    return Crate(text("name", manifest.parent.name), text("version", "0.0.0"), license)


def walk_rust_files(root: Path) -> Iterator[Path]:
    """Every `.rs` file under `root`, sorted, honouring nested .gitignore files.

    Symlinked folders are never entered (no loops, no escape from `root`); symlinked files count
    only when they point inside `root` at a regular file.
    """
    root = root.resolve()
    ignores: list[tuple[Path, pathspec.PathSpec]] = []

    def ignored(path: Path, is_dir: bool) -> bool:
        for base, spec in ignores:
            if base in path.parents:
                rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
                if spec.match_file(rel):
                    return True
        return False

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=lambda e: log.warning("%s", e)):
        here = Path(dirpath)
        gitignore = here / ".gitignore"
        if gitignore.is_file():
            try:
                lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
                ignores.append((here, pathspec.GitIgnoreSpec.from_lines(lines)))
            except OSError as err:
                log.warning("cannot read %s: %s", gitignore, err)
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not (here / d).is_symlink() and not ignored(here / d, True))
        for name in sorted(filenames):
            path = here / name
            if not name.endswith(".rs") or ignored(path, False) or not path.is_file():
                continue  # is_file: no FIFOs or sockets (an open() would block), no dangling links
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if root not in target.parents or not target.is_file():
                    log.info("skipping symlink %s -> %s", path, target)
                    continue
            yield path


def crate_files(crate_dir: Path, source: str) -> Iterator[SourceFile]:
    """The `.rs` files of one crate folder (a folder holding Cargo.toml)."""
    crate = read_crate(crate_dir / "Cargo.toml")
    for path in walk_rust_files(crate_dir):
        yield SourceFile(source, crate.name, crate.version, crate.license,
                         path.relative_to(crate_dir.resolve()).as_posix(), str(path))


def repository_files(repo: Path, source: str | None = None, license: str = "unknown") -> Iterator[SourceFile]:
    """The `.rs` files of a local repository, each credited to its nearest enclosing Cargo package; `source`
    names where they came from (default: the folder's name), `license` stands where a Cargo.toml names none."""
    repo = repo.resolve()
    source = source or repo.name
    crates: dict[Path, Crate] = {}
    for path in walk_rust_files(repo):
        inside = [d for d in path.parents if d == repo or repo in d.parents]
        package_dir = next((d for d in inside if (d / "Cargo.toml").is_file()), repo)
        if package_dir not in crates:
            manifest = package_dir / "Cargo.toml"
            crate = read_crate(manifest) if manifest.is_file() else Crate(repo.name, "0.0.0", "unknown")
            unnamed = crate.license in ("unknown", "workspace")     # none, or the workspace's (not read here)
            crates[package_dir] = Crate(crate.name, crate.version, license) if unnamed else crate
        crate = crates[package_dir]
        yield SourceFile(source, crate.name, crate.version, crate.license,
                         path.relative_to(package_dir).as_posix(), str(path))
