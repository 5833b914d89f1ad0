"""Learnt rendering that can move and be seen (issue 24): residual tables, what the tables learnt, the leak penalty,
random colours."""

import pytest
import torch

from dr_fdsl.bank import PointBank
from dr_fdsl.config import RendererConfig

LR = 1e-3


def tiny_bank(num_classes=4, num_points=50):
    g = torch.Generator().manual_seed(0)
    return PointBank(torch.rand(num_classes, num_points, 3, generator=g) * 2 - 1, {}, {"tiny": True}, 0)


def one_step(renderer):
    """One SparseAdam step of the tables with a gradient of magnitude 1 on every entry, pointing each value towards
    the middle of its range (so that none reaches a bound); returns the colour and radius changes."""
    lo, hi = renderer.cfg.radius_min, renderer.cfg.radius_max
    colors, radii = renderer.colors(), renderer.radii()
    loss = (colors * torch.where(colors.detach() >= 0.5, 1.0, -1.0)).sum()
    loss = loss + (radii * torch.where(radii.detach() >= (lo + hi) / 2, 1.0, -1.0)).sum()
    loss.backward()
    for p in renderer.parameters():
        p.grad = p.grad.to_sparse()
    optimizer = torch.optim.SparseAdam(list(renderer.parameters()), lr=LR)
    optimizer.step()
    renderer.project_()
    with torch.no_grad():
        return renderer.colors() - colors.detach(), renderer.radii() - radii.detach()


@pytest.mark.parametrize("color_init, radius_init", [("white", 0.01), ("grey", 0.03), ("palette", 0.05)])
def test_one_step_moves_every_colour_and_radius_by_the_same_fraction_of_its_range(color_init, radius_init):
    """The default of a learnable renderer (residual tables): white, grey and palette colours, and radii at either
    bound or inside, all move by lr x their range in one step of the same gradient."""
    from dr_fdsl.render import PointRenderer

    cfg = RendererConfig(mode="joint", color_init=color_init, radius_init=radius_init, radius_min=0.01,
                         radius_max=0.05, image_size=16)
    renderer = PointRenderer(tiny_bank(), cfg)
    assert (renderer.color_param, renderer.radius_param) == ("residual", "residual")
    assert float(renderer.radii().detach().max()) == pytest.approx(radius_init, rel=1e-6)  # the initial values, exact
    color_move, radius_move = one_step(renderer)
    torch.testing.assert_close(color_move.abs(), torch.full_like(color_move, LR), rtol=1e-3, atol=0)
    torch.testing.assert_close(radius_move.abs(), torch.full_like(radius_move, LR * 0.04), rtol=1e-3, atol=0)


def test_squash_tables_barely_move_from_white():
    """What residual tables fix: under squash one step moves white a hundred times less than grey."""
    from dr_fdsl.render import PointRenderer

    moves = {}
    for init in ("white", "grey"):
        cfg = RendererConfig(mode="joint", color_init=init, color_param="squash", image_size=16)
        moves[init] = float(one_step(PointRenderer(tiny_bank(), cfg))[0].abs().mean())
    assert moves["white"] < moves["grey"] / 100  # grey: slope 0.5, 5e-4 a step


def test_frozen_keeps_squash_and_residual_tables_stay_in_their_bounds():
    """auto is squash in mode frozen (its renders keep their values); residual entries pushed past a bound are
    projected back onto it, and still get gradients there."""
    from dr_fdsl.render import PointRenderer

    frozen = PointRenderer(tiny_bank(), RendererConfig(image_size=16))
    assert (frozen.color_param, frozen.radius_param, frozen.color_start) == ("squash", "squash", None)
    renderer = PointRenderer(tiny_bank(), RendererConfig(mode="joint", image_size=16, radius_min=0.01,
                                                         radius_max=0.05, radius_init=0.02))
    with torch.no_grad():
        renderer.color_logits.add_(torch.linspace(-3, 3, renderer.color_logits.numel()).view_as(renderer.color_logits))
        renderer.radius_logits.fill_(5.0)
    renderer.project_()
    colors, radii = renderer.colors(), renderer.radii()
    assert colors.min() == 0 and colors.max() == 1  # a float32 ulp may stay between a radius and its bound
    assert float(radii.max()) <= 0.05 and float(radii.min()) == pytest.approx(0.05, abs=1e-8)
    (colors.sum() + radii.sum()).backward()
    assert (renderer.color_logits.grad == 1).all() and (renderer.radius_logits.grad == 0.04).all()
