"""Renderer mode match: the distance's terms against slow references, its zeros, its gradients, and runs."""

import itertools
import math
import os

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from dr_fdsl.checkpoint import list_checkpoints
from dr_fdsl.config import MatchConfig, RendererConfig, load_config
from dr_fdsl.engine import build_run, fit, forward_backward, render_batch, resume, save_checkpoint, train_step
from dr_fdsl.errors import ConfigError
from dr_fdsl.match import (
    MatchDistance,
    load_targets,
    mmd2,
    moments_distance,
    parse_distance,
    radial_power_spectrum,
    spectrum_distance,
)
from dr_fdsl.render import PointRenderer
from tests.conftest import tiny
from tests.test_train import model_params, renderer_params, tags

FASHION = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------------------------------------------------
# Slow, obvious references (float64, loops)
# ---------------------------------------------------------------------------------------------------------


def mmd2_reference(x, y, estimator, scales=(0.25, 1.0, 4.0)):
    pooled = [list(map(float, row)) for row in torch.cat([x, y]).double()]
    m, n = len(x), len(y)
    d2 = [[sum((a - b) ** 2 for a, b in zip(p, q)) for q in pooled] for p in pooled]
    off_diagonal = sorted(d2[i][j] for i in range(m + n) for j in range(m + n) if i != j)
    bandwidth = off_diagonal[(len(off_diagonal) - 1) // 2]  # the lower median (an even count: torch.median's)

    def k(i, j):
        return sum(math.exp(-d2[i][j] / (s * bandwidth)) for s in scales)

    xs, ys = range(m), range(m, m + n)
    if estimator == "biased":
        kxx = sum(k(i, j) for i in xs for j in xs) / m**2
        kyy = sum(k(i, j) for i in ys for j in ys) / n**2
    else:
        kxx = sum(k(i, j) for i in xs for j in xs if i != j) / (m * (m - 1))
        kyy = sum(k(i, j) for i in ys for j in ys if i != j) / (n * (n - 1))
    return kxx + kyy - 2 * sum(k(i, j) for i in xs for j in ys) / (m * n)


def spectrum_reference(images):
    """Per image and channel, the DFT power of the mean-free image; averaged; binned ring by ring in loops."""
    x = images.double().numpy()
    b, c, h, w = x.shape
    power = np.zeros((h, w))
    for i, ch in itertools.product(range(b), range(c)):
        plane = x[i, ch] - x[i, ch].mean()
        power += np.abs(np.fft.fft2(plane)) ** 2 / (h * w)
    power /= b * c
    rings = [[] for _ in range(h // 2 + 1)]
    for u, v in itertools.product(range(h), range(w)):
        fy, fx = (u if u < h / 2 else u - h), (v if v < w / 2 else v - w)
        r = int(np.round(math.hypot(fy, fx)))
        if 1 <= r <= h // 2:
            rings[r].append(power[u, v])
    return np.array([np.mean(ring) for ring in rings[1:]])


def test_terms_match_slow_references():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 5, generator=gen), torch.randn(7, 5, generator=gen) + 0.5
    for estimator in ("unbiased", "biased"):
        assert float(mmd2(x, y, estimator)) == pytest.approx(mmd2_reference(x, y, estimator), rel=1e-5, abs=1e-6)

    a, b = torch.rand(3, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen) ** 2
    pixels = [im.double().permute(1, 0, 2, 3).reshape(3, -1) for im in (a, b)]
    expected = sum(float(((p.mean(1) - q.mean(1)) ** 2).sum() + ((torch.cov(p, correction=0) -
                                                                     torch.cov(q, correction=0)) ** 2).sum())
                   for p, q in [pixels])
    assert float(moments_distance(a, b)) == pytest.approx(expected, rel=1e-5)

    np.testing.assert_allclose(radial_power_spectrum(a).numpy(), spectrum_reference(a), rtol=1e-5)
    log_a, log_b = (np.log(spectrum_reference(im) + 1e-8) for im in (a, b))
    assert float(spectrum_distance(a, b)) == pytest.approx(float(((log_a - log_b) ** 2).mean()), rel=1e-4)


def test_every_term_is_zero_for_identical_sets():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 16, 16, generator=gen)
    assert float(mmd2(images.flatten(1), images.flatten(1), "biased")) == 0.0
    assert float(moments_distance(images, images)) == 0.0
    assert float(spectrum_distance(images, images)) == 0.0
    distance = MatchDistance(MatchConfig(estimator="biased", distance="mmd + 2*moments + 0.5*spectrum"))
    out = distance(images, images.clone())
    assert float(out.total) == 0.0 and set(out.terms) == {"mmd", "moments", "spectrum"}
    assert all(float(v) == 0.0 for v in out.terms.values())


def test_unbiased_mmd_is_zero_in_expectation_and_positive_between_distributions():
    gen = torch.Generator().manual_seed(2)
    same = torch.tensor([float(mmd2(torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)))
                         for _ in range(400)])
    other = torch.tensor([float(mmd2(torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen) + 1.5))
                          for _ in range(50)])
    sem = float(same.std() / math.sqrt(len(same)))
    assert abs(float(same.mean())) < 4 * sem  # unbiased: centred on zero (it can be negative)
    assert float(same.min()) < 0
    assert float(other.mean()) > 20 * sem


# ---------------------------------------------------------------------------------------------------------
# Gradients into the renderer
# ---------------------------------------------------------------------------------------------------------


def learnable(bank, **settings):
    base = dict(mode="joint", image_size=32, points_per_pixel=4, radius_init=0.03, raster_backend="sort")
    return PointRenderer(bank, RendererConfig(**{**base, **settings}))


def test_gradients_reach_colours_and_radii_of_the_drawn_rows_only(small_bank):
    renderer = learnable(small_bank, color_init="grey")
    target = learnable(small_bank, color_init="palette", init_seed=3, radius_init=0.045)(
        torch.tensor([1, 3, 5, 5]), torch.tensor([7, 8, 9, 10])).detach()
    images = renderer(torch.tensor([0, 2, 2, 4]), torch.tensor([1, 2, 3, 4]))
    MatchDistance(MatchConfig()).forward(images, target).total.backward()
    for table in (renderer.color_logits, renderer.radius_logits):
        grad = table.grad.coalesce()
        assert sorted(set(grad.indices()[0].tolist())) == [0, 2, 4]  # only the categories drawn
        dense = grad.to_dense()
        assert all(float(dense[row].abs().sum()) > 0 for row in (0, 2, 4))


def test_classifier_features_pass_gradients_to_images_not_to_the_classifier():
    import timm

    backbone = timm.create_model("test_vit", img_size=32, num_classes=4)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)
    distance = MatchDistance(MatchConfig(features="both", distance="mmd"), lambda: backbone, mean, std)
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(4, 3, 32, 32, generator=gen).requires_grad_()
    distance(images, torch.rand(5, 3, 32, 32, generator=gen)).total.backward()
    assert float(images.grad.abs().sum()) > 0
    assert all(p.grad is None and p.requires_grad for p in backbone.parameters())  # untouched, flags restored


def test_the_renderer_trained_on_the_distance_alone_approaches_the_target(small_bank):
    """The target: other categories' views rendered with random palette colours and larger points."""
    target = learnable(small_bank, color_init="palette", init_seed=5, radius_init=0.045)(
        torch.arange(6).repeat(2), torch.arange(100, 112)).detach()
    renderer = learnable(small_bank, color_init="white", radius_init=0.02)
    distance = MatchDistance(MatchConfig(estimator="biased"))
    optimizer = torch.optim.SparseAdam(renderer.parameters(), lr=0.1)
    ids, seeds = torch.arange(6).repeat(2), torch.arange(12)
    values = []
    for _ in range(8):
        out = distance(renderer(ids, seeds), target)
        values.append(float(out.total.detach()))
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
    assert values[-1] < 0.6 * values[0], values  # measured: 0.735 -> 0.368 in 8 steps


# ---------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, pattern", [
    (["renderer.mode=match"], r"'match.dataset': renderer.mode=match .* none is named; set match.dataset="),
    (["renderer.mode=match", "match.dataset=mnist"], r"'match.dataset': 'mnist' is not fashion_mnist"),
    (["renderer.mode=match", "match.dataset=cifar10", "match.distance=mmd + colour"],
     r"'match.distance': 'colour' in 'mmd \+ colour' is not a term"),
    (["renderer.mode=match", "match.dataset=cifar10", "match.distance=0*mmd"],
     r"'match.distance': the weight of 'mmd' must be a positive number, got '0'"),
    (["renderer.mode=match", "match.dataset=cifar10", "match.distance=mmd+spectrum+2*mmd"], r"'mmd' appears twice"),
    (["renderer.mode=match", "match.dataset=cifar10", "match.batch=1"], r"'match.batch': must be >= 2"),
    (["renderer.mode=match", "match.dataset=cifar10", "match.weight=-1"], r"'match.weight': must be a positive"),
    (["renderer.mode=match", "match.dataset=cifar10", "match.joint=true", "train.objective=mim"],
     r"'match.joint': it makes the renderer descend objective mim's loss"),
])
def test_bad_match_configs_are_clear_errors(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_distance_parses_weighted_sums():
    assert parse_distance("mmd + 0.5*spectrum") == [(1.0, "mmd"), (0.5, "spectrum")]
    assert parse_distance(" 2 * moments") == [(2.0, "moments")]
    load_config(None, ["match.distance=nonsense"])  # not checked unless renderer.mode=match


# ---------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_folder(tmp_path_factory):
    """A tiny image folder: 2 classes x 6 images of 20 px (stripes of one colour each) in train/ and val/."""
    root = tmp_path_factory.mktemp("targets")
    gen = torch.Generator().manual_seed(0)
    for split, label in itertools.product(("train", "val"), ("a", "b")):
        (root / split / label).mkdir(parents=True)
        for i in range(6):
            image = torch.zeros(3, 20, 20, dtype=torch.uint8)
            image[:, :, ::3] = (torch.rand(3, 1, 1, generator=gen) * 255).to(torch.uint8)
            write_png(image, str(root / split / label / f"{i}.png"))
    return f"folder:{root}"


def match_run(tmp_path, bank_dir, dataset, *overrides):
    return tiny(tmp_path, bank_dir, "renderer.mode=match", f"match.dataset={dataset}", "match.batch=6",
                "renderer.raster_backend=sort", *overrides)


def test_a_match_run_trains_logs_the_distance_and_renders_beside_targets(tmp_path, bank_dir, target_folder):
    run = build_run(match_run(tmp_path, bank_dir, target_folder))
    before, classifier = renderer_params(run), model_params(run)
    summary = fit(run)
    assert summary["mode"] == "match" and summary["step"] == 4
    assert not any(torch.equal(a, b) for a, b in zip(before, renderer_params(run)))
    assert not any(torch.equal(a, b) for a, b in zip(classifier, model_params(run)))
    events = tags(tmp_path / "run")
    assert {"match/distance", "match/mmd", "match/moments", "match/spectrum", "lr/renderer",
            "grad_norm/renderer", "train/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("match/distance")] == [2, 4]
    assert {"renders", "match/renders_vs_targets"} <= set(events.Tags()["images"])
    side_by_side, renders = events.Images("match/renders_vs_targets")[0], events.Images("renders")[0]
    assert side_by_side.width > 2 * renders.width - 10 and side_by_side.height == renders.height
    assert all((p / "renderer.safetensors").is_file() for p in list_checkpoints(tmp_path / "run"))


@pytest.mark.parametrize("joint", [False, True])
def test_the_renderers_gradient_is_the_weighted_distance_unless_joint(tmp_path, bank_dir, target_folder, joint):
    run = build_run(match_run(tmp_path, bank_dir, target_folder, "match.weight=0.5", f"match.joint={joint}",
                              "train.probe=false", "image_aug.random_erasing=0"))
    # The distance's gradient for the batch and the target batch the step will draw.
    ids, seeds = run.order.batch(run.order.index, 8)
    target = run.mode.matcher.targets.images(run.mode.matcher.targets.indices(run.mode.matcher.targets.index))
    distance = run.mode.matcher.distance(run.renderer(ids, seeds), target).total
    expected = torch.autograd.grad(0.5 * distance, list(run.renderer.parameters()))
    out = forward_backward(run, render_batch(run))
    assert float(out.metrics["match/distance"]) == pytest.approx(float(distance.detach()), rel=1e-6)
    for want, p in zip(expected, run.renderer.parameters()):
        if joint:  # the objective's loss reaches the renderer too
            assert not torch.allclose(p.grad.to_dense(), want.to_dense())
        else:
            torch.testing.assert_close(p.grad.to_dense(), want.to_dense())


def test_match_resume_is_exact(tmp_path, bank_dir, target_folder):
    args = ["train.max_steps=6", "train.ckpt_every=3", "train.eval_every=3", "match.images=8"]
    straight = build_run(match_run(tmp_path / "a", bank_dir, target_folder, *args))
    fit(straight)
    interrupted = build_run(match_run(tmp_path / "b", bank_dir, target_folder, *args))
    while interrupted.state.step < 3:
        train_step(interrupted)
    save_checkpoint(interrupted)
    resumed = build_run(match_run(tmp_path / "b", bank_dir, target_folder, *args), resume="latest")
    resume(resumed, "latest")
    assert resumed.state.step == 3 and resumed.mode.matcher.targets.index == 3
    fit(resumed)
    for a, b in zip(model_params(straight) + renderer_params(straight),
                    model_params(resumed) + renderer_params(resumed)):
        assert torch.equal(a, b)
    # Another target set is another random stream: refused unless inexact resume is asked for.
    other = build_run(match_run(tmp_path / "b", bank_dir, target_folder, *args[:-1], "match.images=9"),
                      resume="latest")
    with pytest.raises(Exception, match=r"cannot be resumed exactly: .*match"):
        resume(other, "latest")


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist is not installed")
def test_targets_are_a_seeded_subset_of_the_training_split():
    cfg = load_config(None, ["renderer.mode=match", "match.dataset=fashion_mnist", "match.images=50"])
    pixels = load_targets(cfg)
    assert pixels.shape == (50, 3, 28, 28) and pixels.dtype == torch.uint8
    assert torch.equal(pixels[:, 0], pixels[:, 2])  # grey images on three channels
    assert torch.equal(pixels, load_targets(cfg))
    assert not torch.equal(pixels, load_targets(load_config(None, ["seed=1", "renderer.mode=match",
                                                                   "match.dataset=fashion_mnist",
                                                                   "match.images=50"])))


def test_compare_reports_a_match_arm():
    from tools.compare import PRESETS, arms_of, summarize

    assert arms_of(PRESETS["study"])["match"].pretrain == ["renderer.mode=match", "match.dataset=fashion_mnist"]
    rows = [{"seed": s, "mode": m, "pretrain_top1": "" if m == "none" else 0.5, "probe_top1": "" if m == "none"
             else 0.3, "final_top1": 0.6 + 0.01 * s + (0.02 if m == "match" else 0), "cumulative_error": 80.0}
            for s in (0, 1) for m in ("none", "frozen", "match")]
    table = summarize(rows)
    assert "| match | 2 | 62.50" in table
    assert "| frozen - match | 2 | -2.00" in table
