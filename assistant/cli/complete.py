"""`rustle complete FILE:LINE:COL` and `rustle eval lines TASKS.jsonl`."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from model import DEFAULT_MODEL

from .console import console, table


def find_root(path: Path) -> Path:
    """The outermost folder above `path` holding a Cargo.toml (a workspace), else the file's folder."""
    root = None
    for folder in path.resolve().parents:
        if (folder / "Cargo.toml").is_file():
            root = folder
        if (folder / ".git").exists():
            break
    return root or path.resolve().parent


def parse_location(location: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL (1-based) → (path, 0-based line, 0-based column)."""
    try:
        file, line, col = location.rsplit(":", 2)
        line_n, col_n = int(line), int(col)
    except ValueError:
        raise ValueError(f"'{location}' is not FILE:LINE:COL (line and column from 1)") from None
    if line_n < 1 or col_n < 1:
        raise ValueError(f"'{location}': line and column count from 1")
    return Path(file), line_n - 1, col_n - 1


COPY_FLAGS = ("n_min", "weight_per_token", "max_weight")   # the copy model's mixing (engine/copy.py: CopyConfig)


def _engine_config(args: argparse.Namespace):
    from ..engine.engine import EngineConfig, with_context

    config = with_context(EngineConfig(max_ms=args.max_ms, repo_tokens=args.repo_tokens), args.context,
                          copy=not args.no_copy)
    copy = replace(config.copy, **{name: getattr(args, f"copy_{name}") for name in COPY_FLAGS
                                   if getattr(args, f"copy_{name}") is not None})
    return replace(with_guide(with_prompt(config, args), args), copy_draft=config.copy_draft and not args.no_draft,
                   copy=copy)


def with_guide(config, args: argparse.Namespace):
    """`config` (an EngineConfig) with the index-guided decoding given on the command line (`guide_arguments`)."""
    return replace(config, guide=replace(config.guide, enabled=not args.no_guide, bare=args.guide_bare,
                                         **({"boost": args.guide_boost} if args.guide_boost is not None else {})))


def guide_arguments(p: argparse.ArgumentParser) -> None:
    """Index-guided decoding (assistant/engine/guide.py: GuideConfig); default: the engine's."""
    p.add_argument("--no-guide", action="store_true", help="no steering toward the index's names")
    p.add_argument("--guide-bare", action="store_true", help="steer bare names too, not only after `.` and `::`")
    p.add_argument("--guide-boost", type=float, default=None, help="nats added to tokens continuing a known name")


def with_prompt(config, args: argparse.Namespace):
    """`config` (an EngineConfig) with the prompt layout, budgets and dtype given on the command line."""
    prompt = replace(config.prompt, **{name: getattr(args, name) for name in PROMPT_FLAGS
                                       if getattr(args, name) is not None})
    return replace(config, prompt=prompt, dtype=args.dtype, device=args.device)


PROMPT_FLAGS = ("layout", "prefix_tokens", "suffix_tokens", "window_lines", "anchor_lines", "head_tokens",
                "tail_tokens", "similar_tokens")


def prompt_arguments(p: argparse.ArgumentParser) -> None:
    """The engine's prompt and dtype settings (assistant/engine/prompt.py: PromptConfig); default: the engine's."""
    p.add_argument("--layout", choices=("spm", "psm", "prefix"), default=None, help="the buffer's layout in the prompt")
    p.add_argument("--prefix-tokens", type=int, default=None, help="token budget of the text before the cursor")
    p.add_argument("--suffix-tokens", type=int, default=None, help="token budget of the text after the cursor")
    p.add_argument("--window-lines", type=int, default=None, help="the prefix starts on a multiple of these lines")
    p.add_argument("--anchor-lines", type=int, default=None, help="a snapshot every this many prefix lines")
    p.add_argument("--head-tokens", type=int, default=None,
                   help="spm: token budget of the buffer before the prefix window, a file before the window")
    p.add_argument("--tail-tokens", type=int, default=None,
                   help="spm: token budget of the buffer after the suffix window, in that file too")
    p.add_argument("--similar-tokens", type=int, default=None,
                   help="repo, spm: token budget of the code most like the lines above the cursor (0: none)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="weights and activations (auto: bf16 on a GPU, fp32 on a CPU; model/precision.py)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the model and its kernels on the GPU")


def complete_command(args: argparse.Namespace) -> int:
    from ..engine.engine import Engine, Request

    try:
        path, line, col = parse_location(args.location)
        text = path.read_text(encoding="utf-8")
    except (ValueError, OSError, UnicodeDecodeError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    lines = text.split("\n")
    if line >= len(lines) or col > len(lines[line]):
        console.print(f"[red]{args.location}: past the end of the file[/] ({len(lines)} lines; "
                      f"line {min(line, len(lines) - 1) + 1} has {len(lines[min(line, len(lines) - 1)])} characters)")
        return 2
    root = (args.root or find_root(path)).resolve()
    try:
        relative = path.resolve().relative_to(root).as_posix()
    except ValueError:
        console.print(f"[red]{path} is not inside the workspace {root}[/]")
        return 2
    offset = sum(len(x) + 1 for x in lines[:line]) + col
    # context repo: the repository part as the server keeps it, read from the state saved on disk by an earlier run
    # (or by the server) where it still holds, else prefilled and saved, so that a second run does not feed it again
    # (the part of the other contexts depends on the cursor: the foreground engine feeds it with the request)
    repo = args.context == "repo"
    engine = Engine(args.model, replace(_engine_config(args), background=repo, persist=repo))
    started = time.perf_counter()
    engine.prepare(root, relative)
    ready = {"repository_ms": 1000 * (time.perf_counter() - started), "repository_computed": engine.prefill.fed}
    completion = engine.complete_sync(Request(root, relative, text, offset))
    if args.json:
        print(json.dumps(asdict(completion) | ready))
    else:
        console.print(completion.text, markup=False, highlight=False)
        part = (f"; the repository part ready in {ready['repository_ms'] / 1000:.1f} s "
                f"({ready['repository_computed']:,} tokens computed, the rest from the saved state)"
                if repo else "")
        console.print(f"[dim]{completion.ms:.0f} ms, {completion.generated_tokens} tokens in "
                      f"{completion.forward_steps} steps, stopped by {completion.stopped}{part}[/]", highlight=False)
    return 0


def lines_command(args: argparse.Namespace) -> int:
    from ..engine.engine import Engine, Request
    from ..lab.eval.lines import load_tasks, run, saved_before_typing, summary

    try:
        tasks = load_tasks(args.tasks, args.limit)
    except (OSError, ValueError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    if args.after_lines_above < 0 or (args.after_lines_above and not args.served):
        console.print("[red]--after-lines-above N (N >= 0) asks how the server serves a cursor that moved: add "
                      "--served[/]")
        return 2
    config = replace(_engine_config(args), background=args.served)
    models = None if args.finetune is None else _repository_models(args, tasks)
    engines = {}
    work = {"generated_tokens": 0, "forward_steps": 0}

    def complete(task, buffer: str, offset: int) -> tuple[str, float]:
        model = args.model if models is None else models.model(task.root)
        if model not in engines:   # one engine at a time: a fine-tuned model serves its repository's tasks
            for done in engines.values():
                done.prefill.close()   # a background worker left running would keep its model alive
            engines.clear()
            engines[model] = Engine(model, config)
        engine = engines[model]
        saved = saved_before_typing(buffer, offset) if args.saved == "before" else buffer
        if args.served:   # the document was just opened (the last task's part, with this line in it, is not served)
            engine.prefill.forget(engine.workspace(task.root).root)
            engine.prefill_repository(task.root, task.path, saved)
            engine.prefill.wait()
        above = offset
        for _ in range(args.after_lines_above):
            above = buffer.rfind("\n", 0, above) if above > 0 else -1
        if args.after_lines_above and above >= 0:   # then a request there came first, before this line was typed
            engine.complete_sync(Request(task.root, task.path, saved, above, overrides={task.path: saved}))
            engine.prefill.wait()
        c = engine.complete_sync(Request(task.root, task.path, buffer, offset, overrides={task.path: saved}))
        # served: the request took the repository part the state tree held; the part it asked for is prefilled
        # now, while a user would read the suggestion (outside the task's time, as in the editor)
        engine.prefill.wait()
        work["generated_tokens"] += c.generated_tokens
        work["forward_steps"] += c.forward_steps
        return c.text, c.ms

    results = []
    for result in run(tasks, complete):
        results.append(result)
        if args.verbose_rows:
            print(json.dumps(asdict(result)), flush=True)  # one JSON line per task: greppable, never wrapped
    report = summary(results) | {"context": args.context, "saved": args.saved, "served": args.served,
                                 "after_lines_above": args.after_lines_above,
                                 "copy_model": not args.no_copy,
                                 "copy_drafts": config.copy_draft, "guide": asdict(config.guide),
                                 "finetuned": None if models is None else {"kept_base": models.skipped},
                                 **work}
    if args.json:
        print(json.dumps(report))
    else:
        console.print(table(f"Line completion, context {args.context}, saved {args.saved}, "
                            f"{'served' if args.served else 'foreground'}, "
                            f"copy model {'off' if args.no_copy else 'on'}",
                            ["kind", "n", "exact match", "edit similarity", "p50 ms", "mean ms"],
                            [[k, b["n"], b["exact_match"], b["edit_similarity"], b["p50_ms"], b["mean_ms"]]
                             for k, b in [("all", report), *report["by_kind"].items()]]))
    return 0


def _repository_models(args: argparse.Namespace, tasks: list):
    """Each task repository's model: `args.model` fine-tuned there by `rustle finetune` (lab/eval/adapt.py)."""
    from ..lab.eval.adapt import RepositoryModels
    from ..lab.train.finetune import FinetuneConfig

    return RepositoryModels(tasks, args.model, args.finetune, FinetuneConfig(repos=[], out=args.finetune))


def _engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context", choices=("none", "local", "index", "repo"), default="repo",
                   help="where context comes from (default: the whole repository)")
    p.add_argument("--no-copy", action="store_true", help="turn the repository copy model off")
    p.add_argument("--no-draft", action="store_true", help="keep the copy model's mixing, drop its drafts")
    guide_arguments(p)
    p.add_argument("--copy-n-min", type=int, default=None, help="the copy model's shortest match, in tokens")
    p.add_argument("--copy-weight-per-token", type=float, default=None,
                   help="the copy distribution's mixing weight per matched token beyond the shortest")
    p.add_argument("--copy-max-weight", type=float, default=None, help="the copy distribution's largest mixing weight")
    p.add_argument("--max-ms", type=float, default=4000.0, help="decoding time limit per suggestion")
    p.add_argument("--repo-tokens", type=int, default=131072, help="token budget of the repository context")
    prompt_arguments(p)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("complete", help="complete at FILE:LINE:COL (1-based), with the workspace as context")
    p.add_argument("location", metavar="FILE:LINE:COL")
    p.add_argument("--root", type=Path, default=None, help="workspace root (default: the outermost Cargo.toml)")
    _engine_arguments(p)
    p.set_defaults(run=complete_command)
    p = commands.add_parser("demo", help="index a workspace and show completions at a few cursors, with latency")
    p.add_argument("root", type=Path, nargs="?", default=Path("data/workspace"))
    _engine_arguments(p)
    p.set_defaults(run=demo_command)


def register_eval(group: argparse._SubParsersAction) -> None:
    p = group.add_parser("lines", help="line completion tasks (data/eval/README.md): exact match, similarity")
    p.add_argument("tasks", type=Path, metavar="TASKS.jsonl")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--rows", dest="verbose_rows", action="store_true", help="print every task's result as a JSON line")
    p.add_argument("--saved", choices=("before", "cut"), default="before",
                   help="what the task's file holds on disk: the file before its line was typed (the contract), "
                        "or the buffer cut at the cursor, as auto-save leaves it")
    p.add_argument("--served", action="store_true",
                   help="as the language server serves: a request never waits for the repository part; it is "
                        "prefilled in the background after each task (outside its time)")
    p.add_argument("--after-lines-above", type=int, default=0, metavar="N",
                   help="with --served: each task's request follows one at the end of the line N lines above, "
                        "in the document as saved, prefilled in full (1: the user pressed Enter there; 40: the "
                        "cursor came from further up)")
    p.add_argument("--finetune", type=Path, default=None, metavar="DIR",
                   help="first fine-tune the model on each task repository's other files, as `rustle finetune` "
                        "does, and complete its tasks with that model; the models and their logs are kept in DIR")
    _engine_arguments(p)
    p.set_defaults(run=lines_command)
    p = group.add_parser("make-lines", help="a line-completion task set from the corpus's held-out crates")
    p.add_argument("--corpus", type=Path, default=Path("corpus"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--crates", type=int, default=25)
    p.add_argument("--per-kind", type=int, default=2, help="tasks of each kind per crate")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--exclude", type=Path, default=None,
                   help="leave out the crates of this task set (a confirmation set beside the dev set)")
    p.set_defaults(run=make_lines_command)


def make_lines_command(args: argparse.Namespace) -> int:
    import random
    import tempfile

    from ..lab.eval.make_lines import crate_tasks, test_crates

    roots = test_crates(args.corpus)
    if args.exclude is not None:
        try:
            taken = {Path(json.loads(line)["root"]).name for line in args.exclude.read_text().splitlines() if line}
        except (OSError, ValueError, KeyError, TypeError) as err:
            console.print(f"[red]--exclude {args.exclude}: not a task set ({err})[/]")
            return 2
    else:
        taken = set()
    if not roots:
        console.print(f"[red]no test-split crates in {args.corpus}[/]: build the corpus first")
        return 2
    rng = random.Random(args.seed)
    rng.shuffle(roots)
    tasks = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, root in enumerate(roots[:args.crates]):
            made = list(crate_tasks(root, Path(tmp) / f"{n}.sqlite", rng, args.per_kind))
            tasks += made if root.name not in taken else []     # drawn all the same: the rest stays as it was
    cwd = Path.cwd()
    for t in tasks:  # portable between checkouts: corpus roots relative to the working directory
        if Path(t["root"]).is_relative_to(cwd):
            t["root"] = str(Path(t["root"]).relative_to(cwd))
    tasks.sort(key=lambda t: (t["root"], t["path"], t["line"]))  # neighbours share the prefilled state
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    kinds = {k: sum(t["kind"] == k for t in tasks) for k in ("line", "mid", "xfile")}
    console.print(f"{len(tasks)} tasks from {len({t['root'] for t in tasks})} crates {kinds} → {args.out}")
    return 0


DEMO_CURSORS = [  # (file, the line's text up to the cursor): the rest of that line is what the user has yet to type
    ("src/main.rs", "    let mut store = "),
    ("src/store.rs", "        self.entries."),
    ("src/lib.rs", "        Ok(Command::Len) => "),
    ("src/command.rs", "            let key = words.next()."),
]


def demo_command(args: argparse.Namespace) -> int:
    """Index the bundled workspace and complete at a few cursors, as an editor would, with latencies."""
    from ..engine.engine import Engine, Request
    from ..lab.eval.lines import saved_before_typing

    root = args.root.resolve()
    engine = Engine(args.model, _engine_config(args))
    summary = engine.workspace(root).index(on_message=console.print)
    console.print(f"indexed {root}: {summary.files} files, {summary.definitions} definitions "
                  f"in {1000 * summary.seconds:.0f} ms")
    rows = []
    for path, typed in DEMO_CURSORS:
        text = (root / path).read_text(encoding="utf-8")
        start = text.find("\n" + typed)
        if start < 0:
            continue
        offset = start + 1 + len(typed)
        end = text.find("\n", offset)
        buffer = text[:offset] + text[end:]
        request = Request(root, path, buffer, offset, overrides={path: saved_before_typing(buffer, offset)})
        cold = engine.complete_sync(request)
        warm = engine.complete_sync(request)
        rows.append([f"{path}: {typed.strip()}", cold.text.split("\n")[0], text[offset:end],
                     f"{cold.ms:.0f}", f"{warm.ms:.0f}"])
    console.print(table(f"Completions from {args.model.name} ({args.context} context)",
                        ["cursor", "suggestion", "original", "cold ms", "warm ms"], rows))
    return 0
