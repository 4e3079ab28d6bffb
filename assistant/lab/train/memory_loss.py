"""Training the network for its memory: the next-token loss plus, at a recipe's `memory_loss` weight, the memory's
vote nats on the states its reader reads, the final ones or a middle block's (model/memory.py: `vote_nats`, TRIME's
loss, Zhong et al. 2022).

Why: the memory's reader is fitted to frozen weights (`rustle train-memory`), and where it misses a name its keys
lie as near the wrong earlier positions as the right ones. This loss asks the network itself for states that the
start's fitted reader (its `memory.safetensors`, held fixed) tells apart: a position's key near the keys of earlier
positions followed by the same token. The reader is fitted again to the weights that come out.
"""
from __future__ import annotations

from pathlib import Path

import torch

from model.io import MEMORY, ModelFolderError, load_memory
from model.memory import MemoryReader, vote_nats
from model.model import RustleLM

from .token_weights import TokenWeighing

MIN_POSITION = 1024    # queries this far in (half a shorter window): the memory serves what attention has left


class NextTokenLoss(torch.nn.Module):
    """The model's fused loss as a module's forward, so that DDP sees (and syncs) the backward pass."""

    def __init__(self, model: RustleLM, compiled: bool, weighing: TokenWeighing | None = None) -> None:
        super().__init__()
        self.model, self.compiled = model, compiled
        self.weighing = weighing                # each next token's loss weight (token_weights.py), or None
        self.logged: dict[str, float] = {}      # parts of the last step's loss worth a metrics row

    def weights(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return None if self.weighing is None else self.weighing(x, y)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x, y, compiled=self.compiled, weights=self.weights(x, y))


class NextTokenAndMemoryLoss(NextTokenLoss):
    """next-token nats + weight x the vote's nats at `queries` evenly spaced positions of each sequence past
    MIN_POSITION (those whose next token followed an earlier position too)."""

    def __init__(self, model: RustleLM, compiled: bool, reader: MemoryReader, weight: float, queries: int,
                 weighing: TokenWeighing | None = None) -> None:
        super().__init__(model, compiled, weighing)
        self.reader, self.weight, self.queries = reader, weight, queries

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hidden, states = self.model.hidden_and_read(x, layer=self.reader.layer)
        nats = self.model.loss_of_hidden(hidden, y, compiled=self.compiled, weights=self.weights(x, y))
        low = min(MIN_POSITION, x.shape[1] // 2)
        queries = torch.linspace(low, x.shape[1] - 1, min(self.queries, x.shape[1] - low), device=x.device).long()
        votes = [vote_nats(self.reader.keys_with_grad(h, t), n, queries, self.reader.scale)
                 for h, t, n in zip(states, x, y)]
        votes = [v for v in votes if v is not None]
        if not votes:
            self.logged = {"next_token_nats": float(nats.detach())}
            return nats
        memory = torch.stack(votes).mean()
        self.logged = {"next_token_nats": float(nats.detach()), "memory_nats": float(memory.detach())}
        return nats + self.weight * memory


def training_objective(model: RustleLM, compiled: bool, memory_loss: float, queries: int,
                       init_from: Path | None, weighing: TokenWeighing | None = None) -> NextTokenLoss:
    """The run's objective: the next-token loss (each next token weighed by `weighing` where given), with the
    memory's term where the recipe weighs it (the reader of `init_from`, whose weights the run starts from)."""
    if memory_loss == 0:
        return NextTokenLoss(model, compiled, weighing)
    path = None if init_from is None else Path(init_from) / MEMORY
    if path is None or not path.is_file():
        raise ModelFolderError(f"memory_loss = {memory_loss}: the run must start (init_from) from a model folder "
                               "with a fitted memory reader; write one with `rustle train-memory`")
    reader = load_memory(path, model.config).with_embeddings(model.embed.weight)
    return NextTokenAndMemoryLoss(model, compiled, reader, memory_loss, queries, weighing)
