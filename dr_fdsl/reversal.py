"""The gradient reversal of domain-adversarial training (Ganin & Lempitsky, 2015): identity forward, the gradient
times ``-scale`` backward. Mode ``adversarial`` puts one between renderer and objective."""

from __future__ import annotations

import torch


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale`` (what is upstream ascends the loss)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None
