"""Line tasks after fine-tuning on each task's repository (`rustle eval lines --finetune`).

What a team gets from `rustle finetune --repos .` before it completes in that repository: each repository of a task
set is fine-tuned, with `rustle finetune`'s code and settings, on its files other than those that hold the set's
tasks (their lines are the answers), and its tasks are then completed with the model that wrote. Every repository
starts again from the same base model.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from ..train.finetune import FinetuneConfig, finetune
from .lines import LineTask


def training_copy(root: Path, held: set[str], out: Path) -> Path:
    """`out` holding `root`'s files but the `held` ones (paths relative to `root`), symbolic links left out."""
    if out.exists():
        shutil.rmtree(out)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and relative not in held:
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / relative)
    out.mkdir(parents=True, exist_ok=True)
    return out


class RepositoryModels:
    """The model each task's repository is completed with: `base` fine-tuned there, made on first use."""

    def __init__(self, tasks: list[LineTask], base: Path, work: Path, config: FinetuneConfig) -> None:
        self.held: dict[Path, set[str]] = {}
        for task in tasks:
            self.held.setdefault(task.root, set()).add(task.path)
        self.base, self.work, self.config = base, work, config
        self.models: dict[Path, Path] = {}
        self.skipped: dict[str, str] = {}   # repository -> why it kept the base weights

    def model(self, root: Path) -> Path:
        if root not in self.models:
            work = self.work / root.name
            repo = training_copy(root, self.held.get(root, set()), work / "repo")
            try:
                report = finetune(replace(self.config, repos=[repo], out=work, model=self.base))
                self.models[root] = Path(report.model)
                for kept in ("checkpoint", "best"):   # the run's weights and optimiser: ~170 MB a repository
                    shutil.rmtree(work / "run" / kept, ignore_errors=True)
                if not report.tuned:
                    self.skipped[root.name] = "fine-tuning did not help on held-out files"
            except ValueError as err:   # too few files besides the tasks' to train on and hold one out
                self.skipped[root.name] = str(err)
                self.models[root] = self.base
        return self.models[root]
