"""Chunkwise-parallel gated delta rule (the WY representation, as in Yang et al. 2024, "Gated Delta Networks").

Within a chunk of C tokens the delta-rule updates are folded into one triangular solve; across chunks
the state is carried in fp32. Cost O(T C (K + V)) instead of the recurrence's T sequential steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..compile import graph_break, on_triton


def chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           scale: float, state: torch.Tensor | None = None,
                           chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_delta_rule`: returns (o [B, H, T, V] fp32, final state [B, H, K, V] fp32).
    On CUDA tensors, the Triton kernels (fused_chunk.py), with their backward where autograd records; elsewhere
    `torch_chunk_gated_delta_rule`."""
    if on_triton(q):
        return _triton_chunks(q, k, v, g, beta, scale, state, chunk_size)
    return torch_chunk_gated_delta_rule(q, k, v, g, beta, scale, state, chunk_size)


def torch_chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                 beta: torch.Tensor, scale: float, state: torch.Tensor | None = None,
                                 chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise form in PyTorch ops (the CPU path; autograd is its backward)."""
    B, H, T, K = k.shape
    V, C = v.shape[-1], chunk_size
    pad = (-T) % C
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    if pad:  # padded steps have g = 0 (no decay) and beta = 0 (no write): the state passes through unchanged
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    N = (T + pad) // C
    q, k, v = (x.reshape(B, H, N, C, -1) for x in (q * scale, k, v))
    g, beta = g.reshape(B, H, N, C).cumsum(-1), beta.reshape(B, H, N, C)

    k_beta, v_beta = k * beta[..., None], v * beta[..., None]
    decay = (g[..., :, None] - g[..., None, :]).tril().exp().tril()          # [B,H,N,C,C], exp(g_i - g_j), j <= i
    strictly_lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    L = ((k_beta @ k.transpose(-1, -2)) * decay).masked_fill(~strictly_lower, 0)
    eye = torch.eye(C, dtype=torch.float32, device=q.device)
    # T = (I + L)^-1 turns the sequential delta-rule corrections into one matrix product.
    Tinv = torch.linalg.solve_triangular(eye + L, eye.expand_as(L), upper=False, unitriangular=True)
    u = Tinv @ v_beta                                                      # pseudo-values
    w = Tinv @ (k_beta * g.exp()[..., None])                               # what the carried state subtracts

    # Everything that does not depend on the carried state is computed for all chunks at once; the loop
    # keeps only the three state products. Chunks are unbound (not indexed) and outputs stacked, so the
    # backward pass writes each chunk's gradient once instead of zero-filling a full tensor per chunk.
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = ((q @ k.transpose(-1, -2)) * decay).masked_fill(~causal, 0)    # [B,H,N,C,C]
    last = g[..., -1:]                                                     # [B,H,N,1]
    q_decayed = q * g.exp()[..., None]                                     # reads the state at chunk start
    k_decayed = (k * (last - g).exp()[..., None]).transpose(-1, -2)        # writes into the chunk-end state
    S = torch.zeros(B, H, K, V, dtype=torch.float32, device=q.device) if state is None else state.float().clone()
    # On a CPU a compiled graph calls the loop as it is: unrolled there (N chunks of three products, nothing to fuse)
    # it gave NaN gradients in bf16 on an Intel Xeon (BENCHMARKS.md, Training throughput). A GPU keeps it unrolled:
    # there each op outside the graph is a kernel launch. The wrapper is made here, not at import: it imports the
    # compiler (~2 s of every start).
    outside = torch.compiler.is_compiling() and not q.is_cuda
    carry = torch.compiler.disable(_carry_state) if outside else _carry_state
    o, S = carry(q_decayed, k_decayed, u, w, scores, last.exp(), S)
    return o.reshape(B, H, N * C, V)[:, :, :T], S


def _carry_state(q_decayed: torch.Tensor, k_decayed: torch.Tensor, u: torch.Tensor, w: torch.Tensor,
                 scores: torch.Tensor, decay: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunks in order, each read from the state its predecessors left and writing it on: (outputs [B, H, N, C,
    V], final state)."""
    outs = []
    for qd, kd, un, wn, sn, ln in zip(*(x.unbind(2) for x in (q_decayed, k_decayed, u, w, scores, decay))):
        new = un - wn @ S                                                  # [B,H,C,V]
        outs.append(qd @ S + sn @ new)
        S = S * ln[..., None] + kd @ new
    return torch.stack(outs, 2), S


@graph_break
def _triton_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                   scale: float, state: torch.Tensor | None, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .fused_chunk import ChunkGatedDeltaRule, fused_chunk_gated_delta_rule   # Triton only where a GPU runs it
    if torch.is_grad_enabled():
        return ChunkGatedDeltaRule.apply(q, k, v, g, beta, scale, state, chunk_size)
    return fused_chunk_gated_delta_rule(q, k, v, g, beta, scale, state, chunk_size)
