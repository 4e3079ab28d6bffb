"""The ctypes side of step.c: the model's and each layer's description, and the call."""
from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from ..clib import declare

_p, _i, _l, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
KINDS = {"gdn": 0, "swa": 1, "lql": 2}


class LayerSpec(ctypes.Structure):
    """step.c's Layer: a block's weights (fixed) and its cache's pointers (set before each step)."""
    _fields_ = [("kind", _i), ("attn_norm", _p), ("mlp_norm", _p), ("gate_up", _p), ("down", _p),
                ("inputs", _p * 3), ("in_bias", _p), ("out", _p),
                ("conv_w", _p), ("A_log", _p), ("dt_bias", _p), ("head_norm", _p), ("conv", _p), ("state", _p),
                ("ring_k", _p), ("ring_v", _p), ("seen", _l),
                ("latent", _p), ("segments", _p), ("starts", _p), ("nseg", _i), ("lo", _p), ("hi", _p),
                ("nbounds", _l), ("past", _l)]


class ModelSpec(ctypes.Structure):
    """step.c's Model: sizes, and the embedding, final norm and head."""
    _fields_ = [("D", _i), ("vocab", _i), ("hidden", _i), ("layers", _i), ("threads", _i), ("eps", _f),
                ("heads", _i), ("kv_heads", _i), ("head_dim", _i), ("window", _i), ("freqs", _p),
                ("gdn_heads", _i), ("gdn_dim", _i), ("conv_size", _i), ("gdn_scale", _f),
                ("lql_dim", _i), ("lql_heads", _i), ("lql_blocks", _i), ("lql_shift", _i), ("lql_recent", _l),
                ("embed", _p), ("embed_row", _l), ("embed_col", _l), ("norm", _p), ("head", _p), ("tap", _i)]


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    return declare(forward_rows=([ctypes.POINTER(ModelSpec), ctypes.POINTER(LayerSpec), _p, _i, _l, _i, _p, _p],
                                  _i))


def available() -> bool:
    return _library() is not None


def pointers(tensors: list[torch.Tensor], size: int | None = None) -> ctypes.Array:
    """The tensors' data addresses as a C array of `size` (default: as many; the rest NULL). The caller keeps the
    tensors alive."""
    return (_p * (size or len(tensors)))(*(t.data_ptr() for t in tensors))


def point_at_latents(spec: LayerSpec, slots: torch.Tensor, latents: list[torch.Tensor], past: int,
                     lo: torch.Tensor | None, hi: torch.Tensor | None) -> list:
    """Point an lql layer's spec at its new positions' slots [1, T, d] (rows contiguous), every latent by segment
    [1, L_i, d] (the slots' included), `past` (the positions before the slots) and, where its attention selects
    blocks, the bounds lo, hi [n, d]. Returns what must stay alive until the call is done."""
    starts = [0]
    for z in latents:
        starts.append(starts[-1] + z.shape[1])
    segments, ends = pointers(latents), (_l * len(starts))(*starts)
    spec.latent, spec.past = slots.data_ptr(), past
    spec.segments, spec.starts, spec.nseg = ctypes.addressof(segments), ctypes.addressof(ends), len(latents)
    spec.lo, spec.hi, spec.nbounds = (0, 0, 0) if lo is None else (lo.data_ptr(), hi.data_ptr(), lo.shape[0])
    return [segments, ends, lo, hi]


def forward_rows(model: ModelSpec, layers: ctypes.Array, tokens: list[int], position: int,
                 outputs: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """The logits [outputs, vocab] of the last `outputs` of `tokens` at positions `position` on; every layer's
    cache advanced in place; `hidden` (fp32 [len(tokens), D], contiguous), where given, gets every row's final
    normed hidden state, or block `model.tap`'s output, not normed, where that is 0 or more. Needs `available()`."""
    logits = torch.empty(outputs, model.vocab)
    ids = (_l * len(tokens))(*tokens)
    if _library().forward_rows(ctypes.byref(model), layers, ctypes.addressof(ids), len(tokens), position, outputs,
                               logits.data_ptr(), 0 if hidden is None else hidden.data_ptr()):
        raise MemoryError(f"forward_rows: out of memory for {len(tokens)} rows")
    return logits
