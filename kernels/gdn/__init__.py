"""Gated delta rule: chunkwise-parallel form (prefill, training), one-token recurrent form (decode), naive reference,
and a gdn layer's tokens between its projections in C for CPU, one after another (`fused_gdn_step`, None elsewhere).

Shapes: q, k [B, H, T, K] (L2-normalised), v [B, H, T, V], g [B, H, T] (log decay, <= 0),
beta [B, H, T] in (0, 1); state S [B, H, K, V] in fp32. Per step:
    S = exp(g_t) * S;   S = S + beta_t * k_t (v_t - k_t S)^T;   o_t = q_t S * scale
"""
from .chunk import chunk_gated_delta_rule
from .cpu import fused_gdn_step
from .naive import naive_gated_delta_rule
from .recurrent import recurrent_gated_delta_step

__all__ = ["chunk_gated_delta_rule", "fused_gdn_step", "naive_gated_delta_rule", "recurrent_gated_delta_step"]
