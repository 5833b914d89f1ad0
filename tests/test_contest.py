"""The contest's PyTorch3D render (configs/contest_pytorch3d.yaml) and the augmentations of its ablation table, each
against a straightforward reference fed the same random draws."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dr_fdsl.bank import PointBank, bank_from_config
from dr_fdsl.config import load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.render import PointRenderer, augment, corrupt, pointwolf
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.background import colorize, diamond_square, diamond_square_draws, diamond_square_field
from dr_fdsl.render.hsv import hsv8_to_rgb8
from dr_fdsl.render.streams import Stream
from dr_fdsl.render.views import sample_views

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
FLIP = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # the contest's camera: our view rotation is FLIP @ its rotation


def contest_config(*overrides: str):
    return load_config(ROOT / "configs/contest_pytorch3d.yaml", ["bank.cache_dir=", *overrides])


@pytest.fixture(scope="module")
def contest_bank() -> PointBank:
    """Two published categories (3D-OFDB's search, seed 42) with 1,500 points each, as the contest makes them."""
    cfg = contest_config("bank.num_classes=2", "bank.num_points=1500")
    return bank_from_config(cfg.bank, use_cache=False)


def contest_reference(points: torch.Tensor, kept: torch.Tensor, coin: bool, scale: float, shift: torch.Tensor,
                      rotation: torch.Tensor, size: int) -> torch.Tensor:
    """generator.py's pipeline for one image with given draws: its point augmentations in its order, its camera,
    rasteriser and compositor, as PyTorch3D's own classes run them. ``(3, size, size)``."""
    from pytorch3d.renderer import (
        AlphaCompositor,
        FoVPerspectiveCameras,
        PointsRasterizationSettings,
        PointsRasterizer,
        PointsRenderer,
        look_at_view_transform,
    )
    from pytorch3d.structures import Pointclouds

    p = points[kept]  # random_sample_point_cloud
    if coin:  # random_shift_scale_point_cloud
        p = p * scale + shift
    p = p @ rotation.T  # random_rotate_point_cloud: np.dot(points, R.T)
    rgba = torch.ones(len(p), 4)
    rgba[:, 3] = 0.5  # generate_colors_with_alpha
    R, T = look_at_view_transform(10.0, 0.0, 0.0)
    renderer = PointsRenderer(
        rasterizer=PointsRasterizer(cameras=FoVPerspectiveCameras(R=R, T=T, fov=10.0),
                                    raster_settings=PointsRasterizationSettings(image_size=size, radius=0.015,
                                                                                points_per_pixel=4)),
        compositor=AlphaCompositor(background_color=(0.0, 0.0, 0.0)))
    return renderer(Pointclouds(points=[p], features=[rgba]))[0, ..., :3].permute(2, 0, 1)


def test_contest_render_matches_pytorch3d_pipeline(contest_bank):
    size = 64
    cfg = contest_config(f"renderer.image_size={size}")
    renderer = PointRenderer(contest_bank, cfg.renderer)
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    seeds = torch.tensor([3, 11, 12, 5, 8, 40])
    images = renderer(ids, seeds)

    aug = cfg.renderer.augment
    keys = rnd.image_keys(ids, seeds)
    keep = augment.subsample_mask(keys, contest_bank.num_points, aug)
    coins = augment.coin(keys, Stream.SCALE_SHIFT_GATE, aug.scale_shift_prob)
    scales, shifts = augment.random_scale(keys, aug), augment.random_shift(keys, aug)
    rotations = FLIP @ sample_views(keys, cfg.renderer.view).rotation
    assert coins.any() and not coins.all(), "the seeds should cover both sides of the shift-scale coin"
    for i in range(len(ids)):
        count = int(keep[i].sum())
        rate = float(rnd.uniform_range(keys[i:i + 1], Stream.SUBSAMPLE_RATE, aug.subsample))
        assert count == int(contest_bank.num_points * rate)  # int(N * U(0.8, 1)) points, exactly
        ref = contest_reference(contest_bank.points[ids[i]], keep[i], bool(coins[i]), float(scales[i]), shifts[i],
                                rotations[i], size)
        assert ref.sum() > 20, "the reference image should show the cloud"
        assert (images[i] - ref).abs().max() < 1e-5


def test_color_param_clamp_holds_initial_colours_exactly_and_projects(contest_bank):
    cfg = contest_config("renderer.image_size=32", "renderer.mode=joint")
    renderer = PointRenderer(contest_bank, cfg.renderer)
    assert torch.equal(renderer.colors(), torch.ones_like(renderer.colors()))
    squashed = PointRenderer(contest_bank, dataclasses.replace(cfg.renderer, color_param="squash"))
    assert float((1 - squashed.colors().detach()).max()) == pytest.approx(1e-3, rel=1e-3)
    images = renderer(torch.tensor([0, 1]), torch.tensor([1, 2]))
    images.mean().backward()  # brighter everywhere would lower it: white colours get a gradient at the bound
    assert renderer.color_logits.grad.coalesce().values().abs().max() > 0
    with torch.no_grad():
        renderer.color_logits[0, :6] = torch.tensor([1.5, -0.25, 0.5, 1.0, 0.0, 2.0])
    renderer.project_()
    assert renderer.color_logits[0, :6].tolist() == [1.0, 0.0, 0.5, 1.0, 0.0, 1.0]
    assert torch.equal(renderer.color_logits[1], torch.ones_like(renderer.color_logits[1]))


# Every switch: (overrides that switch it on, overrides equivalent to "off" that must render the baseline).
SWITCHES = {
    "subsample": (["renderer.augment.subsample_prob=1.0"],
                  ["renderer.augment.subsample_prob=0.0"], ["renderer.augment.subsample=[1.0, 1.0]"]),
    "scale_shift": (["renderer.augment.scale_shift_prob=1.0"],
                    ["renderer.augment.scale_shift_prob=0.0"], ["renderer.augment.scale=[1.0, 1.0]",
                                                                "renderer.augment.shift=0.0"]),
    "noise": (["renderer.augment.jitter=0.01", "renderer.augment.jitter_prob=1.0"],
              ["renderer.augment.jitter=0.01", "renderer.augment.jitter_prob=0.0"], []),
    "pointwolf": (["renderer.augment.pointwolf=true"], ["renderer.augment.pointwolf=false"], []),
    "drop_local": (["renderer.augment.drop_local=300"], ["renderer.augment.drop_local=0"], []),
    "add_global": (["renderer.augment.add_global=50"], ["renderer.augment.add_global=0"], []),
    "add_local": (["renderer.augment.add_local=300"], ["renderer.augment.add_local=0"], []),
    "depth_hue": (["renderer.augment.depth_hue=true"], ["renderer.augment.depth_hue=false"], []),
    "point_size": (["renderer.augment.radius_scale=[0.5, 2.0]"], ["renderer.augment.radius_scale=[1.0, 1.0]"], []),
    "diamond_square": (["renderer.background=diamond_square"], ["renderer.background=color"], []),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_each_switch_changes_images_when_on_and_nothing_when_off(contest_bank, name):
    on, off, baseline = SWITCHES[name]
    ids, seeds = torch.tensor([0, 1, 0, 1]), torch.tensor([2, 3, 4, 5])

    def images(*overrides):
        return PointRenderer(contest_bank, contest_config("renderer.image_size=32", *overrides).renderer)(ids, seeds)

    base = images(*baseline)  # the contest's render without the feature
    assert torch.equal(images(*off), base)
    assert not torch.equal(images(*on), base)


def test_switches_leave_the_default_config_alone():
    """The new keys' defaults are the old behaviour: a default renderer draws what it drew before they existed
    (tests/test_golden.py checks the pixels; here, that the defaults switch everything off)."""
    aug = load_config(None, ["bank.num_classes=1"]).renderer.augment
    assert (aug.subsample_prob, aug.scale_shift_prob, aug.jitter_prob) == (1.0, 1.0, 1.0)
    assert not (aug.subsample_exact or aug.depth_hue or aug.drop_local or aug.add_global or aug.add_local)
    assert aug.shift_frame == "camera" and aug.pointwolf_kind == "style" and aug.radius_scale == (1.0, 1.0)


# --- published PointWOLF -----------------------------------------------------------------------------------------


def pointwolf_reference(pos: np.ndarray, d: dict, cfg) -> np.ndarray:
    """mlvlab/PointWOLF's PointWOLF.__call__ on one cloud of kept points, float64, with given draws."""
    m = cfg.pointwolf_anchors
    n = len(pos)
    anchors = np.zeros(m, dtype=int)
    distance = np.ones(n) * 1e10
    farthest = d["start"]
    for i in range(m):  # fps
        anchors[i] = farthest
        dist = ((pos - pos[farthest]) ** 2).sum(-1)
        distance = np.where(dist < distance, dist, distance)
        farthest = distance.argmax()
    a = pos[anchors]
    local = pos[None] - a[:, None]
    degree = np.pi * d["degrees"] / 180.0 * d["keep_rotation"][:, None]
    scale = d["scales"] * d["keep_scale"][:, None] * d["axes"]
    scale = scale + 1 * (scale == 0)
    trl = d["shifts"] * d["keep_shift"][:, None] * d["axes"]
    sx, sy, sz = np.sin(degree).T
    cx, cy, cz = np.cos(degree).T
    R = np.stack([cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx, sz * cy, sz * sy * sx + cz * cy,
                  sz * sy * cx - cz * sx, -sy, cy * sx, cy * cx], axis=1).reshape(m, 3, 3)
    S = scale[:, None] * np.eye(3)
    moved = local @ R @ S + trl[:, None] + a[:, None]
    sub = (a[:, None] - pos[None]) @ (d["kernel_axes"][None] * np.eye(3))
    sub = np.sqrt((sub**2).sum(2))
    weight = np.exp(-0.5 * sub**2 / cfg.pointwolf_sigma**2)
    new = (weight[..., None] * moved).sum(0) / weight.sum(0)[:, None]
    new = new - new.mean(0)
    return (1 / np.sqrt((new**2).sum(1)).max()) * 0.999999 * new


def test_published_pointwolf_matches_the_published_algorithm():
    cfg = contest_config("renderer.augment.pointwolf=true").renderer.augment
    g = torch.Generator().manual_seed(0)
    points = torch.rand(3, 200, 3, generator=g) * 2 - 1
    keep = torch.rand(3, 200, generator=g) < 0.8
    keys = rnd.image_keys(torch.tensor([0, 1, 2]), torch.tensor([7, 8, 9]))
    draws = pointwolf.draw(keys, keep, cfg)
    out = pointwolf.deform(points, keep, draws, cfg)
    assert (draws.keep_rotation.sum(), draws.keep_scale.sum()) != (0, 0)
    assert torch.equal(out, pointwolf.pointwolf(points, keep, keys, cfg))
    for i in range(3):
        kept = keep[i].nonzero().ravel()
        assert keep[i, draws.start[i]]
        d = {k: getattr(draws, k)[i].double().numpy() for k in WOLF_FIELDS}
        d["start"] = int((kept == draws.start[i]).nonzero())
        ref = pointwolf_reference(points[i, kept].double().numpy(), d, cfg)
        np.testing.assert_allclose(out[i, kept].numpy(), ref, atol=2e-6)
        assert np.linalg.norm(ref, axis=1).max() == pytest.approx(0.999999)


WOLF_FIELDS = ("keep_rotation", "keep_scale", "keep_shift", "axes", "kernel_axes", "degrees", "scales", "shifts")


# --- ModelNet-C corruptions ----------------------------------------------------------------------------------------


def test_drop_local_matches_the_published_algorithm():
    g = torch.Generator().manual_seed(1)
    points = torch.rand(4, 300, 3, generator=g) * 2 - 1
    keep = torch.rand(4, 300, generator=g) < 0.9
    keys = rnd.image_keys(torch.arange(4), torch.arange(4) + 20)
    out = corrupt.drop_local(points, keep, keys, 100)
    sizes = corrupt.cluster_sizes(keys, Stream.DROP_LOCAL, Stream.DROP_LOCAL_SIZES, 100)
    centre_u = rnd.uniform(keys, Stream.DROP_LOCAL_CENTRES, (corrupt.MAX_CLUSTERS,))
    assert (sizes.sum(1) == 100).all() and ((sizes > 0).sum(1) > 1).any()
    for i in range(4):
        remaining = keep[i].nonzero().ravel().tolist()
        for c in range(corrupt.MAX_CLUSTERS):
            if sizes[i, c] == 0:
                continue
            centre = remaining[int(centre_u[i, c] * len(remaining))]
            dist = [float(((points[i, j] - points[i, centre]) ** 2).sum()) for j in remaining]
            nearest = sorted(range(len(remaining)), key=lambda k: (dist[k], remaining[k]))[:int(sizes[i, c])]
            remaining = [j for k, j in enumerate(remaining) if k not in set(nearest)]
        assert out[i].nonzero().ravel().tolist() == remaining
        assert int(out[i].sum()) == int(keep[i].sum()) - 100


def test_add_local_and_add_global_match_the_published_algorithms():
    g = torch.Generator().manual_seed(2)
    points = torch.rand(3, 200, 3, generator=g) * 1.6 - 0.8
    keep = torch.rand(3, 200, generator=g) < 0.7
    keys = rnd.image_keys(torch.arange(3), torch.arange(3) + 50)
    xyz, source = corrupt.add_local(points, keep, keys, 200)
    sizes = corrupt.cluster_sizes(keys, Stream.ADD_LOCAL, Stream.ADD_LOCAL_SIZES, 200)
    score = torch.where(keep, rnd.uniform(keys, Stream.ADD_LOCAL_CENTRES, (200,)), 2.0)
    sigma = rnd.uniform_range(keys, Stream.ADD_LOCAL_SIGMA, (0.075, 0.125), (corrupt.MAX_CLUSTERS,))
    offsets = rnd.normal(keys, Stream.ADD_LOCAL_OFFSET, (200, 3))
    for i in range(3):
        centres = sorted(range(200), key=lambda j: (float(score[i, j]), j))[:corrupt.MAX_CLUSTERS]
        assert all(keep[i, c] for c in centres[:int((sizes[i] > 0).sum())])
        expected, k = [], 0
        for c in range(corrupt.MAX_CLUSTERS):
            for _ in range(int(sizes[i, c])):
                p = points[i, centres[c]] + sigma[i, c] * offsets[i, k]
                norm2 = float((p**2).sum())
                expected.append(p / norm2 if norm2 > 1 else p)
                assert source[i, k] == centres[c]
                k += 1
        torch.testing.assert_close(xyz[i], torch.stack(expected), rtol=0, atol=1e-6)
    ball, ball_source = corrupt.add_global(keys, keep, 500)
    assert ball.shape == (3, 500, 3) and (ball.norm(dim=-1) <= 1 + 1e-6).all()
    assert (ball.norm(dim=-1) ** 3).mean().item() == pytest.approx(0.5, abs=0.05)  # uniform in the ball
    assert keep.gather(1, ball_source).all()


def test_added_points_take_their_source_points_colour_and_radius_with_gradients(contest_bank):
    cfg = contest_config("renderer.image_size=32", "renderer.mode=joint", "renderer.color_init=random",
                         "renderer.augment.add_global=20", "renderer.augment.add_local=100")
    renderer = PointRenderer(contest_bank, cfg.renderer)
    ids, seeds = torch.tensor([0, 1]), torch.tensor([4, 6])
    scene, _ = renderer.scene(ids, seeds)
    n = contest_bank.num_points
    assert scene.points.shape[1] == n + 120
    keys = rnd.image_keys(ids, seeds)
    keep = augment.subsample_mask(keys, n, cfg.renderer.augment)
    sources = torch.cat([corrupt.add_global(keys, keep, 20)[1],
                         corrupt.add_local(contest_bank.points[ids], keep, keys, 100)[1]], 1)
    rows = torch.arange(2)[:, None]
    assert torch.equal(scene.colors[:, n:], scene.colors[rows, sources])
    assert torch.equal(scene.radii[:, n:], scene.radii[rows, sources])
    (scene.colors[:, n:].sum() + scene.radii[:, n:].sum()).backward()
    grad = renderer.color_logits.grad.coalesce().to_dense().view(2, n, 3)
    assert grad[rows, sources].abs().min() > 0  # every source point's colour gets the added points' gradient


# --- colouring, point size, background -----------------------------------------------------------------------


def test_hsv_conversion_matches_opencv_fixture():
    data = np.load(FIXTURES / "hsv/opencv.npz")
    assert torch.equal(hsv8_to_rgb8(torch.from_numpy(data["hsv"])), torch.from_numpy(data["rgb"]))


def test_depth_hue_matches_the_published_colorize(contest_bank):
    cfg = contest_config("renderer.image_size=32", "renderer.augment.depth_hue=true")
    renderer = PointRenderer(contest_bank, cfg.renderer)
    ids, seeds = torch.tensor([0, 1]), torch.tensor([9, 10])
    scene, _ = renderer.scene(ids, seeds)
    aug = cfg.renderer.augment
    keys = rnd.image_keys(ids, seeds)
    keep = augment.subsample_mask(keys, contest_bank.num_points, aug)
    u = rnd.uniform(keys, Stream.DEPTH_HUE, (2,))
    for i in range(2):
        # The contest's z: the rotated cloud's, after sub-sampling, shift and scale.
        p = contest_bank.points[ids[i]] * augment.random_scale(keys, aug)[i] + augment.random_shift(keys, aug)[i]
        z = (p @ (FLIP @ sample_views(keys[i:i + 1], cfg.renderer.view).rotation[0]).T)[:, 2]
        kz = z[keep[i]].numpy()
        hue = ((kz - kz.min()) / (kz.max() - kz.min()) * 255).astype(np.uint8)
        sat = np.uint8(float(0.3 + (1 - 0.3) * u[i, 0]) * 255)
        val = np.uint8(float(0.5 + (1 - 0.5) * u[i, 1]) * 255)
        hsv = np.stack([hue, np.full_like(hue, sat), np.full_like(hue, val)], -1)
        expected = hsv8_to_rgb8(torch.from_numpy(hsv)).float() / 255
        got = scene.colors[i, keep[i]]
        assert (got - expected).abs().max() <= 1 / 255 + 1e-6  # a hue byte may differ where float rounding does
        assert (got != expected).any(-1).float().mean() < 0.01
    assert len(torch.unique(scene.colors[0, keep[0]], dim=0)) > 20


def test_point_size_is_one_factor_per_image(contest_bank):
    cfg = contest_config("renderer.image_size=32", "renderer.augment.radius_scale=[0.5, 2.0]")
    scene, _ = PointRenderer(contest_bank, cfg.renderer).scene(torch.tensor([0, 1, 1]), torch.tensor([1, 2, 3]))
    factor = scene.radii / 0.015
    assert torch.allclose(factor, factor[:, :1].expand_as(factor))
    assert (factor[:, 0] >= 0.5).all() and (factor[:, 0] < 2).all() and len(set(factor[:, 0].tolist())) == 3


def diamond_square_reference(n: int, corners: np.ndarray, noise: np.ndarray, decay: float, variant: str):
    """catalys1/fractal-pretraining's diamond_square loops (anderson), or the contest's port (its square step
    stops one row and column short), the noise taken from ``noise`` instead of numpy's stream."""
    s = 2**n + 1
    a = np.zeros((s, s))
    a[0, 0], a[0, s - 1], a[s - 1, 0], a[s - 1, s - 1] = corners
    for k in range(1, n + 1):
        m = 0.5 * np.exp(decay * (1 - k))
        ss = s // 2**k
        ni = 2**k
        for i in range(0, ni, 2):
            ru, r, rd = i * ss, i * ss + ss, i * ss + 2 * ss
            for j in range(0, ni, 2):
                cl, c, cr = j * ss, j * ss + ss, j * ss + 2 * ss
                a[r, c] = 0.25 * (a[ru, cl] + a[ru, cr] + a[rd, cl] + a[rd, cr])
                a[r, c] += -m + (m - -m) * noise[r, c]
        steps = 2**k + 1 if variant == "anderson" else 2**k
        for i in range(steps):
            r = i * ss
            ru = r - ss if r > 0 else s - ss - 1
            rd = r + ss if r < s - 1 else ss
            for j in range(1 if i % 2 == 0 else 0, steps, 2):
                c = j * ss
                cl = c - ss if c > 0 else s - ss - 1
                cr = c + ss if c < s - 1 else ss
                a[r, c] = 0.25 * (a[ru, c] + a[r, cl] + a[r, cr] + a[rd, c])
                a[r, c] += -m + (m - -m) * noise[r, c]
    return a


@pytest.mark.parametrize("variant", ["contest", "anderson"])
def test_diamond_square_matches_the_published_loops(variant):
    keys = rnd.image_keys(torch.tensor([0, 1]), torch.tensor([5, 6]))
    size = 24  # n = 5, a 33 x 33 grid
    corners, noise, decay, color = diamond_square_draws(keys, size)
    field = diamond_square_field(corners, noise, decay, variant)
    for i in range(2):
        ref = diamond_square_reference(5, corners[i].numpy(), noise[i].numpy(), float(decay[i]), variant)
        assert np.array_equal(field[i].numpy(), ref)
    if variant == "contest":
        assert (field[:, -1, 1:-1] == 0).all()  # as published: the last row is never visited
    images = diamond_square(keys, size, variant)
    assert images.shape == (2, 3, size, size) and images.std() > 0.02
    # The colouring, as published (bytes through OpenCV's conversion, tested above).
    f = field[:, :size, :size].numpy()
    d = color.numpy()
    for i in range(2):
        if variant == "contest":
            scales = (np.array([0.25, 0.1, 0.3]) + (np.array([1, 0.3, 0.6]) - np.array([0.25, 0.1, 0.3])) * d[i, :3])
            shifts = (np.array([0, 0.4, 0.4]) + (np.array([1, 0.6, 0.6]) - np.array([0, 0.4, 0.4])) * d[i, 3:])
            hsv = np.clip(f[i][..., None] * (scales * 255) + shifts * 255, 0, 255).astype(np.uint8)
        else:
            hs, hh = (0.25 + (1 - 0.25) * d[i, 0]) * 255, d[i, 1] * 255
            ss_, sh = (0.1 + (0.3 - 0.1) * d[i, 2]) * 255, (0.4 + (0.6 - 0.4) * d[i, 3]) * 255
            vs, vh = (0.3 + (0.6 - 0.3) * d[i, 4]) * 255, (0.4 + (0.6 - 0.4) * d[i, 5]) * 255
            hue = np.trunc(f[i] * hs + hh).astype(np.int64) & 255
            sat = np.trunc(np.minimum(f[i] * ss_ + sh, 255)).astype(np.int64) & 255
            val = np.trunc(np.minimum(f[i] * vs + vh, 255)).astype(np.int64) & 255
            hsv = np.stack([hue, sat, val], -1).astype(np.uint8)
        expected = hsv8_to_rgb8(torch.from_numpy(hsv)).permute(2, 0, 1)
        assert torch.equal(colorize(field[i:i + 1, :size, :size], color[i:i + 1], variant)[0], expected)
        assert torch.equal(images[i], expected.float() / 255)


def test_contest_keys_are_checked():
    with pytest.raises(ConfigError, match="renderer.augment.jitter_prob"):
        contest_config("renderer.augment.jitter_prob=1.5")
    with pytest.raises(ConfigError, match="renderer.augment.add_local"):
        contest_config("renderer.augment.add_local=-1")
    with pytest.raises(ConfigError, match="renderer.augment.depth_hue_value"):
        contest_config("renderer.augment.depth_hue_value=[0.9, 0.5]")
    with pytest.raises(ConfigError, match="renderer.augment.radius_scale"):
        contest_config("renderer.augment.radius_scale=[0.0, 1.0]")
    with pytest.raises(ConfigError, match="renderer.augment.drop_local"):
        PointRenderer(PointBank(torch.zeros(1, 10, 3), {}, {}, 0),
                      contest_config("renderer.augment.drop_local=10").renderer)


# --- the ablation table as a comparison ----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["contest", "contest_cpu"])
def test_every_ablation_row_is_a_valid_config(preset):
    from tools.compare import CONTEST_ARMS, PRESETS, arms_of

    arms = {name: arm.pretrain for name, arm in arms_of(PRESETS[preset]).items() if name != "none"}
    assert list(arms) == list(CONTEST_ARMS)
    for name, overrides in arms.items():
        cfg = load_config(ROOT / PRESETS[preset]["config"], [*PRESETS[preset].get("overrides", []), *overrides])
        aug = cfg.renderer.augment
        assert (aug.subsample_prob == 0.0) == (name in ("shift_scale_rotate", "colored_points", "points_50k"))
        assert aug.depth_hue == (name == "colored_points") and aug.pointwolf == (name == "pointwolf")
        assert (aug.jitter > 0) == (name == "noise")
        assert (cfg.renderer.background == "diamond_square") == (name == "diamond_square")
        base = PRESETS[preset]["points"]
        assert cfg.bank.num_points == (5 * (base + 1) - 1 if name == "points_50k" else base)


@pytest.mark.slow
def test_contest_comparison_runs_two_rows_at_toy_scale(tmp_path):
    import csv

    from dr_fdsl import datasets
    from tools.compare import main

    out = tmp_path / "cmp"
    assert main(["--preset", "contest_cpu", "--out", str(out), "--arms", "colored_points", "pointwolf", "--steps",
                 "2", "--epochs", "1", "--per-class", "5", "--max-test", "50",
                 "--data-root", str(datasets.DEBIAN_FASHION_MNIST)]) == 0
    with open(out / "results.csv", newline="") as f:
        assert [r["mode"] for r in csv.DictReader(f)] == ["none", "colored_points", "pointwolf"]
    table = (out / "results.md").read_text()
    assert "| colored_points | 1 |" in table and "| 71.83 |" in table and "| 72.08 |" in table
