"""Next-token cross-entropy through the tied head without [N, V] logits in memory.

With a 16K vocabulary and d_model 256 the head is the largest matmul of a step. The fused form
computes the loss and both gradients chunk by chunk in the forward pass (as Liger's fused linear
cross-entropy does), so each chunk's logits are made once and never recomputed in backward:
three head-sized matmuls and one softmax per chunk instead of four and two with checkpointing.
Compiled, the softmax, the one-hot subtraction and the casts become one pass over the logits.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

IGNORE = -100


def _nll(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    picked = logits.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    return ((lse - picked) * rows).sum()


def row_weights(targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's weight in the summed loss (fp32): 0 for IGNORE targets, else 1 or the row's `weights`."""
    kept = (targets != IGNORE).float()
    return kept if weights is None else kept * weights.float()


def nll_and_grad(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A chunk's weighted sum of negative log-likelihoods (fp32; `rows`: `row_weights`) and its gradient with
    respect to the logits [n, V], (softmax - onehot(target)) x the row's weight, in the logits' dtype."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    grad = (x - lse[:, None]).exp() - F.one_hot(targets.clamp_min(0), x.shape[1])
    return _nll(x, lse, targets, rows), (grad * rows[:, None]).to(logits.dtype)


@functools.cache
def _compiled_nll_and_grad():
    return torch.compile(nll_and_grad, dynamic=False)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, chunk: int,
                compiled: bool) -> torch.Tensor:
        step = _compiled_nll_and_grad() if compiled else nll_and_grad
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        w = weight.to(h.dtype)
        for i in range(0, h.shape[0], chunk):
            hc = h[i:i + chunk]
            nll, g = step(hc @ w.T, targets[i:i + chunk], rows[i:i + chunk])  # under autocast the matmuls run in bf16
            total += nll
            grad_h[i:i + chunk] = g @ w.to(g.dtype)
            grad_w += (g.T @ hc.to(g.dtype)).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad.to(grad_h.dtype), (grad_w * grad).to(ctx.weight_dtype), None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 2048,
                         compiled: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over rows of cross_entropy(h @ weight.T, targets), each times its `rows` weight (`row_weights`; by
    default 1, and 0 for IGNORE targets). h [N, D], weight [V, D], targets [N]. Fused (gradients made in forward)
    when grad is on, a plain chunked loss otherwise; `compiled` compiles the per-chunk softmax gradient (training:
    one fixed chunk shape)."""
    rows = row_weights(targets) if rows is None else rows
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(h, weight, targets, rows, chunk, compiled)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for i in range(0, h.shape[0], chunk):
        logits = (h[i:i + chunk] @ weight.to(h.dtype).T).float()
        total += _nll(logits, torch.logsumexp(logits, dim=-1), targets[i:i + chunk], rows[i:i + chunk])
    return total
