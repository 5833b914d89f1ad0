"""PatchConv2d: the patch embedding's forward and gradients against nn.Conv2d under autograd."""

import pytest
import timm
import torch
from torch import nn

from dr_fdsl.config import ModelConfig
from dr_fdsl.models import create_classifier
from dr_fdsl.patch_conv import PatchConv2d, is_patch_conv, use_patch_conv


def _pair(d: int, k: int, bias: bool = True, seed: int = 0) -> tuple[nn.Conv2d, PatchConv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, d, k, stride=k, bias=bias)
    holder = nn.Module()
    holder.patch_embed = nn.Module()
    holder.patch_embed.proj = nn.Conv2d(3, d, k, stride=k, bias=bias)
    holder.patch_embed.proj.load_state_dict(conv.state_dict())
    return conv, use_patch_conv(holder).patch_embed.proj


@pytest.mark.parametrize("d,k,size,bias", [(64, 16, 64, True), (64, 8, 32, True), (192, 16, 224, False),
                                         (64, 8, 37, True)])  # 37 px: the convolution drops the last 5
def test_forward_equal_and_gradients_match_autograd(d, k, size, bias):
    conv, fast = _pair(d, k, bias)
    assert isinstance(fast, PatchConv2d)
    x = torch.rand(4, 3, size, size)
    g = torch.randn(4, d, size // k, size // k)
    grads = []
    for module in (conv, fast):
        xi = x.clone().requires_grad_()
        out = module(xi)
        out.backward(g)
        grads.append((out.detach(), xi.grad, module.weight.grad, None if module.bias is None else module.bias.grad))
    (y0, gx0, gw0, gb0), (y1, gx1, gw1, gb1) = grads
    assert torch.equal(y0, y1)  # the same forward call
    assert torch.equal(gw0, gw1)  # PyTorch's own weight gradient
    assert (gb0 is None and gb1 is None) or torch.equal(gb0, gb1)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-6)  # one product: the summation may round differently


def test_input_gradient_against_float64_loop():
    """The input gradient is the slow, obvious sum over embedding channels, pixel by pixel of each patch."""
    torch.manual_seed(1)
    fast = PatchConv2d(2, 3, 4, stride=4)
    xf = torch.rand(2, 2, 8, 8, requires_grad=True)
    g = torch.randn(2, 3, 2, 2)
    fast(xf).backward(g)
    want = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    w = fast.weight.detach().double()
    for b in range(2):
        for h in range(2):
            for col in range(2):
                for d in range(3):
                    want[b, :, 4 * h:4 * h + 4, 4 * col:4 * col + 4] += g[b, d, h, col].double() * w[d]
    torch.testing.assert_close(xf.grad.double(), want, rtol=1e-6, atol=1e-6)


def test_only_non_overlapping_patch_convolutions_are_replaced():
    assert is_patch_conv(nn.Conv2d(3, 8, 4, stride=4))
    assert not is_patch_conv(nn.Conv2d(3, 8, 4, stride=2))
    assert not is_patch_conv(nn.Conv2d(3, 8, 4, stride=4, padding=1))
    assert not is_patch_conv(nn.Conv2d(3, 8, 4, stride=4, groups=1, dilation=2))
    resnet = timm.create_model("resnet10t", num_classes=3)
    assert use_patch_conv(resnet) is resnet and not any(isinstance(m, PatchConv2d) for m in resnet.modules())


def test_classifier_keeps_its_parameters_and_state_dict_names():
    torch.manual_seed(0)
    reference = timm.create_model("test_vit", img_size=32, num_classes=10, drop_path_rate=0.0)
    torch.manual_seed(0)
    model = create_classifier(ModelConfig(name="test_vit", drop_path=0.0), 10, 32)
    assert isinstance(model.patch_embed.proj, PatchConv2d)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(model.eval()(x), reference.eval()(x))


def test_double_backward_matches_autograd():
    """The lookahead mode's exact hypergradient differentiates the weight gradient with respect to the image."""
    conv, fast = _pair(64, 8, True, seed=2)
    x = torch.rand(2, 3, 16, 16)
    v = torch.randn_like(conv.weight)
    second = []
    for module in (conv, fast):
        xi = x.clone().requires_grad_()
        (grad_w,) = torch.autograd.grad(module(xi).pow(2).sum(), module.weight, create_graph=True)
        (grad_x,) = torch.autograd.grad((grad_w * v).sum(), xi)
        second.append(grad_x)
    assert second[0].abs().max() > 0
    torch.testing.assert_close(second[1], second[0], rtol=1e-4, atol=1e-5)
