"""Block-selected attention for a long latent cache (lql): each query sees its recent keys and the `blocks`
blocks of 64 older keys whose bounds promise it the highest scores (Quest, Tang et al. 2024), so a query costs
the same whatever the context's length. Up to `recent + blocks * 64` keys it is exact causal attention.

Which keys a query sees depends only on its position and the keys before it, never on how the queries are
batched into forwards: a warm cache answers as a cold one. The shipped model was trained on 4K windows, and
on held-out crates packed to 16K it scores as well with 4K selected keys as with all of them (BENCHMARKS.md).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.checkpoint

from . import cpu

Bounds = Callable[[list[torch.Tensor], int], tuple[torch.Tensor, torch.Tensor]]

BLOCK = 64           # keys per block: the unit of selection, and the C kernel's block of keys
GATHERED = {"cpu": 1 << 24, "cuda": 1 << 28}   # numbers per gather of the PyTorch path: [B, H, rows, keys seen, D]
SCORE_ROWS = 4096    # query rows per step of the selection: bounds its [rows, blocks] scores
FEW_ROWS = 4         # queries up to which the C kernel also chooses the blocks (select_and_attend)
CAST_ROWS = 16       # queries from which a cache in another dtype is copied to fp32 for the C kernel, not gathered


def local_starts(past: int, T: int, recent: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The first recent key of each query at positions past..past+T-1: `recent` keys back, down to a block's
    start (so the recent keys are recent..recent+63 and the older ones whole blocks): [T]."""
    positions = torch.arange(past, past + T, device=device)
    return (positions + 1 - recent).clamp(min=0) // BLOCK * BLOCK


def select_blocks(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, local: torch.Tensor,
                  blocks: int) -> torch.Tensor:
    """For q [B, H, T, D] and the bounds [B, n, D] of the first n blocks: the `blocks` blocks before each
    query's recent keys with the highest upper bound on its score, ascending, -1 where it has fewer: [B, H, T,
    blocks]."""
    B, H, T, D = q.shape
    n = lo.shape[1]
    out = torch.full((B, H, T, blocks), -1, dtype=torch.long, device=q.device)
    if min(blocks, n) == 0:
        return out
    older = local // BLOCK                                   # query t may choose among blocks 0..older[t]-1
    bounds = torch.cat([hi, lo], -1).float().transpose(-1, -2)                           # [B, 2D, n]
    for start in range(0, T, SCORE_ROWS):
        rows = q[:, :, start:start + SCORE_ROWS].float()
        score = torch.cat([rows.clamp(min=0), rows.clamp(max=0)], -1).flatten(1, 2) @ bounds    # [B, H * R, n]
        R = rows.shape[2]
        if _c_kernel(score):
            valid = older[start:start + R].repeat(H)
            out[:, :, start:start + R] = cpu.top_blocks(score[0], valid, blocks).view(1, H, R, blocks)
            continue
        score = score.view(B, H, R, n)
        shared = int(older[start])              # columns every row of this step may choose: mask only the rest
        score[..., shared:] = score[..., shared:].masked_fill(
            torch.arange(shared, n, device=q.device) >= older[start:start + R, None], float("-inf"))
        top, index = score.topk(min(blocks, n), dim=-1)
        out[:, :, start:start + R, :index.shape[-1]] = index.masked_fill(top == float("-inf"), -1).sort(-1).values
    return out


def block_bounds(keys: list[torch.Tensor], first: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The elementwise min and max [B, end - first, D] of blocks first..end-1 of keys held in segments [B, L_i, D]."""
    if end <= first:
        empty = keys[0].new_zeros(keys[0].shape[0], 0, keys[0].shape[-1])
        return empty, empty
    if _c_kernel(keys[0]):
        lo, hi = cpu.block_bounds([(k[:, None], k[:, None]) for k in keys], first, end - first, BLOCK)
        return lo[None], hi[None]
    joined = torch.cat(keys, 1)[:, first * BLOCK:end * BLOCK].unflatten(1, (end - first, BLOCK))
    return joined.amin(2), joined.amax(2)


def selected_attention(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], past: int,
                       recent: int, blocks: int, bounds: Bounds | None = None) -> torch.Tensor:
    """q [B, H, T, D] at positions past..past+T-1 against one kv head's keys and values [B, 1, L_i, D] held in
    segments (together past + T positions), each query seeing its recent keys and its selected blocks.
    `bounds(keys, n)`: the first n blocks' bounds where the caller keeps them (model/cache.py)."""
    T = q.shape[2]
    held = sum(k.shape[2] for k, _ in segments)
    if held != past + T:
        raise ValueError(f"the segments hold {held} positions, not past + T = {past + T}")
    keys = [k[:, 0] for k, _ in segments]
    if T <= FEW_ROWS and _c_kernel(q) and _c_kernel(keys[0]):     # a decode step: one C call chooses and attends
        lo, hi = (bounds or _bounds)(keys, max(0, past + T - recent) // BLOCK)    # up to the last row's recent keys
        return cpu.select_and_attend(q, segments, lo[0], hi[0], past, recent, blocks)[0]
    local = local_starts(past, T, recent, q.device)
    lo, hi = (bounds or _bounds)(keys, int(local[-1]) // BLOCK)
    chosen = select_blocks(q, lo, hi, local, blocks)
    last = torch.arange(past, past + T, device=q.device)
    if _c_kernel(q) and _c_kernel(keys[0]):
        return cpu.selected_attention(q, segments, chosen, local, last)[0].to(q.dtype)
    if T >= CAST_ROWS and _c_kernel(q, cast=True) and _c_kernel(keys[0], cast=True):   # e.g. bf16 on a CPU
        fp32 = [_fp32(k, v) for k, v in segments]
        return cpu.selected_attention(q.float(), fp32, chosen, local, last)[0].to(q.dtype)
    return _gathered(q, torch.cat(keys, 1), torch.cat([v[:, 0] for _, v in segments], 1), chosen, local, last, recent)


def _bounds(keys: list[torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return block_bounds(keys, 0, n)


def _c_kernel(x: torch.Tensor, cast: bool = False) -> bool:
    """Whether the C kernel takes x: fp32 (or any dtype, to be cast), on CPU, batch 1, no gradient."""
    return (x.device.type == "cpu" and (cast or x.dtype == torch.float32) and x.shape[0] == 1
            and not torch.is_grad_enabled() and cpu.available())


def _fp32(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A segment's keys and values in fp32: one copy where they are one tensor, as lql's latents are."""
    k32 = k.float()
    return k32, k32 if v is k else v.float()


def _gathered(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chosen: torch.Tensor, local: torch.Tensor,
              last: torch.Tensor, recent: int) -> torch.Tensor:
    """The PyTorch path (any device and dtype, autograd included): each query's keys gathered, a few queries
    at a time, from k, v [B, N, D] joined. Under autograd each step is recomputed in the backward pass instead
    of keeping its gathers (35 GB for a 16K training window)."""
    B, H, T, D = q.shape
    near = local[:, None] + torch.arange(recent + BLOCK, device=q.device)                   # [T, W]
    near_ok = near <= last[:, None]
    seen = chosen.shape[-1] * BLOCK + near.shape[1]
    step = max(1, GATHERED.get(q.device.type, GATHERED["cpu"]) // (B * H * seen * D))
    outs = []
    for start in range(0, T, step):
        rows = slice(start, start + step)
        args = (q[:, :, rows], k, v, chosen[:, :, rows], near[rows], near_ok[rows])
        if torch.is_grad_enabled():
            outs.append(torch.utils.checkpoint.checkpoint(_gathered_rows, *args, use_reentrant=False))
        else:
            outs.append(_gathered_rows(*args))
    return torch.cat(outs, 2)


def _gathered_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, picked: torch.Tensor, near: torch.Tensor,
                   near_ok: torch.Tensor) -> torch.Tensor:
    """q [B, H, R, D] against its picked blocks [B, H, R, K] and its recent positions near [R, W] (near_ok: the
    ones it may see)."""
    B, H, R, D = q.shape
    far = (picked.clamp(min=0)[..., None] * BLOCK + torch.arange(BLOCK, device=q.device)).flatten(-2)
    far_ok = (picked >= 0)[..., None].expand(*picked.shape, BLOCK).flatten(-2)              # [B, H, R, K * 64]
    position = torch.cat([far, near.expand(B, H, R, -1)], -1).clamp(max=k.shape[1] - 1)
    seen = torch.cat([far_ok, near_ok.expand(B, H, R, -1)], -1)
    index = position.flatten(1)[..., None].expand(-1, -1, D)
    keys = k.gather(1, index).view(B, H, R, -1, D).to(q.dtype)              # a cache kept in another dtype
    values = v.gather(1, index).view(B, H, R, -1, v.shape[-1]).to(q.dtype)
    score = (q[:, :, :, None] @ keys.transpose(-1, -2)).squeeze(-2).float() * D ** -0.5
    weight = score.masked_fill(~seen, float("-inf")).softmax(-1).to(q.dtype)
    return (weight[..., None, :] @ values).squeeze(-2)
