"""Objective ``sit`` (SiT) and the grouped view order it takes its positives from.

The published values compared against are those of Sara-Ahmed/SiT at 1aacd6a (losses.py, engine.py,
datasets/datasets_utils.py); the references below are straightforward loops written from that code.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from dr_fdsl.config import SiTConfig, load_config
from dr_fdsl.engine import build_run, fit, render_batch
from dr_fdsl.errors import ConfigError
from dr_fdsl.objectives import sit_views as sv
from dr_fdsl.objectives.sit import SiT, nt_xent, uncertainty_weighting
from dr_fdsl.render import PointRenderer
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.streams import Stream
from dr_fdsl.view_order import ViewOrder, counter_seed
from tests.conftest import tiny

SIT = ["train.objective=sit", "data.views_per_category=2", "renderer.view.rotation=euler",
       "renderer.view.azimuth=[-30,30]", "renderer.view.elevation=[-20,20]"]


# ------------------------------------------------------------------------------------------------------------
# The view order's grouped draws
# ------------------------------------------------------------------------------------------------------------


def test_default_stream_draws_as_before():
    """views_per_category = repeated_aug = 1 is the original stream: two randint draws from one generator."""
    for views in (0, 7):
        generator = torch.Generator().manual_seed(counter_seed(3, 1, 5))
        ids = torch.randint(0, 10, (12,), generator=generator)
        seeds = torch.randint(0, views or 2**62, (12,), generator=generator)
        got = ViewOrder(3, 1, 10, views, views_per_category=1, repeated_aug=1).batch(5, 12)
        assert torch.equal(got[0], ids) and torch.equal(got[1], seeds)


@pytest.mark.parametrize("views", [0, 3])
def test_grouped_stream_counts_and_adjacency(views):
    stream = ViewOrder(0, 0, 10, views, views_per_category=2, repeated_aug=3)
    for index in range(5):
        ids, seeds = stream.batch(index, 24)
        groups = ids.view(4, 6)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 4  # distinct categories
        copies = seeds.view(4, 2, 3)
        assert (copies == copies[..., :1]).all()  # each (category, seed) 3 times, adjacent
        assert (copies[:, 0, 0] != copies[:, 1, 0]).all()  # two different view seeds per category
        if views:
            assert seeds.min() >= 0 and seeds.max() < views
    assert not torch.equal(stream.batch(0, 24)[0], stream.batch(1, 24)[0]) or \
        not torch.equal(stream.batch(0, 24)[1], stream.batch(1, 24)[1])
    repeated = ViewOrder(0, 0, 10, views, views_per_category=1, repeated_aug=2).batch(0, 8)
    assert torch.equal(repeated[0][0::2], repeated[0][1::2]) and torch.equal(repeated[1][0::2], repeated[1][1::2])


@pytest.mark.parametrize("overrides, pattern", [
    (["data.views_per_category=3"], r"'train.batch_size': must be a multiple of .* = 3"),
    (["data.repeated_aug=0"], r"'data.repeated_aug': must be >= 1"),
    (["data.views_per_category=2", "train.batch_size=10"], r"holds 5 distinct categories .* bank.num_classes=4"),
    (["data.views_per_category=4", "data.views_per_class=3"], r"need data.views_per_class >= it"),
])
def test_grouped_stream_settings_fail_at_load(tmp_path, bank_dir, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        tiny(tmp_path, bank_dir, *overrides)


# ------------------------------------------------------------------------------------------------------------
# Losses against the published formulas
# ------------------------------------------------------------------------------------------------------------


def test_nt_xent_equals_the_published_loss_written_as_a_loop():
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    temperature = 0.5
    views = [F.normalize(v, dim=0) for v in torch.cat([first, second])]
    n = len(first)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = math.exp(float(views[i] @ views[positive]) / temperature)
        denominator = sum(math.exp(float(views[i] @ views[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    assert nt_xent(first, second, temperature).item() == pytest.approx(total / (2 * n), rel=1e-5)


def test_uncertainty_weighting_gradient_is_its_formula():
    """total = sum_t exp(-a_t s_t) L_t + s_t / 2: dtotal/dL_t = exp(-a_t s_t), dtotal/ds_t = -a_t exp(-a_t s_t)
    L_t + 1/2, with a = (1, 1, 0.5) as published."""
    losses = torch.tensor([1.3, 2.1, 0.4], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([1.0, 0.2, -0.7], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    total = uncertainty_weighting(losses, s, a)
    total.backward()
    published = sum(math.exp(-s_ * a_) * l_ + 0.5 * s_ for l_, s_, a_ in zip([1.3, 2.1, 0.4], [1.0, 0.2, -0.7],
                                                                            [1.0, 1.0, 0.5]))
    assert total.item() == pytest.approx(published, rel=1e-12)
    assert torch.allclose(losses.grad, torch.exp(-a * s.detach()))
    assert torch.allclose(s.grad, -a * torch.exp(-a * s.detach()) * losses.detach() + 0.5)


# ------------------------------------------------------------------------------------------------------------
# Views and corruptions: keyed, and each stage against a loop written from the published code
# ------------------------------------------------------------------------------------------------------------


def _keys(n=6, seed=0):
    return sv.view_keys(torch.arange(n) % 3, torch.arange(n) + 100 * seed)


def test_rotation_is_the_published_quarter_turn():
    x = torch.rand(4, 3, 8, 8)
    turned = sv.rotate(x, torch.tensor([0, 1, 2, 3]))
    published = [x[0], x[1].rot90(-1, [1, 2]), x[2].rot90(-1, [1, 2]).rot90(-1, [1, 2]), x[3].rot90(1, [1, 2])]
    assert all(torch.equal(turned[i], published[i]) for i in range(4))
    labels = sv.rotation_labels(_keys(400))
    assert set(labels.tolist()) == {0, 1, 2, 3} and abs(labels.float().mean().item() - 1.5) < 0.2


def test_color_jitter_is_torchvision_in_the_drawn_order():
    keys = _keys(8)
    x = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    out = sv.color_jitter(x, keys, 0.4)
    u = rnd.uniform(keys, Stream.SIT_JITTER, (4,))
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for b in range(8):
        factors = 0.6 + 0.8 * u[b, :3]
        order = sv._ORDERS[min(int(u[b, 3] * 6), 5)]
        y = x[b]
        for op in order.tolist():
            y = ops[op](y, float(factors[op]))
        assert torch.allclose(out[b], y, atol=1e-6), b


def _published_spans(u_start, u_size, side, tol, largest):
    start = int(u_start * (side - tol))
    return start, min(start + tol + int(u_size * (largest - tol)), side)


def test_noise_and_replace_rectangles_are_the_published_loop():
    """drop_rand_patches: rectangles drawn one by one until their areas reach U(0, max) * H * W."""
    size, tol, largest = 40, 2, 10
    keys = _keys(6)
    mask = sv.block_mask(keys, Stream.SIT_DROP, size, 0.3, tol, largest)[:, 0]
    candidates = math.ceil(0.3 * size * size / tol**2)
    u = rnd.uniform(keys, Stream.SIT_DROP, (1 + 4 * candidates,))
    for b in range(6):
        expected = torch.zeros(size, size, dtype=torch.bool)
        target, total, m = float(u[b, 0]) * 0.3 * size * size, 0, 0
        while total < target:
            r_u, c_u, h_u, w_u = u[b, 1 + 4 * m: 5 + 4 * m].tolist()
            r0, r1 = _published_spans(r_u, h_u, size, tol, largest)
            c0, c1 = _published_spans(c_u, w_u, size, tol, largest)
            expected[r0:r1, c0:c1] = True
            total += (r1 - r0) * (c1 - c0)
            m += 1
        assert m >= 1 and torch.equal(mask[b], expected), b


def test_blur_is_a_gaussian_of_the_cropped_rectangle_with_reflection():
    """smooth_patch: kornia's GaussianBlur2d (reflect padding) on the cropped rectangle, here by conv2d."""
    size, tol = 48, 2
    keys = _keys(12)
    x = torch.rand(12, 3, size, size, generator=torch.Generator().manual_seed(2))
    out = sv.blur_rectangle(x, keys, tol, 15, 5.0)
    taps = sv.gaussian_taps(keys, 15, 5.0)
    r0, r1, c0, c1 = sv._blur_rectangle(keys, size, tol)
    checked = 0
    for b in range(12):
        k = int((taps[b] > 0).sum())
        crop = x[b:b + 1, :, r0[b]:r1[b], c0[b]:c1[b]]
        if min(crop.shape[-2:]) <= k // 2:  # kornia (torch's reflect padding) refuses these
            continue
        kernel1d = taps[b][taps[b] > 0]
        assert torch.allclose(kernel1d, kernel1d.flip(0)) and kernel1d.sum().item() == pytest.approx(1.0)
        kernel = (kernel1d[:, None] * kernel1d[None]).expand(3, 1, k, k)
        padded = F.pad(crop, (k // 2,) * 4, mode="reflect")
        expected = x[b].clone()
        expected[:, r0[b]:r1[b], c0[b]:c1[b]] = F.conv2d(padded, kernel, groups=3)[0]
        assert torch.allclose(out[b], expected, atol=1e-5), b
        checked += 1
    assert checked >= 6


def test_corruptions_are_keyed_per_image():
    """Stages 1-3 depend on the image's key alone (any batch, any position); stage 4 on the key and the batch's
    layout, which every source shares. The same (category, view seed) in another copy is corrupted apart."""
    settings = SiTConfig()
    clean = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ids, seeds = torch.arange(8) // 2, torch.arange(8)
    keys = sv.view_keys(ids, seeds)
    alone = SiTConfig(max_replace=0.0)
    batch = sv.corrupt(clean, keys, alone, 2)
    for b in (0, 5):
        assert torch.equal(sv.corrupt(clean[b:b + 1], keys[b:b + 1], alone, 1)[0], batch[b])
    assert torch.equal(sv.corrupt(clean, keys, settings, 2), sv.corrupt(clean, keys, settings, 2))
    other = sv.corrupt(clean, sv.view_keys(ids, seeds + 1), settings, 2)
    assert not torch.equal(other, sv.corrupt(clean, keys, settings, 2))
    copies = sv.view_keys(torch.tensor([1, 1, 2]), torch.tensor([9, 9, 9]))
    assert copies[0] != copies[1] and sv.copy_index(torch.tensor([1, 1, 2, 1]), torch.tensor([9, 9, 9, 9])).tolist() \
        == [0, 1, 0, 2]
    donor, other_image = sv.donors(keys, 2)
    assert ((donor % 2) == (torch.arange(8) % 2)).all()  # from the same view set, as published
    assert torch.equal(other_image, donor != torch.arange(8))


# ------------------------------------------------------------------------------------------------------------
# The objective through the engine
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, pattern", [
    (["renderer.view.rotation=so3"], r"'renderer.view.rotation': so3 covers every in-plane rotation"),
    (["renderer.view.roll=[-180,180]"], r"'renderer.view.roll': spans 360.0 degrees.*every one"),
    (["renderer.view.roll=[0,120]"], r"'renderer.view.roll': spans 120.0 degrees"),
    (["renderer.mode=joint"], r"'renderer.mode': joint rendering descends sit's losses"),
    (["data.views_per_category=1"], r"'data.views_per_category': sit's contrastive task takes two views"),
    (["data.views_per_category=1", "data.repeated_aug=1"], r"data.repeated_aug=2"),
    (["renderer.image_size=16", "model.name=resnet18"], r"'sit.min_block'.*raise renderer.image_size"),
    (["sit.temperature=0"], r"'sit.temperature': must be positive"),
    (["sit.max_kernel=8"], r"'sit.max_kernel': must be odd"),
])
def test_sit_refuses_bad_settings_at_load(tmp_path, bank_dir, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        tiny(tmp_path, bank_dir, *SIT, *overrides)


def test_sit_accepts_two_copies_as_positives_and_needs_a_vit(tmp_path, bank_dir):
    cfg = tiny(tmp_path, bank_dir, *SIT, "data.views_per_category=1", "data.repeated_aug=2")
    assert cfg.data.repeated_aug == 2
    with pytest.raises(ConfigError, match="objective sit needs a timm VisionTransformer"):
        build_run(tiny(tmp_path, bank_dir, *SIT, "model.name=resnet18"))


def test_shipped_sit_configs_make_rotation_learnable():
    for name in ("sit_tiny", "sit_ofdb1k_vit_tiny"):
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.train.objective == "sit" and cfg.renderer.view.rotation == "euler"
        assert cfg.renderer.view.roll == (0.0, 0.0) and cfg.data.views_per_category == 2


def _scalar_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])
    return tags


def test_sit_trains_logs_its_tasks_and_exports_a_plain_timm_vit(tmp_path, bank_dir):
    """Two steps through the engine: every task's loss and weight is logged, the corrupted / reconstructed / clean
    grids are written, and the exported backbone loads into a plain timm ViT with the trained weights."""
    import json

    import timm

    from dr_fdsl.finetune import load_pretrained
    from tools.export import main

    run = build_run(tiny(tmp_path, bank_dir, *SIT, "train.max_steps=2"))
    summary = fit(run)
    assert set(SiT.eval_names) <= set(summary) and 0 <= summary["val/rotation_acc"] <= 1
    tags = _scalar_tags(tmp_path / "run")
    for task in ("rotation", "contrastive", "reconstruction"):
        assert {f"train/sit_{task}_loss", f"train/sit_{task}_weight"} <= tags
    assert {"sit/corrupted", "sit/reconstructed", "sit/clean", "renders"} <= tags
    grids = run.objective.image_grids(torch.rand(8, 3, 32, 32), torch.arange(8) % 4, -torch.arange(1, 9))
    assert set(grids) == {"sit/corrupted", "sit/reconstructed", "sit/clean"}
    assert all(g.shape[0] == 3 and g.min() >= 0 and g.max() <= 1 for g in grids.values())

    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    plain = timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True)
    trained = run.objective.network.backbone.state_dict()
    assert config["architecture"] == "test_vit" and type(plain).__name__ == "VisionTransformer"
    assert plain.state_dict().keys() == trained.keys()
    assert all(torch.equal(v, trained[k]) for k, v in plain.state_dict().items())
    model, size = load_pretrained(str(tmp_path / "run"))
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model.eval().forward_features(x), plain.eval().forward_features(x))


@pytest.mark.slow
def test_sit_trains_in_two_processes(tmp_path, bank_dir):
    """One prepared module holds backbone, heads, decoder and uncertainties (returned by its forward): DDP
    synchronises them all, and the image grids (main process only) run no collective."""
    import json
    import os

    from tests.conftest import BIN, ROOT, run_processes

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    out = run_processes([os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2",
                         str(ROOT / "train.py"), "--config", str(ROOT / "configs/sit_tiny.yaml"),
                         f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}", "bank.num_classes=4",
                         "bank.num_points=300", "train.batch_size=8", "train.max_steps=3", "train.eval_every=3",
                         "train.image_every=2", "train.eval_images=16", "train.ckpt_every=3", "train.progress=false"],
                        timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["objective"] == "sit" and summary["val/reconstruction_loss"] > 0


def train_on_view_pairs(cfg, images, ids, seeds, views: int, steps: int, salt: int, per: int = 2) -> SiT:
    """SiT (8 categories) trained on frozen renders ``images`` (``views`` consecutive ones per category): each step
    ``per`` views of every category, with fresh corruptions and quarter-turns (view seed + ``salt`` x step); returned
    in evaluation mode."""
    torch.manual_seed(0)
    objective = SiT(cfg, 8, 1e-3, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        pick = (torch.randperm(8, generator=g)[:, None] * views + torch.stack(
            [torch.randperm(views, generator=g)[:per] for _ in range(8)])).reshape(-1)
        out = objective.loss(images[pick], ids[pick], seeds[pick] + salt * step)
        objective.optimizer.zero_grad()
        out.total.backward()
        objective.optimizer.step()
    objective.train(False)
    return objective


@pytest.mark.slow  # about 2 CPU-minutes: 60 steps of the whole objective
def test_sit_reconstructs_better_than_the_corrupted_view(tmp_path, bank_dir):
    """A tiny training of the whole objective (three tasks, learned weights) on frozen renders: on held-out views the
    reconstruction beats taking the corrupted view itself. The setting: SiT's rectangles may cover the whole image
    (sit.max_drop = sit.max_replace = 1), so that copying the input is not nearly right already; at 32 px with
    test_vit's four 16 px patches the network learns the background first, which is what beats the identity here
    (measured: 0.20 against 0.36 after 60 steps)."""
    from dr_fdsl.bank import bank_from_config
    from dr_fdsl.render import PointRenderer

    cfg = tiny(tmp_path, bank_dir, *SIT, "bank.num_classes=8", "train.batch_size=16", "sit.max_drop=1.0",
               "sit.max_replace=1.0")
    renderer = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
    ids, seeds = torch.arange(8).repeat_interleave(8), torch.arange(64)
    with torch.no_grad():
        images = renderer(ids, seeds)
    objective = train_on_view_pairs(cfg, images, ids, seeds, views=8, steps=60, salt=1000)
    rows = objective.evaluate(images, ids, -seeds - 1).mean(0)  # other corruptions than any seen in training
    reconstruction, identity = rows[2].item(), rows[3].item()
    assert reconstruction < 0.8 * identity, (reconstruction, identity)


def test_defaults_are_the_published_values():
    """tests/fixtures/sit/published.json: values read from Sara-Ahmed/SiT at 1aacd6a (its README says where)."""
    import dataclasses
    import json
    from pathlib import Path

    from dr_fdsl.objectives.sit import UNCERTAINTY_SCALE, SiTNetwork

    published = json.loads((Path(__file__).parent / "fixtures/sit/published.json").read_text())
    settings = dataclasses.asdict(SiTConfig())
    assert settings == {k: published[k] for k in settings}
    assert list(UNCERTAINTY_SCALE) == published["uncertainty_scale"]
    import timm

    network = SiTNetwork(timm.create_model("test_vit", img_size=32), published["projection_dim"])
    assert network.uncertainty.tolist() == published["uncertainty_init"]
    assert network.rotation_head.out_features == published["rotation_classes"]
    ofdb = load_config("configs/sit_ofdb1k_vit_tiny.yaml").optim
    assert (ofdb.lr, ofdb.min_lr, ofdb.weight_decay) == tuple(published[k] for k in ("lr", "min_lr", "weight_decay"))


@pytest.mark.slow  # about 20 CPU-seconds: 300 steps of the whole objective at 64 px
def test_sit_learns_rotation_with_views_that_have_an_up(tmp_path, bank_dir):
    """Views with a fixed orientation (renderer.view.rotation=none; points sub-sampled per view), the whole
    three-task objective with its learned weights: on held-out renders the quarter-turn is predicted well above
    chance (1/4). The setting that makes it reachable in seconds: 64 px (test_vit's 16 px patches: 16 tokens) and
    the corruptions and colour jitter switched off (measured: 0.63-0.88 held-out, see below; with the published
    corruptions on, the rotation stays at chance at this scale, and it does with 32 px images)."""
    from dr_fdsl.bank import bank_from_config
    from dr_fdsl.render import PointRenderer

    cfg = tiny(tmp_path, bank_dir, "train.objective=sit", "data.views_per_category=2", "renderer.view.rotation=none",
               "renderer.augment.subsample=[0.5,1.0]", "renderer.image_size=64", "bank.num_classes=8",
               "train.batch_size=16", "sit.max_drop=0", "sit.max_replace=0", "sit.max_sigma=0.1", "sit.color_jitter=0")
    renderer = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
    ids, seeds = torch.arange(8).repeat_interleave(16), torch.arange(128)
    held_ids, held_seeds = torch.arange(8).repeat_interleave(4), -torch.arange(1, 33)
    with torch.no_grad():
        images, held = renderer(ids, seeds), renderer(held_ids, held_seeds)
    # Four views per category and step (batch 32), 150 steps: with two views and 300 steps (the same images seen)
    # the training was chaotic in its rounding, held-out 0.31 / 0.28 / 0.63 with one torch thread against 0.78 /
    # 0.97 / 0.56 with two (salts 7919 / 31 / 101); this setting gives 0.84 / 0.88 / 0.63 with one and 0.78 / 0.81
    # with two (salts 31 / 101 / 7919; measured 2026-12-07), so pytest-xdist's one-thread workers pass it as well.
    objective = train_on_view_pairs(cfg, images, ids, seeds, views=16, steps=150, salt=31, per=4)
    accuracy = objective.evaluate(held, held_ids, held_seeds)[:, 0].mean().item()
    assert accuracy > 0.6, accuracy


def test_repeated_copies_are_rendered_once(tmp_path, bank_dir, small_bank):
    """data.repeated_aug=2: each (category, view seed) is rendered once and repeated; the images are those of
    rendering every copy, and the renderer's gradients their sum."""
    cfg = tiny(tmp_path, bank_dir, *SIT, "data.views_per_category=1", "data.repeated_aug=2",
               "renderer.mode=adversarial")
    renderer = PointRenderer(small_bank, cfg.renderer)
    run = SimpleNamespace(cfg=cfg, accelerator=SimpleNamespace(device=torch.device("cpu")), static=None,
                          renderer=renderer, order=ViewOrder(0, 0, small_bank.num_classes, 0, 1, 2))
    calls = []
    render = run.renderer.render
    run.renderer.render = lambda ids, seeds: calls.append(len(ids)) or render(ids, seeds)
    batch = render_batch(run)
    assert calls == [4]
    full = render(batch.class_ids, batch.view_seeds)
    assert torch.equal(batch.images, full.images)
    weight = torch.rand(batch.images.shape, generator=torch.Generator().manual_seed(0))
    grads = []
    for images in (batch.images, full.images):
        run.renderer.zero_grad(set_to_none=True)
        (images * weight).sum().backward()
        grads.append([p.grad.to_dense() for p in run.renderer.parameters()])
    for once, each in zip(*grads):
        torch.testing.assert_close(once, each)
