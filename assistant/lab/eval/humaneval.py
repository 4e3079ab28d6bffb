"""HumanEval-Rust: complete each prompt, compile with rustc, run; pass@1 (greedy) and pass@k (unbiased).

The task contract is data/eval/README.md: program = prompt + completion + "\n" + tests; exit 0
passes; a compile error, a panic or a timeout fails. Every program builds in a temp dir of its own.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import comb
from pathlib import Path

Complete = Callable[[str, list[str], int], list[str]]  # (prompt, stop strings, n) -> n completions


@dataclass(frozen=True)
class Problem:
    name: str
    prompt: str
    tests: str
    stop: list[str]


def load_problems(path: Path, limit: int | None = None) -> list[Problem]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Problem(r["name"], r["prompt"], r["tests"], r["stop_tokens"]) for r in rows[:limit]]


def truncate(completion: str, stop: list[str]) -> str:
    """Cut at the first stop string (the function's closing brace starts the tests)."""
    cut = min((i for i in (completion.find(s) for s in stop) if i >= 0), default=len(completion))
    return completion[:cut]


def passes(problem: Problem, completion: str, timeout: float = 10.0) -> bool:
    """Compile and run prompt + completion + tests; True when it exits 0."""
    rustc = shutil.which("rustc")
    if rustc is None:
        raise FileNotFoundError("rustc is not on PATH: HumanEval-Rust needs a Rust toolchain")
    with tempfile.TemporaryDirectory(prefix="rustle-he-") as tmp:
        src, exe = Path(tmp) / "main.rs", Path(tmp) / "main"
        src.write_text(problem.prompt + completion + "\n" + problem.tests)
        try:
            built = subprocess.run([rustc, "--edition", "2021", "-O", "-o", str(exe), str(src)],
                                   capture_output=True, timeout=60)
            if built.returncode != 0:
                return False
            return subprocess.run([str(exe)], capture_output=True, timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def evaluate(problems: list[Problem], greedy: Complete, sample: Complete | None, n: int = 20,
             workers: int = 2) -> dict:
    """pass@1 from one greedy completion per problem; pass@10 from n samples (when `sample` is given)."""
    # Generation runs here, one problem at a time; only the compiles and runs go to the pool.
    with ThreadPoolExecutor(workers) as pool:
        greedy_done = [truncate(greedy(p.prompt, p.stop, 1)[0], p.stop) for p in problems]
        greedy_ok = list(pool.map(passes, problems, greedy_done))
        result = {"pass_at_1": sum(greedy_ok) / len(problems), "n": len(problems)}
        if sample is not None:
            scores = []
            for p in problems:
                completions = [truncate(c, p.stop) for c in sample(p.prompt, p.stop, n)]
                correct = sum(pool.map(passes, [p] * n, completions))
                scores.append(pass_at_k(n, correct, 10))
            result["pass_at_10"] = sum(scores) / len(scores)
            result["samples"] = n
    return result


def model_completer(model, tok, temperature: float, max_new_tokens: int = 256, top_p: float = 0.95,
                    seed: int = 0) -> Complete:
    """A `Complete` over our model's streaming generate: stops as soon as the text holds a stop string."""
    import torch

    from ...engine.decode import generate

    generator = torch.Generator().manual_seed(seed)

    def complete(prompt: str, stop: list[str], n: int) -> list[str]:
        ids = tok.encode(prompt, add_special_tokens=False).ids
        outputs = []
        for _ in range(n):
            def done(tokens: list[int]) -> bool:
                return any(s in tok.decode(tokens) for s in stop)

            with torch.autocast("cpu", dtype=torch.bfloat16):
                produced = list(generate(model, ids, max_new_tokens, temperature, top_p, stop=done,
                                         generator=generator))
            outputs.append(tok.decode(produced))
        return outputs

    return complete
