"""Instances drawn per image (bank.<family>.instances): the on-device replay against the published generators, the
per-image draws, the renderer's use of them (gradients, frozen export) and the settings they refuse.
Fixture provenance: tests/fixtures/ofdb/README.md, tests/fixtures/fractaldb/README.md."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import read_image

from dr_fdsl.bank import build_bank
from dr_fdsl.config import load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.fractaldb.instances import FractalDBInstances
from dr_fdsl.families.ifs_scan import prefix_compose, replay, replay_sequential, with_identity
from dr_fdsl.families.ofdb.instances import IDENTITY_ROW, OFDBInstances
from dr_fdsl.families.ofdb.params_io import read_ofdb_csv_folder
from dr_fdsl.families.ofdb.published import exfractal_weights, point_clouds
from dr_fdsl.families.visualatom import generator as va2d
from dr_fdsl.families.visualatom.instances import VisualAtomInstances
from dr_fdsl.render import PointRenderer
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.renderer import squash
from dr_fdsl.static import export, image_path, quantize
from tests.reference_render import reference_render

FIX = Path(__file__).parent / "fixtures"
OFDB_CSVS = FIX / "ofdb" / "category_search_seed42"
CANVAS_VIEW = ["renderer.view.rotation=none", "renderer.view.projection=orthographic",
               "renderer.view.ortho_scale=[1.0,1.0]"]


@pytest.fixture(scope="module")
def ofdb_bank():
    return build_bank(family="ofdb", source=str(OFDB_CSVS), num_classes=3, num_points=1500, seed=42,
                      instances="exfractal145", cache_dir=None)


@pytest.fixture(scope="module")
def fractaldb_bank():
    return build_bank(family="fractaldb", source=str(FIX / "fractaldb"), num_classes=3, num_points=3000, seed=1,
                      canvas=128, instances=True, cache_dir=None)


@pytest.fixture(scope="module")
def visualatom_bank():
    return build_bank(family="visualatom", num_classes=2, num_points=12000, seed=316, instances=True, cache_dir=None)


# --------------------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_prefix_scan_equals_the_sequential_chaos_game(dim):
    g = torch.Generator().manual_seed(dim)
    maps = (torch.rand(3, 5, dim, dim + 1, generator=g, dtype=torch.float64) * 2 - 1) * 0.8
    num_maps = torch.tensor([2, 5, 4])
    maps = with_identity(maps, num_maps)
    assert maps.shape == (3, 6, dim, dim + 1) and torch.equal(maps[0, 2], torch.eye(dim, dim + 1).double())
    choices = torch.minimum(torch.randint(0, 6, (3, 777), generator=g), num_maps[:, None])  # repeats included
    slow = replay_sequential(maps, choices)
    assert torch.allclose(replay(maps, choices), slow, rtol=0, atol=1e-12)  # float64: the same sums regrouped
    fast = replay(maps.float(), choices).double()
    assert (fast - slow).abs().max() < 1e-5 * slow.abs().max()
    # every prefix, not only its translation
    prefixes = prefix_compose(maps[:, :1].expand(-1, 9, -1, -1))
    assert torch.allclose(prefixes[:, -1, :, :dim], torch.linalg.matrix_power(maps[:, 0, :, :dim], 9))


# --------------------------------------------------------------------------------------------------------
# 3D-OFDB / ExFractal
# --------------------------------------------------------------------------------------------------------


def test_exfractal_weights_are_the_published_file():
    with open(FIX / "ofdb" / "weights_ins145.csv", newline="") as f:
        published = np.array([[float(v) for v in row] for row in csv.reader(f)])
    assert published.shape == (145, 12)
    assert np.array_equal(exfractal_weights(), published)


def test_ofdb_instances_replay_the_published_chaos_game(ofdb_bank):
    inst = OFDBInstances(ofdb_bank)
    classes = torch.arange(3)
    identity = inst.points(classes, torch.full((3,), IDENTITY_ROW))
    assert (identity - ofdb_bank.points).abs().max() < 1e-6  # the identity row is the bank's cloud
    systems = read_ofdb_csv_folder(OFDB_CSVS, limit=3)
    weights = exfractal_weights()
    checked = 0
    for row in (0, 12, 30, 77, 108, 144):
        # the published instance.py's computation: the same contest stream, every map's a..l times the row
        ref = torch.from_numpy(point_clouds(systems, np.random.RandomState(42), point_num=1501,
                                            weight=tuple(weights[row])))
        fast = inst.exact_points(classes, torch.full((3,), row)).double()  # float64 beyond float32's range
        finite = torch.isfinite(ref).all(dim=(1, 2))
        assert torch.equal(finite, torch.isfinite(fast).all(dim=(1, 2)))
        if finite.any():
            assert (fast[finite] - ref[finite]).abs().max() < 1e-5
            checked += int(finite.sum())
    assert checked >= 15


def test_ofdb_instance_row_0_is_the_released_3d_ofdb_cloud(ofdb_bank):
    """Row 0 (a x 0.4) is what bank.ofdb.instance_weight=ofdb bakes into the bank (checked there against clouds
    of the published instance.py, tests/fixtures/ofdb/published_clouds.json)."""
    released = build_bank(family="ofdb", source=str(OFDB_CSVS), num_classes=3, num_points=1500, seed=42,
                          instance_weight="ofdb", cache_dir=None)
    row0 = OFDBInstances(ofdb_bank).points(torch.arange(3), torch.zeros(3, dtype=torch.long))
    assert (row0 - released.points).abs().max() < 1e-5


def test_ofdb_instance_draws_are_keyed_and_cover_the_rows(ofdb_bank):
    inst = OFDBInstances(ofdb_bank)
    classes = torch.zeros(400, dtype=torch.long)
    keys = rnd.image_keys(classes, torch.arange(400))
    drawn = inst(classes, keys, ofdb_bank.points[classes])
    assert torch.equal(drawn.index, inst(classes, keys, ofdb_bank.points[classes]).index)
    assert len(drawn.index.unique()) > 100  # of 145
    assert torch.isfinite(drawn.points).all()  # diverging rows are drawn again


# --------------------------------------------------------------------------------------------------------
# FractalDB
# --------------------------------------------------------------------------------------------------------


def published_rescale_continuous(points: np.ndarray, canvas: int) -> np.ndarray:
    """ifs_function.__rescale before the uint16 truncation, float64 (finite points only)."""
    xs, ys = points[:, 0].copy(), points[:, 1].copy()
    if xs.min() < 0:
        xs -= xs.min()
    if ys.min() < 0:
        ys -= ys.min()
    span = float(canvas - 2 * fdb.PAD)
    return np.stack([xs / (xs.max() - xs.min()) * span + fdb.PAD, ys / (ys.max() - ys.min()) * span + fdb.PAD], 1)


def test_fractaldb_instances_replay_the_published_weighted_chaos_game(fractaldb_bank):
    inst = FractalDBInstances(fractaldb_bank)
    canvas, n = 128, 3000
    identity = inst.points(torch.arange(3), torch.full((3,), 2), flips=None, patch=False)
    assert torch.equal(identity, fractaldb_bank.points)  # the identity row (3rd) is the bank's category
    params, probs = fractaldb_bank.params["params"], fractaldb_bank.params["probs"]
    agree = total = 0
    for c in range(3):
        m = int(fractaldb_bank.params["num_maps"][c])
        p, w = params[c, :m].numpy(), probs[c, :m].numpy()
        for row, weighted in enumerate(fdb.instance_params(p)):
            # the published make_fractaldb.py: the weighted maps, the category's probabilities, seed 100
            ref = fdb.chaos_game_2d(weighted, w, n, np.random.RandomState(fdb.INSTANCE_SEED))
            if not np.isfinite(ref).all():
                continue  # a diverging instance (see the notes)
            fast, far = inst.canvas_pixels(torch.tensor([c]), torch.tensor([row]), far=True)
            assert len(far) == (np.abs(ref).max() > 1e4)  # nearly diverging: redone in float64 by points()
            if len(far):
                fast = inst.canvas_pixels(torch.tensor([c]), torch.tensor([row]), torch.float64)
            fast = fast[0].double().numpy()
            cont = published_rescale_continuous(ref, canvas)
            error = np.abs(fast - cont).max() * 2 / canvas  # NDC units
            assert error < 1e-5, (c, row, error)
            pixels = fdb.pixel_coords(ref, canvas)  # the published uint16 pixels
            same = (np.floor(fast) == pixels).all(axis=1)
            agree += int(same.sum())
            total += n
            # a pixel differs only where the exact value lies within float32 rounding of a pixel edge
            near = np.abs(cont - np.round(cont)).min(axis=1) < 3e-3
            assert (same | near).all()
    assert total >= 40 * n and agree / total > 0.999


def test_fractaldb_flips_and_patch_centres(fractaldb_bank):
    inst = FractalDBInstances(fractaldb_bank)
    c, row = torch.tensor([1]), torch.tensor([7])
    base = inst.points(c, row, flips=None, patch=False)
    step = 2 / 128
    # the patch's top-left pixel is (col + 1, row + 1): its centre 2 px right of and below the point (-x, -y)
    assert torch.allclose(inst.points(c, row, flips=None), base - torch.tensor([2 * step, 2 * step, 0]), atol=1e-6)
    patch = inst.points(c, row, flips=None)
    expect = {0: (1, -1), 1: (1, 1), 2: (-1, -1), 3: (-1, 1)}  # _flip0.._flip3: top-bottom, canvas, both, left-right
    for flip, (sx, sy) in expect.items():
        flipped = inst.points(c, row, flips=torch.tensor([flip]))
        assert torch.equal(flipped, patch * torch.tensor([sx, sy, 1.0]))
    keys = rnd.image_keys(torch.zeros(300, dtype=torch.long), torch.arange(300))
    drawn = inst(torch.zeros(300, dtype=torch.long), keys, fractaldb_bank.points[torch.zeros(300, dtype=torch.long)])
    assert drawn.index[:, 0].unique().tolist() == list(range(25))
    assert drawn.index[:, 1].unique().tolist() == list(range(4))


# --------------------------------------------------------------------------------------------------------
# VisualAtom
# --------------------------------------------------------------------------------------------------------


def test_visualatom_instance_centres_move_the_published_vertex_pixels(visualatom_bank):
    bank, canvas = visualatom_bank, 512
    inst = VisualAtomInstances(bank)
    centre = bank.params["centre"][0]
    at_zero = torch.stack([2 * centre - canvas]).long()  # the draw that gives instance 0's centre
    assert torch.equal(inst.points(bank.points[:1], torch.tensor([0]), at_zero), bank.points[:1])
    # the category's raw vertices, as the bank made them (fresh stream: category 0 of bank.seed)
    cfg = load_config(None, ["bank.family=visualatom", "bank.seed=316", "bank.num_classes=1"]).bank
    params, c0, _, u = next(va2d.categories(cfg))
    raw = va2d.vertices(params, c0, u)  # (L, K, 2)
    for draw in ([0, 0], [-511, 300], [17, -4], [512, -512], [1, 1]):
        draws = torch.tensor([draw])
        moved = inst.points(bank.points[:1], torch.tensor([0]), draws)[0, :, :2].double()
        d = (canvas + draws[0].double()) / 2 - torch.tensor(c0)
        # every vertex: PIL's pixel of the moved vertex, trunc(v + d), centred (where it lies on the canvas)
        pixels = torch.trunc(raw + d) + 0.5
        on = ((raw + d >= 0) & (raw + d < canvas)).all(-1)
        want = va2d.canvas_to_ndc(pixels[on], canvas)
        dist = torch.cdist(want, moved).min(dim=1).values
        assert dist.max() < 1e-5, (draw, dist.max())


def test_visualatom_instance_greys_are_per_orbit_and_published_distribution(visualatom_bank):
    bank = visualatom_bank
    inst = VisualAtomInstances(bank)
    orbit = bank.params["orbit"].long()
    grays = bank.params["grays"]
    # orbit ids are in the published order: instance 0's grey per point is its orbit's published grey
    assert torch.equal(bank.params["grey"], grays.gather(1, orbit).float() / 255)
    classes = torch.zeros(500, dtype=torch.long)
    drawn = inst(classes, rnd.image_keys(classes, torch.arange(500)), bank.points[classes])
    shade = drawn.shade * 255
    assert torch.equal(shade, shade.round()) and shade.min() >= 0 and shade.max() <= 255
    for b in range(3):  # one grey per orbit
        for o in orbit[0].unique():
            assert len(shade[b, orbit[0] == o].unique()) == 1
    assert drawn.index.min() >= -512 and drawn.index.max() <= 512 and len(drawn.index.unique()) > 400


# --------------------------------------------------------------------------------------------------------
# In the renderer
# --------------------------------------------------------------------------------------------------------


def renderer_for(bank, family, *overrides):
    cfg = load_config(None, [f"bank.family={family}", "renderer.image_size=32", "renderer.points_per_pixel=4",
                             "renderer.radius_init=0.04", *overrides])
    return PointRenderer(bank, cfg.renderer)


@pytest.mark.parametrize("family", ["ofdb", "fractaldb", "visualatom"])
def test_gradients_are_exact_and_touch_only_the_drawn_categories(family, ofdb_bank, fractaldb_bank,
                                                                 visualatom_bank):
    bank = {"ofdb": ofdb_bank, "fractaldb": fractaldb_bank, "visualatom": visualatom_bank}[family]
    view = CANVAS_VIEW if family != "ofdb" else []
    renderer = renderer_for(bank, family, "renderer.mode=joint", "renderer.color_init=random",
                            "renderer.color_param=squash", *view)
    classes, seeds = torch.tensor([1, 1, 0]), torch.tensor([3, 4, 5])
    images = renderer(classes, seeds)
    probe = torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    (images * probe).sum().backward()
    # the reference: the same scene's points and radii, colours = squash(logits) x the instance's shade
    with torch.no_grad():
        scene, _ = renderer.scene(classes, seeds)
        keys = rnd.image_keys(classes, seeds)
        drawn = renderer.instances(classes, keys, bank.points[classes])
    logits = renderer.color_logits.detach()[classes].view(3, -1, 3).clone().requires_grad_()
    colors = squash(logits) * (drawn.shade[..., None] if drawn.shade is not None else 1)
    ref = reference_render(scene.points, colors, scene.radii, scene.background, 32, 4)
    assert (ref - images).abs().max() < 1e-5
    (ref * probe).sum().backward()
    grad = renderer.color_logits.grad.coalesce()
    assert grad.indices()[0].tolist() == [0, 1]  # untouched category 2 stays still
    ours = grad.to_dense()
    want = torch.zeros_like(ours).index_add_(0, classes, logits.grad.view(3, -1))
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-4)
    assert set(renderer.radius_logits.grad.coalesce().indices()[0].tolist()) == {0, 1}


def test_instances_vary_by_view_seed_and_off_changes_nothing(ofdb_bank):
    on = renderer_for(ofdb_bank, "ofdb", "renderer.view.rotation=none")
    first, second = on(torch.tensor([0, 0]), torch.tensor([1, 2]))
    assert not torch.equal(first, second)  # same camera, other instances
    plain = build_bank(family="ofdb", source=str(OFDB_CSVS), num_classes=3, num_points=1500, seed=42, cache_dir=None)
    off = renderer_for(plain, "ofdb", "renderer.view.rotation=none")
    assert off.instances is None and torch.equal(plain.points, ofdb_bank.points)
    assert on.state_dict().keys() == off.state_dict().keys()  # checkpoints hold no instance buffers


def test_frozen_export_equals_the_in_loop_instances(tmp_path, fractaldb_bank):
    overrides = ["bank.family=fractaldb", f"bank.fractaldb.source={FIX / 'fractaldb'}", "bank.num_classes=3",
                 "bank.num_points=3000", "bank.seed=1", "bank.fractaldb.canvas=128", "bank.fractaldb.instances=true",
                 "renderer.image_size=32", "renderer.points_per_pixel=4", "renderer.radius_init=0.04",
                 f"output_dir={tmp_path / 'run'}", *CANVAS_VIEW]
    cfg = load_config(None, overrides)
    renderer = PointRenderer(fractaldb_bank, cfg.renderer)
    export(renderer, cfg, tmp_path / "data", 4, batch_size=5, progress=False)
    seen = set()
    for c in range(3):
        for v in range(4):
            png = read_image(str(tmp_path / "data" / image_path(c, v)))
            with torch.no_grad():
                loop = quantize(renderer(torch.tensor([c]), torch.tensor([v])))[0]
            assert torch.equal(png, loop)
            seen.add(png.float().sum().item())
    assert len(seen) >= 10  # instances differ (a diverging one draws nothing)


@pytest.mark.parametrize("overrides, pattern", [
    (["bank.family=ofdb", "bank.ofdb.instances=exfractal145", "renderer.augment.mix=0.2"],
     "'renderer.augment.mix': must be 0 with bank.ofdb.instances"),
    (["bank.family=ofdb", "bank.ofdb.instances=exfractal145", "bank.ofdb.instance_weight=ofdb"],
     "'bank.ofdb.instance_weight': must be 'none' with bank.ofdb.instances=exfractal145"),
    (["bank.family=visualatom", "bank.visualatom.instances=true", "renderer.color_init=bank"],
     "'renderer.color_init': 'bank' starts every point at instance 0's grey"),
    (["bank.family=fractaldb", "bank.fractaldb.instances=true", "renderer.augment.mix=0.5"],
     "'renderer.augment.mix'"),
    (["bank.family=ofdb", "bank.ofdb.instances=all"], "'bank.ofdb.instances': 'all' is not one of"),
])
def test_settings_instances_refuse(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_renderer_built_in_python_refuses_mixing_with_instances(ofdb_bank):
    with pytest.raises(ConfigError, match="renderer.augment.mix"):
        renderer_for(ofdb_bank, "ofdb", "renderer.augment.mix=0.3")


def test_patch_drawing_reference_is_the_published_paste_loop():
    """tools/fractaldb_patch_iou.py's vectorised draw_patch against the published loop itself: a PIL paste of each
    point's masked 3 x 3 patch in turn (later ones overwrite earlier ones, black included)."""
    import random

    from PIL import Image

    from tools.fractaldb_patch_iou import published_patch_image

    canvas = 24
    g = np.random.RandomState(0)
    pixels = g.randint(0, canvas - 2, size=(300, 2)).astype(np.uint16)  # some patches run off the canvas
    image = Image.new("RGB", (canvas, canvas))
    rng = random.Random(5)
    for col, row in pixels:
        mask = f"{rng.randrange(1, 512):09b}"
        patch = np.zeros((3, 3, 3), np.uint8)
        for i in range(3):
            for j in range(3):
                patch[i, j, :] = np.array([127, 127, 127]) * int(mask[i * 3 + j])
        image.paste(Image.fromarray(patch), (int(col) + 1, int(row) + 1))
    want = np.array(image)[..., 0] == 127
    assert np.array_equal(published_patch_image(pixels, canvas, random.Random(5)), want)


def test_renderer_covers_the_patch_support_and_half_of_a_published_drawing():
    from tools.fractaldb_patch_iou import measure

    (result,) = measure(canvas=64, points=3000, categories=1, rows=[2])
    assert result["iou_support"] > 0.99  # discs of 1.7 px at the patch centres cover exactly the 3 x 3 blocks
    # the random masks light about half of the support: no drawing independent of them does much better
    assert 0.35 < result["iou_published"] < 0.65 and result["iou_floor"] < result["iou_published"]


def test_instances_off_leave_the_cache_key_and_fingerprints_as_they_were():
    """The new keys are left out of content_settings at their default: banks, static datasets and checkpoints made
    before them keep their keys; switched on, they change them."""
    from dr_fdsl.bank import cache_path
    from dr_fdsl.config import BankConfig, FractalDBConfig, content_settings

    before = {"family": "fractaldb", "num_classes": 2, "num_points": 300, "seed": 0,
              "fractaldb": {"source": "search", "rate": 0.2, "search_points": 100000, "canvas": 512}}
    off = BankConfig(family="fractaldb", num_classes=2, num_points=300)
    assert content_settings(off) == before
    on = BankConfig(family="fractaldb", num_classes=2, num_points=300, fractaldb=FractalDBConfig(instances=True))
    assert content_settings(on)["fractaldb"]["instances"] is True and cache_path(on) != cache_path(off)


def test_instances_train_through_the_same_loop(tmp_path, bank_dir):
    from dr_fdsl.engine import build_run, fit
    from tests.conftest import tiny
    from tests.test_families import untrained_checksum

    cfg = tiny(tmp_path, bank_dir, "bank.family=ofdb", f"bank.ofdb.source={OFDB_CSVS}", "bank.seed=42",
               "bank.ofdb.instances=exfractal145", "renderer.mode=joint", "train.max_steps=2")
    summary = fit(build_run(cfg))
    assert summary["step"] == 2 and summary["renderer_checksums"] != [untrained_checksum(cfg)]  # the renderer trained
