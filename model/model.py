"""RustleLM: embeddings, a stack of blocks whose attention kind follows the layer pattern, final norm, tied head."""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .cache import Cache
from .config import GLOBAL_KINDS, ModelConfig
from .layers.common import SwiGLU
from .layers.full import FullAttention
from .layers.gdn import GatedDeltaNet
from .layers.lql import LatentAttention
from .layers.swa import SlidingWindowAttention
from .loss import linear_cross_entropy, row_weights
from .memory import MemoryReader, new_memory, read


def make_attention(kind: str, config: ModelConfig) -> nn.Module:
    use_rope = config.global_rope or kind not in GLOBAL_KINDS
    if kind == "full":
        return FullAttention(config, use_rope)
    if kind == "swa":
        return SlidingWindowAttention(config)
    if kind == "gdn":
        return GatedDeltaNet(config)
    return LatentAttention(config, use_rope)


class Block(nn.Module):
    def __init__(self, kind: str, config: ModelConfig) -> None:
        super().__init__()
        self.kind = kind
        self.attn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attn = make_attention(kind, config)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden)

    def mix(self, x: torch.Tensor, positions: torch.Tensor, cache=None, embeds: torch.Tensor | None = None):
        """The attention's output for x; lql layers with token keys also read the token embeddings."""
        if self.kind == "lql" and self.attn.token_key:
            return self.attn(self.attn_norm(x), positions, cache, embeds)
        return self.attn(self.attn_norm(x), positions, cache)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache=None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.mix(x, positions, cache, embeds)
        return x + self.mlp(self.mlp_norm(x))


class RustleLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(kind, config) for kind in config.layer_pattern)
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        # tied by default (nanoGPT); untied for checkpoints converted from models that keep a separate head
        self.head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.fitted_memory: MemoryReader | None = None     # memory.safetensors, where the model folder has one
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def new_cache(self, batch: int = 1, dtype: torch.dtype | None = None) -> Cache:
        dtype = dtype or self.embed.weight.dtype
        device = self.embed.weight.device
        layers = [block.attn.new_cache(batch, dtype, device) for block in self.blocks]
        remembers = self.config.memory_weight > 0 and batch == 1      # the memory serves one sequence
        return Cache(layers + ([new_memory(self.memory_reader, device)] if remembers else []))

    @property
    def memory_reader(self) -> MemoryReader:
        """How the memory reads (model/memory.py): the fitted reader where there is one, else the constant one."""
        return self.fitted_memory or MemoryReader.constant(self.config)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.head is None else self.head.weight

    def hidden(self, tokens: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """tokens [B, T] → final normed hidden states [B, T, D]. A cache is read and advanced."""
        return self.hidden_and_read(tokens, cache)[0]

    def hidden_and_read(self, tokens: torch.Tensor, cache: Cache | None = None,
                        layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden`, and the states a memory reader of `layer` reads (its `layer`): block `layer`'s output,
        RMS-normalised in fp32 (the reader's key map holds any scale), or the final states where `layer` is None."""
        start = cache.position if cache is not None else 0
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = embeds = self.embed(tokens)
        read = None
        for i, block in enumerate(self.blocks):
            x = block(x, positions, cache.layers[i] if cache is not None else None, embeds)
            if i == layer:
                read = F.rms_norm(x.float(), (x.shape[-1],), eps=self.config.norm_eps)
        if cache is not None:
            cache.position += tokens.shape[1]
        hidden = self.norm(x)
        return hidden, hidden if read is None else read

    def forward(self, tokens: torch.Tensor, cache: Cache | None = None, last: int | None = None) -> torch.Tensor:
        """tokens [B, T] → logits [B, T, V] (or of the `last` positions only)."""
        memory = cache.memory if cache is not None else None
        hidden, states = self.hidden_and_read(tokens, cache, memory.reader.layer if memory is not None else None)
        h = hidden if last is None else hidden[:, -last:]
        logits = F.linear(h, self.head_weight) if self.head is None else self.head(h)
        if memory is not None:
            logits = read(memory, states[0], tokens[0], logits[0], self.config)[None]
        return logits

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, chunk: int = 2048,
             compiled: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy (weighted by `weights` [B, T] where given); the head and the loss run fused
        over chunks of positions (model/loss.py), so [B, T, V] logits never exist (a 16K-token batch's fp32 logits
        are 1 GB)."""
        return self.loss_of_hidden(self.hidden(tokens), targets, chunk, compiled, weights)

    def loss_of_hidden(self, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 2048,
                       compiled: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
        """`loss` from final hidden states [B, T, D] already computed (a training objective that reads them too)."""
        flat = targets.flatten()
        rows = row_weights(flat, None if weights is None else weights.flatten())
        total = linear_cross_entropy(hidden.flatten(0, 1), self.head_weight, flat, chunk, compiled, rows)
        return total / rows.sum().clamp_min(1e-6)


class _ShapesOnly(TorchFunctionMode):
    """Builds modules for their parameters' shapes only: in-place initialisers (`normal_`, `uniform_`, …) do
    nothing. On the meta device their decompositions import torch._dynamo, 2-3 s of every process that loads
    a model (the server's first suggestion, each `rustle` command). Thread-local, as torch function modes are."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")   # torch.nn.init passes it by name
        if name.endswith("_") and not name.startswith("__") and isinstance(target, torch.Tensor):
            return target
        return func(*args, **kwargs)


def count_parameters(config: ModelConfig) -> int:
    with torch.device("meta"), _ShapesOnly():
        return sum(p.numel() for p in RustleLM(config).parameters())


def equal_parameter_variant(config: ModelConfig, pattern: tuple[str, ...], global_rope: bool) -> ModelConfig:
    """`config` with another layer pattern, its MLP widened or narrowed so the parameter count stays equal."""
    variant = replace(config, layer_pattern=pattern, global_rope=global_rope)
    per_unit = 3 * config.d_model * variant.n_layers  # parameters per unit of mlp_hidden across the stack
    gap = count_parameters(config) - count_parameters(variant)
    return replace(variant, mlp_hidden=variant.mlp_hidden + round(gap / per_unit))


def twin_config(config: ModelConfig) -> ModelConfig:
    """The full-attention twin: every layer `full` with RoPE, at equal parameters."""
    return equal_parameter_variant(config, ("full",) * config.n_layers, global_rope=True)
