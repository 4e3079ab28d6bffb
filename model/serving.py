"""The model as the engine serves it on CPU. A decode step or a short prefill runs a few rows through every
weight, where PyTorch's time goes to its calls, not the arithmetic (BENCHMARKS.md, the decode step); so in fp32:
- every linear layer, and the head tied to the embedding, keeps an fp16 copy of its weight that a few rows read
  (kernels/linear: half the bytes, fp32 arithmetic; the shipped model's logits move by at most 0.005), and where
  the CPU multiplies bf16 natively a bf16 copy that more rows (a prefill) multiply in, as training's autocast does
  (model/precision.py: `rows_dtype`);
- RMSNorm, and a block's second half (the residual add, RMSNorm and SwiGLU MLP), run in one C call each
  (kernels/block);
- a few tokens against a cache (a decode step, a draft to verify, a typed line) through a model of gdn, swa and
  NoPE lql blocks run in one C call (kernels/decode), this module keeping the caches' bookkeeping.
More rows, other dtypes and autograd take the modules' own PyTorch forwards, which are the reference.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels.decode as decode
from kernels.attention.select import BLOCK
from kernels.block import residual_mlp, rms_norm_rows
from kernels.linear import MAX_ROWS, few_rows_linear

from .cache import Cache, GDNState, LatentCache, MemoryCache, RingCache
from .layers.common import rope_frequencies
from .layers.gdn import GatedDeltaNet
from .layers.lql import LatentAttention
from .layers.swa import SlidingWindowAttention
from .memory import read
from .model import Block, RustleLM
from .precision import fast_layouts

FP16_MAX = 65504.0


class HalfWeightLinear(nn.Linear):
    """nn.Linear that also keeps its weight in fp16 (row-major), through which a few rows go (kernels/linear), and
    optionally in bf16, through which more rows go outside autograd (`wide`)."""
    half: torch.Tensor
    wide: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = few_rows_linear(x, self.half)
        if out is None:
            if self.wide is None or torch.is_grad_enabled():
                return F.linear(x, self.weight, self.bias)
            out = _bucketed_linear(x, self.wide)
        return out if self.bias is None else out + self.bias


ROW_BUCKET = 64


def _bucketed_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear in `weight`'s dtype, back in x's, on rows padded to a multiple of ROW_BUCKET: oneDNN builds a kernel
    per shape (~0.5 ms for each linear layer at each new row count, BENCHMARKS.md), and a prefill's row count is
    new at almost every request; padding bounds the shapes at ~2,048 / 64 per layer."""
    rows = x.reshape(-1, x.shape[-1]).to(weight.dtype)
    count = rows.shape[0]
    out = F.linear(F.pad(rows, (0, 0, 0, -count % ROW_BUCKET)), weight)[:count]
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def _eps(norm: nn.RMSNorm, x: torch.Tensor) -> float:
    return norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps


class FewRowsRMSNorm(nn.RMSNorm):
    """nn.RMSNorm whose few-row forwards run in C (kernels/block)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = rms_norm_rows(x, self.weight, _eps(self, x))
        return super().forward(x) if out is None else out


class FewRowsBlock(Block):
    """Block whose second half (residual, RMSNorm, SwiGLU MLP on fp16 weights) runs in one C call for a few rows."""

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache=None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        a = self.mix(x, positions, cache, embeds)
        out = residual_mlp(x, a, self.mlp_norm.weight, _eps(self.mlp_norm, x), self.mlp.gate_up.half,
                           self.mlp.down.half)
        if out is None:
            x = x + a
            return x + self.mlp(self.mlp_norm(x))
        return out


class FewTokenForward:
    """A served model's forwards of a few tokens against a cache in one C call (kernels/decode). It describes the
    model once; before each call it points the C side at the caches, reserving each lql layer's new positions,
    and after it advances the ring counts and the position (model/cache.py keeps the bookkeeping, the kernel
    writes the values). Not thread-safe: the engine runs one forward at a time (its lock)."""

    def __init__(self, model: RustleLM) -> None:
        c, self.model = model.config, model
        self.read: list[tuple[torch.Tensor, int]] = []      # the fp32 parameters the C side reads, and where
        embed = model.embed.weight
        self.freqs = rope_frequencies(c.head_dim // 2, c.rope_theta)
        self.spec = decode.ModelSpec(
            D=c.d_model, vocab=c.vocab_size, hidden=c.mlp_hidden, layers=c.n_layers, eps=c.norm_eps,
            heads=c.n_heads, kv_heads=c.n_kv_heads, head_dim=c.head_dim, window=c.window,
            freqs=self.freqs.data_ptr(), gdn_heads=c.gdn_heads, gdn_dim=c.gdn_head_dim, conv_size=c.conv_size,
            gdn_scale=c.gdn_head_dim ** -0.5, lql_dim=c.lql_dim, lql_heads=c.lql_heads, lql_blocks=c.lql_blocks,
            lql_shift=c.lql_width // c.lql_dim - 1, lql_recent=c.lql_recent, embed=self._address(embed),
            embed_row=embed.stride(0), embed_col=embed.stride(1), norm=self._address(model.norm.weight),
            head=model.head.half.data_ptr(), tap=-1)
        self.layers = (decode.LayerSpec * c.n_layers)()
        for spec, block in zip(self.layers, model.blocks):
            attn = block.attn
            spec.kind = decode.KINDS[block.kind]
            spec.attn_norm, spec.mlp_norm = self._address(block.attn_norm.weight), self._address(block.mlp_norm.weight)
            spec.gate_up, spec.down = block.mlp.gate_up.half.data_ptr(), block.mlp.down.half.data_ptr()
            inputs = {"gdn": ("qkv", "beta_decay", "gate"), "swa": ("qkv",), "lql": ("down", "query")}[block.kind]
            inputs += ("token_down",) if block.kind == "lql" and attn.token_key else ()
            spec.inputs = decode.pointers([getattr(attn, name).half for name in inputs], 3)
            spec.out = (attn.up if block.kind == "lql" else attn.out).half.data_ptr()
            if block.kind == "swa" and attn.qkv.bias is not None:
                spec.in_bias = self._address(attn.qkv.bias)
            if block.kind == "gdn":
                spec.conv_w, spec.A_log = self._address(attn.conv.weight), self._address(attn.A_log)
                spec.dt_bias, spec.head_norm = self._address(attn.dt_bias), self._address(attn.norm.weight)

    def _address(self, parameter: torch.Tensor) -> int:
        self.read.append((parameter, parameter.data_ptr()))
        return parameter.data_ptr()

    @staticmethod
    def applies(model: RustleLM) -> bool:
        """Whether the kernel can run this served model's steps: fp32 on CPU, fp16 copies of every weight, gdn,
        swa and NoPE, unscaled lql blocks (plain, shifted or token keys) with the block layout it knows, the library
        built."""
        c = model.config
        kinds = {"gdn": GatedDeltaNet, "swa": SlidingWindowAttention, "lql": LatentAttention}
        return (decode.available() and model.embed.weight.dtype == torch.float32 and not model.embed.weight.is_cuda
                and isinstance(model.head, HalfWeightLinear) and c.n_heads % c.n_kv_heads == 0
                and c.gdn_head_dim <= 256 and type(model.norm) is FewRowsRMSNorm
                and all(type(b) is FewRowsBlock and type(b.attn) is kinds.get(b.kind)
                        and all(isinstance(m, HalfWeightLinear) for m in b.attn.modules() if isinstance(m, nn.Linear))
                        and not (b.kind == "lql" and (b.attn.use_rope or b.attn.log_base))
                        for b in model.blocks))

    def current(self) -> bool:
        """Whether the parameters it reads are where they were described (a `.to()` since moves them)."""
        return all(p.data_ptr() == address for p, address in self.read)

    def takes(self, cache: Cache, count: int) -> bool:
        """Whether the kernel can advance this cache by `count` positions: batch 1, fp32 (a cache made in another
        dtype cannot), and no selectable block of lql keys that the same call writes, since their bounds are taken
        before the call (a piece of at most `lql_recent` tokens never writes one: 2,048 in every recipe)."""
        c = self.model.config
        for layer in cache.layers:
            if isinstance(layer, MemoryCache):        # written here, after the call
                continue
            held = ((layer.conv,) if isinstance(layer, GDNState) else (layer.k, layer.v) if isinstance(layer, RingCache)
                    else layer.store.buffers)
            if any(t.dtype != torch.float32 or t.shape[0] != 1 or not t.is_contiguous() for t in held):
                return False
            if isinstance(layer, LatentCache) and c.lql_blocks \
                    and max(0, layer.length + count - c.lql_recent) // BLOCK * BLOCK > layer.length:
                return False
        return True

    def __call__(self, tokens: list[int], cache: Cache, outputs: int) -> torch.Tensor:
        """The logits [1, outputs, vocab] of the last `outputs` of `tokens`, fed at the cache's position; the cache
        advanced. Needs `takes(cache, len(tokens))`."""
        if not all(0 <= t < self.spec.vocab for t in tokens):        # the C side reads the embedding row unchecked
            raise IndexError(f"token ids must be in [0, {self.spec.vocab}): got {tokens}")
        kept = []                                 # what the C side reads during the call
        for spec, layer in zip(self.layers, cache.layers):
            if isinstance(layer, GDNState):
                spec.conv, spec.state = layer.conv.data_ptr(), layer.state.data_ptr()
            elif isinstance(layer, RingCache):
                spec.ring_k, spec.ring_v, spec.seen = layer.k.data_ptr(), layer.v.data_ptr(), layer.seen
            else:
                kept += self._point_at_latents(spec, layer, len(tokens))
        self.spec.threads = torch.get_num_threads()
        memory = cache.memory
        tap = memory.reader.layer if memory is not None else None
        self.spec.tap = -1 if tap is None else tap
        hidden = torch.empty(len(tokens), self.spec.D) if memory is not None else None
        logits = decode.forward_rows(self.spec, self.layers, tokens, cache.position, outputs, hidden)
        if tap is not None:                       # block `tap`'s output, normed as `hidden_and_read` norms it
            hidden = F.rms_norm(hidden, (self.spec.D,), eps=self.model.config.norm_eps)
        for layer in cache.layers:
            if isinstance(layer, RingCache):
                layer.seen += len(tokens)
        cache.position += len(tokens)
        if memory is not None:
            logits = read(memory, hidden, torch.tensor(tokens), logits, self.model.config)
        return logits[None]

    def _point_at_latents(self, spec: decode.LayerSpec, layer: LatentCache, count: int) -> list:
        """Reserve an lql layer's `count` new positions and point its spec at them, at every latent and, where its
        attention selects blocks, at their bounds (as model/layers/lql.py and select.py compute them)."""
        c, past = self.model.config, layer.length
        slots, latents = layer.reserve(count)
        lo = hi = None
        if c.lql_blocks and past + count > c.lql_recent + c.lql_blocks * BLOCK:
            last = max(0, past + count - c.lql_recent) // BLOCK      # the blocks before the last row's recent keys
            lo, hi = (b[0].contiguous() for b in layer.bounds(latents, last))
        return decode.point_at_latents(spec, slots, latents, past, lo, hi)


class ServedLM(RustleLM):
    """RustleLM whose forwards of a few tokens against a cache, outside autograd, run in one C call
    (`FewTokenForward`): decode steps, drafts to verify, typed lines."""
    few_tokens: FewTokenForward

    def forward(self, tokens: torch.Tensor, cache: Cache | None = None, last: int | None = None) -> torch.Tensor:
        T = tokens.shape[-1]
        if (cache is not None and tokens.shape[0] == 1 and 0 < T <= MAX_ROWS and not tokens.is_cuda
                and not torch.is_grad_enabled() and self.few_tokens.current() and self.few_tokens.takes(cache, T)):
            return self.few_tokens(tokens[0].tolist(), cache, T if last is None else min(last, T))
        return super().forward(tokens, cache, last)


def half_weights(model: nn.Module, rows: torch.dtype = torch.float32) -> nn.Module:
    """Give every linear layer of a model served in fp32 on CPU, and its head (tied to the embedding by default),
    an fp16 copy of its weight for a few rows at a time, and a copy in `rows` (bf16) for more rows unless that is
    fp32; then the few-row norms and blocks on top. Weights that fp16 cannot hold keep the fp32 path."""
    with torch.no_grad():
        if model.head is None:                  # tied: a head module on the embedding's own weight
            model.head = nn.Linear(model.embed.weight.shape[1], model.embed.weight.shape[0], bias=False,
                                   device="meta")
            model.head.weight = model.embed.weight
        for module in model.modules():
            if type(module) is nn.Linear and module.weight.dtype == torch.float32 \
                    and float(module.weight.abs().max()) < FP16_MAX:
                module.__class__ = HalfWeightLinear
                module.half = module.weight.detach().half().contiguous()
                if rows != torch.float32:
                    module.wide = module.weight.detach().to(rows)
        for module in model.modules():
            if type(module) is nn.RMSNorm:
                module.__class__ = FewRowsRMSNorm
            elif type(module) is Block and all(isinstance(m, HalfWeightLinear) for m in module.mlp.children()):
                module.__class__ = FewRowsBlock
        if type(model) is RustleLM and FewTokenForward.applies(model):
            model.__class__ = ServedLM
            model.few_tokens = FewTokenForward(model)
    return model


def for_serving(model: nn.Module, device: str, rows: torch.dtype = torch.float32) -> nn.Module:
    """The model as the engine serves it on `device`: on CPU, wide weights column-major (`fast_layouts`) and, in
    fp32, the few-row kernels above and many rows multiplied in `rows` (`half_weights`)."""
    if device != "cpu":
        return model
    model = fast_layouts(model)
    return half_weights(model, rows) if model.embed.weight.dtype == torch.float32 else model
