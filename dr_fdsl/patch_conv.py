"""A ViT's patch embedding whose input gradient is one matrix product instead of oneDNN's strided deconvolution.

A learnable renderer needs the gradient of the loss with respect to the image, and the first thing it flows back
through is the patch embedding: a convolution whose kernel equals its stride (non-overlapping patches). On CPU,
PyTorch hands that input gradient to oneDNN, which computes it as a strided transposed convolution and is slow at
it: on this project's 2-core VM (quiet, 2026-12-08), timm ``test_vit``'s patch embedding at 64 px, batch 32
(``tools/bench.py``'s setting), forward and backward took 9.7-12.4 ms with the input gradient and 1.6 ms without
it; with the input gradient as one product, 2.7-4.0 ms.

With non-overlapping patches the input gradient is exactly ``grad_x[b, c, h*k + i, w*k + j] = sum_d
grad_y[b, d, h, w] * W[d, c, i, j]``, a ``(B*H*W, D) x (D, C*k*k)`` product. The forward and the weight and bias
gradients are PyTorch's own calls, unchanged; only the input gradient's summation may round differently (it
equals oneDNN's bit for bit for widths D = 64 and 192, ``test_vit`` and ViT-Tiny, at batch 8-32, and differs in
the last bits at D = 384: measured, ``tests/test_patch_conv.py``). Used on CPU float32 only; elsewhere (CUDA,
autocast) the convolution runs as it would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _PatchConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        # x (B, C, H, W); weight (D, C, k, k); bias (D,) or None; stride k, no padding
        k = weight.shape[-1]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride=k)

    @staticmethod
    def backward(ctx, grad_out):  # differentiable itself (einsum, convolution_backward): double backward works
        x, weight = ctx.saved_tensors
        d, c, k, _ = weight.shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            b, _, h, w = grad_out.shape
            grad_x = torch.einsum("bdhw,dcij->bchiwj", grad_out, weight).reshape(b, c, h * k, w * k)
            if grad_x.shape != x.shape:  # rows and columns past the last whole patch: the convolution drops them
                grad_x = F.pad(grad_x, (0, x.shape[3] - w * k, 0, x.shape[2] - h * k))
        wants = [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        if wants[1] or wants[2]:  # PyTorch's own weight and bias gradients, as autograd would ask for them
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [d] if ctx.has_bias else None, [k, k], [0, 0], [1, 1], False, [0, 0], 1, wants)
        return grad_x, grad_w, grad_b


class PatchConv2d(nn.Conv2d):
    """``nn.Conv2d`` with kernel = stride, no padding: the same forward and parameters (so the same state dict),
    with the input gradient of :class:`_PatchConv` on CPU float32 outside autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            return _PatchConv.apply(x, self.weight, self.bias)
        return super().forward(x)


def is_patch_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain convolution over non-overlapping square patches."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == conv.stride and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def use_patch_conv(model: nn.Module) -> nn.Module:
    """``model`` with its patch embedding's convolution (timm's ``patch_embed.proj``) made a
    :class:`PatchConv2d` holding the same parameters; a model without one is returned as it is."""
    embed = getattr(model, "patch_embed", None)
    conv = getattr(embed, "proj", None)
    if conv is not None and is_patch_conv(conv):
        fast = PatchConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                           bias=conv.bias is not None, device="meta")
        fast.weight, fast.bias = conv.weight, conv.bias  # the same Parameter objects: values, init, names kept
        fast.train(conv.training)
        embed.proj = fast
    return model
