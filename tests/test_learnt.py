"""Learnt rendering that can move and be seen (issue 24): residual tables, what the tables learnt, the leak penalty,
random colours."""

import pytest
import torch

from dr_fdsl.bank import PointBank
from dr_fdsl.config import AugmentConfig, RendererConfig

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


def test_table_statistics_measure_drift_and_the_label_code_the_tables_could_carry():
    from dr_fdsl.render import PointRenderer

    cfg = RendererConfig(mode="joint", image_size=16, radius_init=0.02, radius_min=0.01, radius_max=0.05)
    renderer = PointRenderer(tiny_bank(), cfg)
    assert set(renderer.table_statistics().values()) == {0.0}  # white, one radius: nothing moved, no code
    with torch.no_grad():
        renderer.color_logits[0] = -0.5  # category 0 turns grey
        renderer.radius_logits[1, :25] = 0.25  # half of category 1's points grow by 0.01
    stats = renderer.table_statistics()
    means = torch.tensor([0.5, 1, 1, 1])
    assert stats["renderer/color_drift"] == pytest.approx(0.5 / 4)
    assert stats["renderer/color_between"] == pytest.approx(float(means.std(unbiased=False)), rel=1e-6)
    assert stats["renderer/color_code"] == pytest.approx(stats["renderer/color_between"] / 1e-3, rel=1e-6)
    radius_means = torch.tensor([0.02, 0.025, 0.02, 0.02])
    within = (0.005**2 / 4) ** 0.5  # category 1's points: std 0.005; the others' 0
    assert stats["renderer/radius_drift"] == pytest.approx(0.01 * 25 / 200, rel=1e-5)
    assert stats["renderer/radius_between"] == pytest.approx(float(radius_means.std(unbiased=False)), rel=1e-5)
    assert stats["renderer/radius_code"] == pytest.approx(stats["renderer/radius_between"] / within, rel=1e-5)
    shared = PointRenderer(tiny_bank(), RendererConfig(mode="joint", image_size=16, color_init="palette",
                                                       share_colors=True))
    assert shared.table_statistics()["renderer/color_between"] == 0  # one table for all: no code possible
    frozen = PointRenderer(tiny_bank(), RendererConfig(image_size=16, color_init="palette"))
    stats = frozen.table_statistics()
    assert stats["renderer/color_drift"] == 0 and stats["renderer/color_code"] > 0  # a palette per category


def probe_setup(tmp_path, bank_dir, penalty, *overrides):
    from dr_fdsl.objectives.classify import Classify
    from dr_fdsl.render import PointRenderer
    from tests.conftest import tiny

    cfg = tiny(tmp_path, bank_dir, "renderer.mode=joint", f"renderer.leak_penalty={penalty}",
               "renderer.color_init=palette", "renderer.image_size=16", "renderer.raster_backend=sort",
               "renderer.radius_init=0.08", "renderer.radius_max=0.1", "train.probe_lr=0.05", *overrides)
    torch.manual_seed(0)
    return Classify(cfg, 4, 1e-3, torch.device("cpu")), PointRenderer(tiny_bank(), cfg.renderer)


def table_gradients(objective, renderer, ids, seeds):
    """The tables' gradients (dense) and the whole probe's weight gradient from ``objective.probe_loss``."""
    images = renderer(ids, seeds)
    objective.probe_loss(images, ids, {}).backward(inputs=[*renderer.parameters(), objective.probe.linear.weight])
    grads = [p.grad.to_dense().clone() for p in renderer.parameters()], objective.probe.linear.weight.grad.clone()
    for p in (*renderer.parameters(), objective.probe.linear.weight):
        p.grad = None
    return grads


def test_the_leak_penalty_is_the_probes_confusion_and_the_probe_still_learns_its_own_loss(tmp_path, bank_dir):
    """The tables' gradient from the probe's loss is leak_penalty x that of the whole probe's cross-entropy against
    uniform predictions, its weights fixed (the split heads add none); the probe descends its plain cross-entropy."""
    import torch.nn.functional as F

    from dr_fdsl.probe import colour_statistics

    objective, renderer = probe_setup(tmp_path, bank_dir, 0.5)
    ids, seeds = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), torch.arange(8)
    with torch.no_grad():  # trained weights, so that the probe's predictions are not uniform already
        objective.probe.linear.weight.normal_(generator=torch.Generator().manual_seed(1))
    penalised, probe_grad = table_gradients(objective, renderer, ids, seeds)
    probe = objective.probe
    features = colour_statistics(renderer(ids, seeds), objective.background, differentiable=True)
    logits = probe.linear(probe.norm(features))
    probe_plain = torch.autograd.grad(F.cross_entropy(logits, ids), probe.linear.weight, retain_graph=True)[0]
    (-F.log_softmax(logits, 1).mean()).backward(inputs=list(renderer.parameters()))
    assert penalised[0].abs().sum() > 0
    for got, plain in zip(penalised, (p.grad.to_dense() for p in renderer.parameters())):
        torch.testing.assert_close(got, 0.5 * plain, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(probe_grad, probe_plain, rtol=1e-4, atol=1e-9)


def test_the_leak_penaltys_gradient_does_not_depend_on_the_labels(tmp_path, bank_dir):
    """Why confusion and not a reversal of the probe's cross-entropy: ascending that pushes each category's images
    away from its own weights, a direction per category, which per-category tables write as a new label code (the
    quickstart's probe read 0.900 with a reversal, 0.635 without the penalty). The renderer's gradient must be the
    same whatever the labels say, so that it cannot steer categories apart."""
    objective, renderer = probe_setup(tmp_path, bank_dir, 1.0)
    with torch.no_grad():
        objective.probe.linear.weight.normal_(generator=torch.Generator().manual_seed(1))
    ids, seeds = torch.tensor([0, 1, 2, 3]), torch.arange(4)
    objective.probe.eval()  # running statistics: the same normalisation for both batches
    true, _ = table_gradients(objective, renderer, ids, seeds)
    # The same images labelled with a permutation: only the labels differ.
    images = renderer(ids, seeds)
    objective.probe_loss(images, ids.roll(1), {}).backward(inputs=list(renderer.parameters()))
    relabelled = [p.grad.to_dense() for p in renderer.parameters()]
    assert true[0].abs().sum() > 0
    for a, b in zip(true, relabelled):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)


def probe_accuracy_after_training(tmp_path, bank_dir, penalty, steps=20):
    """The probe's accuracy on its last training batch after ``steps`` steps of probe and tables together."""
    objective, renderer = probe_setup(tmp_path, bank_dir, penalty)
    tables = torch.optim.SparseAdam(list(renderer.parameters()), lr=0.1)
    ids = torch.arange(16) % 4
    for step in range(steps):
        images = renderer(ids, torch.arange(16) + 16 * step)
        loss = objective.probe_loss(images, ids, metrics := {})
        loss.backward()
        for opt in (objective.probe_optimizer, tables):
            opt.step()
            opt.zero_grad(set_to_none=True)
        renderer.project_()
    return metrics["probe/train_acc"].item()


def test_with_the_leak_penalty_the_probe_reads_less_of_the_label(tmp_path, bank_dir):
    """Palette colours name the category; untouched they stay readable, while the penalised renderer makes them
    unreadable to the probe."""
    plain = probe_accuracy_after_training(tmp_path, bank_dir, 0.0)
    penalised = probe_accuracy_after_training(tmp_path, bank_dir, 5.0)
    assert plain >= 0.9 and penalised <= 0.5, (plain, penalised)  # measured: 1.0 and 0.25 (chance)


def slow_between_category_share(features, class_ids, eps):
    """The obvious reference: one statistic at a time, a loop over the categories present, float64."""
    shares = []
    for f in features.double().T:
        m = f.mean()
        between = sum((class_ids == c).sum() * (f[class_ids == c].mean() - m) ** 2 for c in class_ids.unique())
        shares.append(between / len(f) / (((f - m) ** 2).mean() + eps))
    return torch.stack(shares).mean()


def test_the_moments_term_is_the_between_category_share_of_each_statistics_variance():
    from dr_fdsl.probe import MOMENTS_EPS, between_category_share

    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(-3, 1, 14)  # statistics differ in scale by orders, as the probe's do
    features = torch.randn(24, 14, generator=g) * scales + torch.rand(14, generator=g)
    class_ids = torch.tensor([5, 1, 1, 7] * 6)[torch.randperm(24, generator=g)]  # unequal counts, not 0..K-1
    features[:, 3] = 0.25  # a constant statistic counts 0
    got = between_category_share(features, class_ids)
    want = slow_between_category_share(features, class_ids, MOMENTS_EPS)
    assert 0 < got < 1
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    # Every category with the same statistics (each category a copy of one set of rows): no share between them.
    rows = torch.randn(6, 14, generator=g) * scales
    same = between_category_share(rows.repeat(4, 1), torch.arange(4).repeat_interleave(6))
    assert same.abs() < 1e-6, same.item()


def test_the_moments_penalty_reaches_the_tables_only_and_the_probe_learns_its_own_loss(tmp_path, bank_dir):
    import torch.nn.functional as F

    from dr_fdsl.probe import between_category_share, colour_statistics

    objective, renderer = probe_setup(tmp_path, bank_dir, 0.5, "renderer.leak_form=moments")
    ids, seeds = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), torch.arange(8)
    tables, probe = list(renderer.parameters()), list(objective.probe.parameters())
    backbone = list(objective.model.parameters())
    loss = objective.probe_loss(renderer(ids, seeds), ids, {})
    grads = torch.autograd.grad(loss, [*tables, *probe, *backbone], allow_unused=True)
    table_grads, probe_grads = grads[:len(tables)], grads[len(tables):len(tables) + len(probe)]
    assert all(g is None for g in grads[len(tables) + len(probe):])  # the backbone: no gradient from it
    # The tables: exactly the penalty's gradient (the probe's own loss, on detached statistics, adds none).
    features = colour_statistics(renderer(ids, seeds), objective.background, differentiable=True)
    want = torch.autograd.grad(0.5 * between_category_share(features, ids), tables)
    for got, penalty in zip(table_grads, want):
        assert penalty.to_dense().abs().sum() > 0
        torch.testing.assert_close(got.to_dense(), penalty.to_dense(), rtol=1e-4, atol=1e-9)
    # The probe: its own three cross-entropies only (the moments term holds no probe weight). The probe's
    # BatchNorm saw the batch once more above, which does not change its batch-statistics forward.
    heads = objective.probe(features.detach())[:3]
    own = torch.autograd.grad(sum(F.cross_entropy(h, ids) for h in heads), probe)
    for got, plain in zip(probe_grads, own):
        torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("overrides, message", [
    (["renderer.leak_penalty=-1"], r"must be a number >= 0"),
    (["renderer.leak_penalty=1"], r"under renderer.mode=frozen"),
    (["renderer.leak_penalty=1", "renderer.mode=adversarial"], r"under renderer.mode=adversarial"),
    (["renderer.leak_penalty=1", "renderer.mode=match"], r"under renderer.mode=match"),
    (["renderer.leak_penalty=1", "renderer.mode=joint", "train.probe=false"], r"train.probe=false"),
    (["renderer.leak_penalty=1", "renderer.mode=joint", "train.objective=multilabel", "renderer.objects.max=2"],
     r"objective multilabel trains no probe"),
])
def test_a_leak_penalty_that_cannot_be_paid_is_refused_at_load(overrides, message):
    from dr_fdsl.config import load_config
    from dr_fdsl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^config key 'renderer.leak_penalty': .*" + message):
        load_config(None, overrides)
    for objective in ("classify", "classify+mim"):  # both train the probe (the spec says so, read at load)
        cfg = load_config(None, ["renderer.leak_penalty=1", "renderer.mode=joint", f"train.objective={objective}"])
        assert cfg.renderer.leak_penalty == 1


def test_an_unknown_leak_form_is_refused_naming_the_key():
    from dr_fdsl.config import load_config
    from dr_fdsl.errors import ConfigError
    from dr_fdsl.render.settings import validate_renderer

    with pytest.raises(ConfigError, match=r"^config key 'renderer.leak_form': 'moment' is not one of 'confusion', "):
        load_config(None, ["renderer.leak_form=moment"])
    with pytest.raises(ConfigError, match=r"^config key 'renderer.leak_form': must be one of confusion, moments"):
        validate_renderer(RendererConfig(leak_form="moment"))  # a config built in Python
    assert load_config(None, ["renderer.leak_form=moments"]).renderer.leak_form == "moments"


@pytest.mark.parametrize("kind", ["image", "point"])
def test_random_colours_per_image_or_point_come_from_the_image_key(kind):
    """Frozen white tables drawn in random colours: one per image, or one per point, the same for a (category, view
    seed) alone or in any batch (so a static export equals the in-loop render); off by default."""
    from dr_fdsl.render import PointRenderer

    bank = tiny_bank()
    plain = PointRenderer(bank, RendererConfig(image_size=16))
    renderer = PointRenderer(bank, RendererConfig(image_size=16, augment=AugmentConfig(random_colors=kind)))
    ids, seeds = torch.tensor([0, 0, 2]), torch.tensor([5, 6, 5])
    colors = renderer.scene(ids, seeds)[0].colors  # (3, N, 3)
    white = plain.scene(ids, seeds)[0].colors
    assert torch.equal(white, torch.full_like(white, float(white.max())))  # the default changes nothing
    per_image = colors.std(1).amax(-1)  # spread over an image's points
    assert (per_image == 0).all() if kind == "image" else (per_image > 0.2).all()
    assert not torch.equal(colors[0], colors[1]) and not torch.equal(colors[0], colors[2])  # other seed or category
    alone = renderer.scene(ids[2:], seeds[2:])[0].colors
    assert torch.equal(alone[0], colors[2])
    torch.testing.assert_close(renderer(ids[2:], seeds[2:]), renderer(ids, seeds)[2:], rtol=0, atol=0)


@pytest.mark.parametrize("color_param, share_radii", [("residual", False), ("clamp", False), ("residual", True)])
def test_projecting_the_rows_a_step_moved_gives_the_tables_of_projecting_all(color_param, share_radii):
    """optimizer_step projects only the rows of the tables' sparse gradients (the whole tables cost every step
    what 1,000 categories x 10,000 points cost); the tables equal those of a whole projection bit for bit."""
    from dr_fdsl.render import PointRenderer

    tables = []
    for partial in (False, True):
        renderer = PointRenderer(tiny_bank(num_classes=6), RendererConfig(
            mode="joint", color_init="palette", color_param=color_param, radius_param="residual",
            share_radii=share_radii, radius_init=0.03))
        initial = renderer.color_logits.detach().clone()
        rows = torch.tensor([1, 4, 1])
        picked = renderer._rows(renderer.color_logits, rows).sum() + renderer._rows(renderer.radius_logits,
                                                                                     rows[:1] * 0).sum()
        (-1e3 * picked).backward()  # far past every bound: the step must be projected back
        changed = renderer.changed_rows()
        assert torch.equal(changed["color"].sort().values, torch.tensor([1, 4]))
        assert torch.equal(changed["radius"], torch.tensor([0]))
        torch.optim.SparseAdam(list(renderer.parameters()), lr=0.5).step()
        renderer.project_(changed if partial else None)
        tables.append([t.detach().clone() for t in (renderer.color_logits, renderer.radius_logits)])
    for whole, rows_only in zip(*tables):
        assert torch.equal(whole, rows_only)
    colors = tables[1][0]
    assert not torch.equal(colors[1], initial[1]) and torch.equal(colors[0], initial[0])  # row 1 moved, 0 did not
