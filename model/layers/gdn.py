"""`gdn`: linear attention with the gated delta rule (Gated DeltaNet, as in Qwen3-Next and Kimi Linear's KDA).

x → q, k, v (short causal depthwise conv + SiLU; q and k L2-normalised per head), a write strength
beta = sigmoid(.) and a decay g = -exp(A) * softplus(. + dt_bias) per head and token; the ops in
kernels/gdn; a per-head RMSNorm of the output gated by SiLU(.), then the output projection. With a cache on
CPU in fp32 (the engine), everything between the projections runs in one C call (`fused_gdn_step`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.gdn import chunk_gated_delta_rule, fused_gdn_step, recurrent_gated_delta_step

from ..cache import GDNState
from ..config import ModelConfig


class GatedDeltaNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.h, self.dk = config.gdn_heads, config.gdn_head_dim
        self.chunk_size, self.eps = config.chunk_size, config.norm_eps
        self.channels = 3 * self.h * self.dk
        self.qkv = nn.Linear(config.d_model, self.channels, bias=False)
        self.conv = nn.Conv1d(self.channels, self.channels, config.conv_size, groups=self.channels, bias=False)
        self.beta_decay = nn.Linear(config.d_model, 2 * self.h, bias=False)
        # drawn on the CPU whatever the default device: log and expm1 on the meta device import torch._dynamo
        self.A_log = nn.Parameter(torch.log(torch.empty(self.h, device="cpu").uniform_(1, 16)))
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.empty(self.h, device="cpu").uniform_(1e-3, 1e-1))))
        self.gate = nn.Linear(config.d_model, self.h * self.dk, bias=False)
        self.norm = nn.RMSNorm(self.dk, eps=config.norm_eps)
        self.out = nn.Linear(self.h * self.dk, config.d_model, bias=False)

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> GDNState:
        return GDNState(batch, self.h, self.dk, self.dk, self.channels, self.conv.kernel_size[0], dtype, device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: GDNState | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        scale = self.dk ** -0.5
        mixed, ba, gate = self.qkv(x), self.beta_decay(x), self.gate(x)
        if cache is not None:
            fused = fused_gdn_step(mixed, cache.conv, self.conv.weight, ba, self.A_log, self.dt_bias, cache.state,
                                   scale, gate, self.norm.weight, self.eps)
            if fused is not None:
                return self.out(fused)
        mixed = mixed.transpose(1, 2)                                          # [B, C, T]
        width = self.conv.kernel_size[0] - 1
        tail = cache.conv if cache is not None else mixed.new_zeros(B, self.channels, width)
        padded = torch.cat([tail, mixed], dim=-1)
        if cache is not None:
            cache.conv.copy_(padded[..., -width:])
        if T == 1:   # one position: a dot product per channel; conv1d costs ~10x more per call here
            mixed = F.silu((padded * self.conv.weight[:, 0]).sum(-1, keepdim=True))
        else:
            mixed = F.silu(F.conv1d(padded, self.conv.weight, groups=self.channels))
        q, k, v = mixed.view(B, 3, self.h, self.dk, T).permute(1, 0, 2, 4, 3)  # each [B, H, T, K]
        q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
        beta, a = ba.float().chunk(2, dim=-1)                                  # [B, T, H]
        beta = beta.sigmoid().transpose(1, 2)
        g = (-self.A_log.float().exp() * F.softplus(a + self.dt_bias.float())).transpose(1, 2)
        if cache is not None and T == 1:
            o = recurrent_gated_delta_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], beta[:, :, 0], scale,
                                           cache.state)[:, :, None]
        else:
            o, final = chunk_gated_delta_rule(q, k, v, g, beta, scale,
                                              cache.state if cache is not None else None, self.chunk_size)
            if cache is not None:
                cache.state.copy_(final)
        o = self.norm(o.to(x.dtype).transpose(1, 2))                           # [B, T, H, K]
        o = o * F.silu(gate).view(B, T, self.h, self.dk)
        return self.out(o.reshape(B, T, -1))
