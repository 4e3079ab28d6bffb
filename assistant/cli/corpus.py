"""`rustle corpus build`."""
from __future__ import annotations

import argparse
import errno
import sqlite3
from pathlib import Path

from .console import RichReporter, console, table


def corpus_build(args: argparse.Namespace) -> int:
    from ..lab.corpus.build import BuildConfig, build
    from ..lab.corpus.filters import FilterConfig
    from ..lab.corpus.pypi import SDISTS
    from ..lab.corpus.split import SplitConfig

    if not args.debian and not args.rust_src and not args.pypi and not args.paths:
        console.print("[red]nothing to build from:[/] pass --debian, --rust-src, --pypi and/or repository paths")
        return 2
    missing = [p for p in args.paths if not p.is_dir()]
    if missing:
        console.print(f"[red]not a folder:[/] {', '.join(map(str, missing))}")
        return 2
    config = BuildConfig(out=args.out, debian=args.debian, rust_src=args.rust_src, repos=args.paths,
                         sdists=SDISTS if args.pypi else (),
                         workers=args.workers,
                         filters=FilterConfig(max_bytes=args.max_bytes),
                         split=SplitConfig(seed=args.seed, validation=args.validation, test=args.test))
    try:
        with RichReporter() as reporter:
            summary = build(config, reporter)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] finished work is saved; run the same command again to resume")
        return 130
    except (OSError, sqlite3.OperationalError) as err:
        if getattr(err, "errno", None) == errno.ENOSPC or "disk is full" in str(err):
            console.print(f"[red]disk full[/] under {args.out}: free some space and rerun; finished work is kept")
            return 1
        raise
    if summary.fetch:
        f = summary.fetch
        console.print(table("Debian packages", ["packages", "already here", "downloaded", "failed", "extracted",
                                                "extract failed"],
                            [[f.packages, f.already_had, f.downloaded, len(f.failed), f.extracted,
                              f.extract_failed]]))
    if summary.sdists:
        s = summary.sdists
        console.print(table("PyPI sdists", ["sdists", "already here", "downloaded", "failed"],
                            [[s.sdists, s.already_had, s.downloaded, ", ".join(s.failed) or 0]]))
    console.print(table("Kept files by split", ["split", "crates", "files", "bytes"], summary.splits))
    console.print(table("Kept files by source and split", ["source", "split", "crates", "files", "bytes"],
                        summary.sources))
    console.print(table("Dropped files", ["reason", "files", "bytes"], summary.dropped))
    console.print(f"{len(summary.shards)} shards in {args.out / 'shards'}; manifest {args.out / 'manifest.sqlite'}; "
                  f"{summary.seconds:.0f} s")
    return 0


def corpus_files(args: argparse.Namespace) -> int:
    from ..lab.corpus.manifest import Manifest

    path = args.corpus / "manifest.sqlite"
    if not path.is_file():
        console.print(f"[red]no corpus manifest {path}:[/] build one with `rustle corpus build`")
        return 2
    if args.every < 1:
        console.print("[red]--every must be at least 1[/]")
        return 2
    manifest = Manifest(path)
    try:
        files = [row["abspath"] for row in manifest.kept(args.split)][::args.every]
    finally:
        manifest.close()
    print("\n".join(files))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    corpus = commands.add_parser("corpus", help="build the Rust training corpus").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = corpus.add_parser("build", help="collect, filter, deduplicate and split .rs files into shards")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun with the same one to resume)")
    p.add_argument("--debian", action="store_true", help="download and add Debian's librust-*-dev crates")
    p.add_argument("--rust-src", action="store_true",
                   help="download and add Debian's rust-src (the standard library and the compiler; train split)")
    p.add_argument("--pypi", action="store_true",
                   help="download and add the Rust of pinned PyPI source distributions (ruff, uv, …; train split)")
    p.add_argument("paths", nargs="*", type=Path, help="local repositories to add (honouring .gitignore)")
    p.add_argument("--max-bytes", type=int, default=1_000_000, help="drop files larger than this")
    p.add_argument("--seed", type=int, default=1234, help="seed of the crate split")
    p.add_argument("--validation", type=float, default=0.05, help="share of crates for validation")
    p.add_argument("--test", type=float, default=0.05, help="share of crates for test")
    p.add_argument("--workers", type=int, default=2, help="processes reading and hashing files")
    p.set_defaults(run=corpus_build)
    p = corpus.add_parser("files", help="print the paths of one split's kept files (a held-out sample for eval)")
    p.add_argument("--corpus", type=Path, default=Path("corpus"), help="a folder made by `rustle corpus build`")
    p.add_argument("--split", choices=("train", "validation", "test"), default="test")
    p.add_argument("--every", type=int, default=1, help="keep every Nth file, in crate order (a fixed sample)")
    p.set_defaults(run=corpus_files)
