"""TrainConfig: one TOML file records a whole run (model, data, schedule, optimiser)."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from model.config import ModelConfig

from .data import PackConfig


@dataclass
class TrainConfig:
    out: Path
    corpus: Path = Path("corpus")
    tokenizer: Path = Path("tokenizer/rustle-bpe-16k")
    model: ModelConfig = field(default_factory=ModelConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    total_tokens: int = 50_000_000
    batch_tokens: int = 16384                    # tokens per optimiser step (sequences x length)
    seq_schedule: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 512), (0.5, 1024)])
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_tokens: int = 1_000_000
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1234
    bf16: bool = True
    compile: bool = False                        # torch.compile each block (fuses the casts and elementwise ops)
    device: str = "cpu"                          # "cuda" on a GPU machine (data/gpu/run.sh)
    eval_every_tokens: int = 2_000_000
    eval_tokens: int = 131072
    checkpoint_every_seconds: float = 300.0
    init_from: Path | None = None                # weights-only start (fine-tuning, or continuing a shipped model)
    graft: bool = False                          # init_from may differ in layer kinds (those blocks start
                                                 # fresh) or have a narrower MLP (graft.py)
    new_weight_lr_scale: float = 1.0             # grafted: the weights the start did not have step this many
                                                 # times as far as the trained ones (AdamW's steps are ~lr each,
                                                 # too short at a continuation's lr for a new part to grow)
    train_lql_blocks: int | None = None          # lql's selected blocks in training where not the model's own
                                                 # (0: every key; its checkpoints keep the model's for serving)
    memory_loss: float = 0.0                     # weight of the memory's vote nats beside the next-token loss
                                                 # (memory_loss.py: init_from's fitted reader, held fixed)
    memory_queries: int = 1024                   # positions of each sequence that term scores
    name_weight: float = 1.0                     # the loss on next tokens that hold a piece of a name, times
                                                 # this (token_weights.py); validation loss stays unweighted
    far_repeat_weight: float = 1.0               # the loss on next name pieces whose pair with the token before
                                                 # was last seen beyond the window, times this (token_weights.py)
    far_repeat_from: str = "anywhere"            # or "other-files": only repeats of another file's pair count
    patience: int | None = None                  # stop after this many evaluations without a better val loss
    max_seconds: float | None = None             # a wall-clock budget (a lent GPU): total_tokens is cut, a few
                                                 # steps in, to what the measured throughput reaches by then

    def __post_init__(self) -> None:
        if not (isinstance(self.new_weight_lr_scale, (int, float)) and 1.0 <= self.new_weight_lr_scale <= 1000.0):
            raise ValueError(f"new_weight_lr_scale = {self.new_weight_lr_scale!r}: expected a number from 1 to 1000")
        if not (isinstance(self.memory_loss, (int, float)) and 0.0 <= self.memory_loss <= 10.0):
            raise ValueError(f"memory_loss = {self.memory_loss!r}: expected a number from 0 to 10")
        if not (isinstance(self.name_weight, (int, float)) and 0.1 <= self.name_weight <= 10.0):
            raise ValueError(f"name_weight = {self.name_weight!r}: expected a number from 0.1 to 10")
        if not (isinstance(self.far_repeat_weight, (int, float)) and 0.1 <= self.far_repeat_weight <= 10.0):
            raise ValueError(f"far_repeat_weight = {self.far_repeat_weight!r}: expected a number from 0.1 to 10")
        if self.far_repeat_from not in ("anywhere", "other-files"):
            raise ValueError(f"far_repeat_from = {self.far_repeat_from!r}: expected \"anywhere\" or \"other-files\"")
        if not (isinstance(self.memory_queries, int) and self.memory_queries >= 1):
            raise ValueError(f"memory_queries = {self.memory_queries!r}: expected a whole number of at least 1")
        if self.train_lql_blocks is not None:     # the model config's own bounds on lql_blocks
            try:
                replace(self.model, lql_blocks=self.train_lql_blocks)
            except ValueError as err:
                raise ValueError(f"train_lql_blocks: {err}") from None

    @classmethod
    def from_toml(cls, path: Path) -> "TrainConfig":
        data = tomllib.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        model = ModelConfig(**data.pop("model", {}))
        pack = PackConfig(**data.pop("pack", {}))
        for key in ("out", "corpus", "tokenizer", "init_from"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        if "seq_schedule" in data:
            data["seq_schedule"] = [(float(a), int(b)) for a, b in data["seq_schedule"]]
        return cls(model=model, pack=pack, **data)

    def seq_len(self, tokens_seen: int) -> int:
        """The context length at this point of the run (the schedule's fractions of total_tokens)."""
        length = self.seq_schedule[0][1]
        for fraction, n in self.seq_schedule:
            if tokens_seen >= fraction * self.total_tokens:
                length = n
        return length
