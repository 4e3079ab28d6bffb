"""The CPU kernels for attention against a cache held in segments (segments.c, built by kernels/clib.py). Where
no compiler works, `available()` is False and callers keep the PyTorch path (model/layers/common.py)."""
from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from ..clib import library

MIN_SPLIT = 4096                        # keys below which one thread does the work

_P = ctypes.POINTER


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = library()
    if lib is None:
        return None
    f = ctypes.c_float
    lib.segment_attention.argtypes = [_P(f), ctypes.c_int, ctypes.c_int, ctypes.c_int, _P(_P(f)), _P(_P(f)),
                                      _P(ctypes.c_long), ctypes.c_int, _P(ctypes.c_long), ctypes.c_int, _P(f), _P(f)]
    lib.segment_attention.restype = None
    i, n = ctypes.c_int, _P(ctypes.c_long)
    lib.block_bounds.argtypes = [_P(_P(f)), n, i, i, ctypes.c_long, ctypes.c_long, i, _P(f), _P(f)]
    lib.block_bounds.restype = None
    lib.selected_attention.argtypes = [_P(f), i, i, i, _P(_P(f)), _P(_P(f)), n, i, n, i, n, n, i, _P(f), _P(f)]
    lib.selected_attention.restype = None
    lib.top_blocks.argtypes = [_P(f), ctypes.c_long, ctypes.c_long, n, i, i, n]
    lib.top_blocks.restype = None
    lib.select_and_attend.argtypes = [_P(f), i, i, i, _P(_P(f)), _P(_P(f)), n, i, _P(f), _P(f), ctypes.c_long, i,
                                      ctypes.c_long, ctypes.c_long, i, _P(f), _P(f)]
    lib.select_and_attend.restype = i
    return lib


def available() -> bool:
    return _library() is not None


def _rows(x: torch.Tensor, head: int) -> int:
    """The address of head `head`'s [L, D] rows of x [1, KV, L, D] (made contiguous by the caller if need be)."""
    return x.data_ptr() + head * x.stride(1) * x.element_size()


def segment_attention(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]],
                      past: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of q [1, H, T, D] at positions past..past+T-1 against k, v [1, KV, L_i, D] held in
    segments (together past + T positions), fp32 on CPU, GQA by head groups: (o [1, H, T, D], lse [1, H, T]).
    Needs `available()`."""
    lib = _library()
    assert lib is not None, "segment_attention needs the compiled kernel (available())"
    _, H, T, D = q.shape
    KV = segments[0][0].shape[1]
    R = H // KV * T
    rows = (q.float() * D ** -0.5).reshape(KV, R, D).contiguous()
    held = [tuple(x if x.stride(-1) == 1 and x.stride(-2) == D else x.contiguous() for x in kv) for kv in segments]
    lengths = [k.shape[2] for k, _ in held]
    keys = (_P(ctypes.c_float) * (len(held) * KV))(*(ctypes.cast(_rows(k, g), _P(ctypes.c_float))
                                                     for k, _ in held for g in range(KV)))
    values = (_P(ctypes.c_float) * (len(held) * KV))(*(ctypes.cast(_rows(v, g), _P(ctypes.c_float))
                                                       for _, v in held for g in range(KV)))
    limit = torch.arange(past + 1, past + T + 1).repeat(H // KV)          # row (head of the group, t)
    total = sum(lengths)
    chunks = min(torch.get_num_threads(), max(1, total // MIN_SPLIT))
    o = torch.empty(KV, R, D)
    lse = torch.empty(KV, R)
    lib.segment_attention(_ptr(rows), KV, R, D, keys, values, (ctypes.c_long * len(held))(*lengths), len(held),
                          ctypes.cast(limit.data_ptr(), _P(ctypes.c_long)), chunks, _ptr(o), _ptr(lse))
    return o.reshape(1, H, T, D), lse.reshape(1, H, T)


def _held(segments: list[tuple[torch.Tensor, torch.Tensor]]):
    """One kv head's segments [1, 1, L_i, D] as the kernels take them: key and value row pointers and where
    each segment begins (the last entry: the end)."""
    held = [tuple(x if x.stride(-1) == 1 and x.stride(-2) == x.shape[-1] else x.contiguous() for x in kv)
            for kv in segments]
    keys = (_P(ctypes.c_float) * len(held))(*(ctypes.cast(k.data_ptr(), _P(ctypes.c_float)) for k, _ in held))
    values = (_P(ctypes.c_float) * len(held))(*(ctypes.cast(v.data_ptr(), _P(ctypes.c_float)) for _, v in held))
    starts = [0]
    for k, _ in held:
        starts.append(starts[-1] + k.shape[2])
    return held, keys, values, (ctypes.c_long * len(starts))(*starts)


def block_bounds(segments: list[tuple[torch.Tensor, torch.Tensor]], first: int, blocks: int,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The elementwise min and max [blocks, D] of the keys of blocks first..first+blocks-1 of `size` positions
    (one kv head, fp32). Needs `available()` and size == the kernel's BLOCK (64)."""
    lib = _library()
    assert lib is not None and size == 64, "block_bounds needs the compiled kernel (available()) and blocks of 64"
    held, keys, _, starts = _held(segments)
    D = held[0][0].shape[-1]
    lo, hi = torch.empty(blocks, D), torch.empty(blocks, D)
    lib.block_bounds(keys, starts, len(held), D, first, blocks, torch.get_num_threads(), _ptr(lo), _ptr(hi))
    return lo, hi


def selected_attention(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], blocks: torch.Tensor,
                       local: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (h, t) of q [1, H, T, D] against the blocks of 64 positions in blocks [1, H, T, K] (-1: none) and the
    positions local[t]..last[t] of one kv head's segments, fp32 on CPU: (o [1, H, T, D], lse [1, H, T])."""
    lib = _library()
    assert lib is not None, "selected_attention needs the compiled kernel (available())"
    _, H, T, D = q.shape
    held, keys, values, starts = _held(segments)
    rows = (q.float() * D ** -0.5).transpose(1, 2).contiguous()                  # [1, T, H, D]
    index = [x.to(torch.long).contiguous() for x in (blocks[0].transpose(0, 1), local, last)]
    o, lse = torch.empty(T, H, D), torch.empty(T, H)
    lib.selected_attention(_ptr(rows), T, H, D, keys, values, starts, len(held), _lptr(index[0]), blocks.shape[-1],
                           _lptr(index[1]), _lptr(index[2]), torch.get_num_threads(), _ptr(o), _ptr(lse))
    return o.transpose(0, 1)[None], lse.transpose(0, 1)[None]


def select_and_attend(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], lo: torch.Tensor,
                      hi: torch.Tensor, past: int, recent: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`selected_attention` for a few rows with their blocks chosen in the same call from the bounds lo, hi [n, D]
    of the first n blocks (at least those before the last row's recent keys), as select.py chooses them: (o [1,
    H, T, D], lse [1, H, T]). Needs `available()`."""
    lib = _library()
    assert lib is not None, "select_and_attend needs the compiled kernel (available())"
    _, H, T, D = q.shape
    held, keys, values, starts = _held(segments)
    rows = (q.float() * D ** -0.5).transpose(1, 2).contiguous()                  # [1, T, H, D]
    lo, hi = lo.float().contiguous(), hi.float().contiguous()
    o, lse = torch.empty(T, H, D), torch.empty(T, H)
    if lib.select_and_attend(_ptr(rows), T, H, D, keys, values, starts, len(held), _ptr(lo), _ptr(hi), lo.shape[0],
                             blocks, past, recent, torch.get_num_threads(), _ptr(o), _ptr(lse)):
        raise MemoryError(f"select_and_attend: no memory for {T} rows")
    return o.transpose(0, 1)[None], lse.transpose(0, 1)[None]


def top_blocks(scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """For scores [R, n] (fp32): each row's k highest among its first valid[r] columns, by ascending column,
    -1 where it has fewer: [R, k]. Needs `available()`."""
    lib = _library()
    assert lib is not None, "top_blocks needs the compiled kernel (available())"
    scores, valid = scores.contiguous(), valid.to(torch.long).contiguous()
    out = torch.empty(scores.shape[0], k, dtype=torch.long)
    lib.top_blocks(_ptr(scores), scores.shape[0], scores.shape[1], _lptr(valid), k, torch.get_num_threads(),
                   _lptr(out))
    return out


def _lptr(x: torch.Tensor):
    return ctypes.cast(x.data_ptr(), _P(ctypes.c_long))


def _ptr(x: torch.Tensor):
    return ctypes.cast(x.data_ptr(), _P(ctypes.c_float))
