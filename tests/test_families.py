import subprocess
import sys

import pytest
import torch

from dr_fdsl.bank import build_bank, cache_path
from dr_fdsl.config import BankConfig, IFS3DConfig, load_config
from dr_fdsl.errors import BankCacheError, BankError, ConfigError
from dr_fdsl.families import FAMILIES
from dr_fdsl.families.ifs3d.generator import chaos_game, generate, normalize_cloud, normalized_variance, sample_systems
from tests.conftest import ROOT


def untrained_checksum(cfg) -> float:
    """``renderer_checksums``' formula (float64 sum of each rendering parameter times its 1-based index) on a renderer
    built afresh from ``cfg``, as every run starts: a trained renderer's checksum differs from it."""
    from dr_fdsl.bank import bank_from_config
    from dr_fdsl.render import PointRenderer

    renderer = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
    return sum(float(p.detach().double().sum()) * (i + 1) for i, p in enumerate(renderer.parameters()))


def reference_cloud(affine, probs, num_maps, u, burn_in):
    """The chaos game for one system, one point at a time in plain Python floats, then centred and scaled."""
    x = [0.0, 0.0, 0.0]
    points = []
    cdf, acc = [], 0.0
    for p in probs.tolist():
        acc += p
        cdf.append(acc)
    for t, r in enumerate(u.tolist()):
        k = min(sum(r >= c for c in cdf[:-1]), int(num_maps) - 1)
        m = affine[k].tolist()
        x = [m[i][0] * x[0] + m[i][1] * x[1] + m[i][2] * x[2] + m[i][3] for i in range(3)]
        if t >= burn_in:
            points.append(x)
    cloud = torch.tensor(points, dtype=torch.float64)
    cloud = cloud - cloud.mean(0)
    return cloud / cloud.abs().max()


def test_shapes_ranges_and_filter(small_bank):
    b = small_bank
    affine, probs, num_maps = (b.params[k] for k in ("affine", "probs", "num_maps"))
    assert b.points.shape == (6, 600, 3) and b.points.dtype == torch.float32
    assert affine.shape == (6, 7, 3, 4) and probs.shape == (6, 7) and num_maps.shape == (6,)
    assert ((num_maps >= 2) & (num_maps <= 7)).all()
    assert torch.isfinite(b.points).all()
    # Centred on the centroid, largest coordinate exactly 1 in magnitude.
    assert b.points.mean(1).abs().max() < 1e-5
    assert torch.allclose(b.points.abs().amax(dim=(1, 2)), torch.ones(6))
    assert (b.points.var(1, unbiased=False) > 0.05 - 1e-6).all()
    # Unused maps are zero and never chosen; probabilities sum to one and follow |det A|.
    for c in range(6):
        n = int(num_maps[c])
        assert (affine[c, n:] == 0).all() and (probs[c, n:] == 0).all()
        det = torch.linalg.det(affine[c, :n, :, :3]).abs()
        assert torch.allclose(probs[c, :n], det / det.sum())


def test_points_match_a_one_point_at_a_time_reference(small_bank):
    b = small_bank
    u = torch.rand(100 + 600, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for c in range(3):
        ref = reference_cloud(*(b.params[k][c] for k in ("affine", "probs", "num_maps")), u, burn_in=100)
        assert torch.allclose(b.points[c].double(), ref, atol=1e-5)


def test_deterministic_and_prefix_stable(small_bank):
    again = build_bank(num_classes=6, num_points=600, seed=1, cache_dir=None)
    assert torch.equal(again.points, small_bank.points)
    assert torch.equal(again.params["affine"], small_bank.params["affine"])
    fewer = build_bank(num_classes=2, num_points=600, seed=1, cache_dir=None)
    assert torch.equal(fewer.points, small_bank.points[:2])
    other = build_bank(num_classes=2, num_points=600, seed=2, cache_dir=None)
    assert not torch.equal(other.params["affine"], small_bank.params["affine"][:2])


def test_statistics_filter_equals_filter_on_the_cloud():
    gen = torch.Generator().manual_seed(5)
    affine, probs, num_maps = sample_systems(512, "uniform", 2, 7, gen)
    u = torch.rand(50 + 300, generator=gen, dtype=torch.float64)
    stats = chaos_game(affine, probs, num_maps, u, 50, keep_points=False)
    cloud = normalize_cloud(chaos_game(affine, probs, num_maps, u, 50, keep_points=True))
    finite = torch.isfinite(cloud).all(dim=(1, 2)) & torch.isfinite(stats).all(dim=(1, 2))
    assert finite.sum() > 50
    assert torch.allclose(normalized_variance(stats, 300)[finite], cloud.var(1, unbiased=False)[finite],
                          rtol=1e-6, atol=1e-9)


def test_svd_sampler_is_contractive():
    affine, probs, num_maps = sample_systems(256, "svd", 2, 7, torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(affine[..., :3])
    assert sv.max() <= 1 + 1e-12
    bank = build_bank(num_classes=3, num_points=400, seed=0, sampler="svd", cache_dir=None)
    assert (bank.points.var(1, unbiased=False) > 0.05 - 1e-6).all()


def test_cache_round_trip(tmp_path, monkeypatch):
    first = build_bank(num_classes=2, num_points=300, seed=3, cache_dir=str(tmp_path))
    path = cache_path(BankConfig(num_classes=2, num_points=300, seed=3, cache_dir=str(tmp_path)))
    assert path.is_file()
    import dr_fdsl.bank as bank

    monkeypatch.setattr(bank, "_generate", lambda *a, **k: pytest.fail("cache was not used"))
    second = build_bank(num_classes=2, num_points=300, seed=3, cache_dir=str(tmp_path))
    assert torch.equal(first.points, second.points)
    assert torch.equal(first.params["probs"], second.params["probs"])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_settings"])
def test_corrupt_cache_is_a_clear_error_and_rebuild_fixes_it(tmp_path, damage):
    kwargs = dict(num_classes=2, num_points=300, seed=3, cache_dir=str(tmp_path))
    good = build_bank(**kwargs)
    path = cache_path(BankConfig(**kwargs))
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    else:  # a valid file made with other settings, under this name
        other = build_bank(num_classes=2, num_points=300, seed=4, cache_dir=str(tmp_path))
        path.write_bytes(cache_path(BankConfig(**{**kwargs, "seed": 4})).read_bytes())
        assert not torch.equal(other.points, good.points)
    with pytest.raises(BankCacheError, match="rebuild"):
        build_bank(**kwargs)
    assert torch.equal(build_bank(**kwargs, rebuild=True).points, good.points)
    assert torch.equal(build_bank(**kwargs).points, good.points)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(num_classes=0), "'bank.num_classes': must be positive"),
        (dict(num_points=-5), "'bank.num_points': must be positive"),
        (dict(min_variance=1.0), r"'bank.ifs3d.min_variance': must be in \[0, 1\)"),
        (dict(min_maps=3, max_maps=2), "'bank.ifs3d.min_maps'"),
    ],
)
def test_bad_settings_fail_fast(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_bank(**{"num_classes": 2, "num_points": 100, "cache_dir": None, **kwargs})


def test_unreachable_threshold_gives_up_after_bounded_draws():
    cfg = BankConfig(num_classes=2, num_points=200, ifs3d=IFS3DConfig(min_variance=0.9))
    with pytest.raises(BankError, match=r"only 0 of 2 systems passed bank.ifs3d.min_variance=0.9 in 16384 draws"):
        generate(cfg, max_draws=16384)


def test_make_bank_tool(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_bank.py"), "--config", str(ROOT / "configs/quickstart.yaml"),
         "bank.num_classes=2", "bank.num_points=300", f"bank.cache_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "bank: 2 classes x 300 points, built from" in out.stdout
    assert any(tmp_path.glob("bank-v2-ifs3d-c2-n300-*.pt"))
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "make_bank.py"), "bank.colour=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown config key 'bank.colour'" in bad.stderr


def test_unknown_family_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'bank.family': unknown family 'ifs2d' \(did you mean 'ifs3d'\?\); valid: "
                                          r"fractaldb, ifs3d, ofdb, onepfrac, svd2d, visualatom"):
        load_config(None, ["bank.family=ifs2d"])
    assert set(FAMILIES) == {"fractaldb", "ifs3d", "ofdb", "onepfrac", "svd2d", "visualatom"}


def test_cache_key_is_the_chosen_familys_content():
    base = BankConfig(num_classes=2, num_points=300)
    assert cache_path(base) == cache_path(BankConfig(num_classes=2, num_points=300, cache_dir="cache/banks"))
    assert cache_path(base) != cache_path(BankConfig(num_classes=2, num_points=300, seed=1))
    assert cache_path(base) != cache_path(BankConfig(num_classes=2, num_points=300,
                                                     ifs3d=IFS3DConfig(min_variance=0.06)))


# ------------------------------------------------------------------------------------------------------------
# Family ofdb: the published 3D-OFDB categories and clouds
# ------------------------------------------------------------------------------------------------------------

OFDB_FIXTURES = ROOT / "tests" / "fixtures" / "ofdb"


def contest_categories():
    import json

    doc = json.loads((OFDB_FIXTURES / "contest_params_first12.json").read_text())
    return [torch.tensor([[float.fromhex(v) for v in row] for row in cat], dtype=torch.float64)
            for cat in doc["categories"]]


def test_ofdb_family_reproduces_the_contests_published_parameters_and_clouds():
    import json

    from dr_fdsl.bank import bank_from_config

    cfg = load_config(None, ["bank.family=ofdb", "bank.seed=42", "bank.num_classes=3", "bank.num_points=9999"])
    bank = bank_from_config(cfg.bank, use_cache=False)
    published = contest_categories()
    for c in range(3):
        m = int(bank.params["num_maps"][c])
        assert torch.equal(bank.params["params13"][c, :m], published[c])  # bit for bit
        assert (bank.params["params13"][c, m:] == 0).all()
    clouds = json.loads((OFDB_FIXTURES / "published_clouds.json").read_text())["contest_seed42"]["clouds"]
    for c, ref in enumerate(clouds):
        first = torch.tensor([float.fromhex(v) for v in ref["first"]], dtype=torch.float64).float()
        last = torch.tensor([float.fromhex(v) for v in ref["last"]], dtype=torch.float64).float()
        assert bank.points.shape == (3, 9999, 3)
        assert torch.equal(bank.points[c, 0], first) and torch.equal(bank.points[c, -1], last)


def test_ofdb_family_reads_published_parameter_files(tmp_path):
    import pickle

    import numpy as np

    from dr_fdsl.bank import bank_from_config

    folder = OFDB_FIXTURES / "category_search_seed42"
    from_csv = bank_from_config(load_config(None, ["bank.family=ofdb", f"bank.ofdb.source={folder}", "bank.seed=42",
                                                   "bank.num_classes=4", "bank.num_points=500"]).bank, use_cache=False)
    assert from_csv.draws == 0 and from_csv.points.shape == (4, 500, 3)
    contest = {i: c.numpy() for i, c in enumerate(contest_categories())}
    (tmp_path / "params.pkl").write_bytes(pickle.dumps(contest))
    from_pkl = bank_from_config(load_config(None, ["bank.family=ofdb", f"bank.ofdb.source={tmp_path / 'params.pkl'}",
                                                   "bank.num_classes=4", "bank.num_points=500"]).bank,
                                use_cache=False)
    for c in range(4):
        m = int(from_pkl.params["num_maps"][c])
        assert torch.equal(from_pkl.params["params13"][c, :m], torch.from_numpy(np.asarray(contest[c])))
        # Same maps as the OFDB script's CSVs (which differ from the contest file only in some probabilities' bits)
        assert torch.equal(from_csv.params["params13"][c, :m, :12], from_pkl.params["params13"][c, :m, :12])
    with pytest.raises(BankError, match="holds 12 categories, fewer than bank.num_classes=13"):
        bank_from_config(load_config(None, ["bank.family=ofdb", f"bank.ofdb.source={tmp_path / 'params.pkl'}",
                                            "bank.num_classes=13", "bank.num_points=50"]).bank, use_cache=False)


def test_ofdb_family_refuses_a_pickle_that_would_run_code(tmp_path):
    import pickle

    from dr_fdsl.bank import bank_from_config
    from dr_fdsl.errors import DrFdslError
    from tests.test_reliability import Payload

    marker = tmp_path / "code_ran"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({0: Payload(marker)}))
    cfg = load_config(None, ["bank.family=ofdb", f"bank.ofdb.source={tmp_path / 'evil.pkl'}", "bank.num_classes=1"])
    with pytest.raises(DrFdslError, match="evil.pkl: refused"):
        bank_from_config(cfg.bank, use_cache=False)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="'bank.ofdb.source': 'nowhere' is neither 'search' nor"):
        load_config(None, ["bank.family=ofdb", "bank.ofdb.source=nowhere"])


def test_a_second_family_trains_through_the_same_loop(tmp_path, bank_dir):
    from dr_fdsl.engine import build_run, fit
    from tests.conftest import tiny

    cfg = tiny(tmp_path, bank_dir, "bank.family=ofdb", "bank.seed=42", "renderer.mode=joint", "train.max_steps=2")
    summary = fit(build_run(cfg))
    assert summary["step"] == 2 and summary["renderer_checksums"] != [untrained_checksum(cfg)]  # the renderer trained


# ------------------------------------------------------------------------------------------------------------
# Family fractaldb: the published FractalDB categories, points where the published renderer draws them
# ------------------------------------------------------------------------------------------------------------

FDB_FIXTURES = ROOT / "tests" / "fixtures" / "fractaldb"
FDB_ORTHO = ["renderer.view.rotation=none", "renderer.view.projection=orthographic", "renderer.view.ortho_scale=[1,1]"]


def fractaldb_config(*overrides):
    return load_config(None, ["bank.family=fractaldb", "bank.seed=1", "bank.num_classes=3", "bank.num_points=400",
                              *overrides])


@pytest.fixture(scope="module")
def fractaldb_bank():
    from dr_fdsl.bank import bank_from_config

    return bank_from_config(fractaldb_config().bank, use_cache=False)  # the published search, 3 categories


def test_fractaldb_family_reproduces_the_published_categories(fractaldb_bank):
    b = fractaldb_bank
    assert b.points.shape == (3, 400, 3) and b.points.dtype == torch.float32
    assert b.params["params"].shape == (3, 7, 6) and b.params["probs"].shape == (3, 7) and b.draws > 3
    for c in range(3):
        m = int(b.params["num_maps"][c])
        rows = torch.cat([b.params["params"][c, :m], b.params["probs"][c, :m, None]], dim=1)
        text = "".join(",".join(f"{v:.18e}" for v in row) + "\n" for row in rows.tolist())
        assert text == (FDB_FIXTURES / f"{c:05d}.csv").read_text()  # bit for bit, as np.savetxt wrote them
        assert (b.params["params"][c, m:] == 0).all() and (b.params["probs"][c, m:] == 0).all()


def test_fractaldb_family_reads_published_csvs(fractaldb_bank):
    from dr_fdsl.bank import bank_from_config

    from_csv = bank_from_config(fractaldb_config(f"bank.fractaldb.source={FDB_FIXTURES}").bank, use_cache=False)
    assert from_csv.draws == 0
    assert torch.equal(from_csv.points, fractaldb_bank.points)
    for key in ("params", "probs", "num_maps"):
        assert torch.equal(from_csv.params[key], fractaldb_bank.params[key])
    with pytest.raises(ConfigError, match="'bank.fractaldb.source': 'nowhere' is neither 'search' nor"):
        fractaldb_config("bank.fractaldb.source=nowhere")
    with pytest.raises(ConfigError, match=r"'bank.fractaldb.rate': is a filling rate: must be in \[0, 1\]"):
        fractaldb_config("bank.fractaldb.rate=1.5")


def test_fractaldb_points_render_at_the_published_pixels(fractaldb_bank):
    import numpy as np

    from dr_fdsl.bank import PointBank
    from dr_fdsl.families.fractaldb import published as fdb
    from dr_fdsl.render import PointRenderer

    b = fractaldb_bank
    picks = []
    for c in range(3):
        m = int(b.params["num_maps"][c])
        # the published renderer: the chaos game reseeded with 100, its min-max mapping to the 512 px image
        xy = fdb.chaos_game_2d(b.params["params"][c, :m].numpy(), b.params["probs"][c, :m].numpy(), 400,
                               np.random.RandomState(100))
        col, row = torch.from_numpy(fdb.pixel_coords(xy).astype(np.int64)).T
        expect = torch.stack([1 - (2 * col + 1) / 512, 1 - (2 * row + 1) / 512, torch.zeros(400)], 1).float()
        assert torch.equal(b.points[c], expect)
        picks += [(c, k, int(row[k]), int(col[k])) for k in (1, 2, 37, 399)]
    # one point per image, through the real renderer at 64 px: a radius of one output pixel reaches the 4 nearest
    # pixel centres, the brightest being the 64 px pixel that holds the published 512 px pixel
    points = torch.stack([b.points[c, k] for c, k, _, _ in picks])[:, None]
    cfg = load_config(None, [*FDB_ORTHO, "renderer.image_size=64", "renderer.radius_min=0.03",
                             "renderer.radius_init=0.03125", "renderer.radius_max=0.035"])
    renderer = PointRenderer(PointBank(points, {}, {}, 0), cfg.renderer)
    images = renderer(torch.arange(len(picks)), torch.zeros(len(picks), dtype=torch.int64))
    brightest = images[:, 0].flatten(1).argmax(1)
    got = [(int(i) // 64, int(i) % 64) for i in brightest]
    assert got == [(row // 8, col // 8) for _, _, row, col in picks]
    assert (images.flatten(1).amax(1) > 0.5).all()


def test_fractaldb_family_trains_through_the_same_loop(tmp_path, bank_dir):
    from dr_fdsl.engine import build_run, fit
    from tests.conftest import tiny

    cfg = tiny(tmp_path, bank_dir, "bank.family=fractaldb", f"bank.fractaldb.source={FDB_FIXTURES}", *FDB_ORTHO,
               "train.max_steps=2")
    summary = fit(build_run(cfg))
    # frozen (the default): the classifier trained on renders of these points, and the renderer kept its start
    assert summary["step"] == 2 and summary["renderer_checksums"] == [untrained_checksum(cfg)]
    assert summary["mode"] == "frozen" and torch.isfinite(torch.tensor(summary["val/loss"]))


# ------------------------------------------------------------------------------------------------------------
# Family visualatom: VisualAtom's categories (instance 0) as lines of points on the published 512 px canvas
# ------------------------------------------------------------------------------------------------------------

VISUALATOM_FIXTURES = ROOT / "tests" / "fixtures" / "visualatom"
# The published view of the canvas: no rotation, orthographic, the canvas spanning the image.
CANVAS_VIEW = ["renderer.view.rotation=none", "renderer.view.projection=orthographic",
               "renderer.view.ortho_scale=[1,1]"]
SMALL_SEED = 316  # bank.seed whose first fresh category is small: 4 orbits of 227 vertices, 3,713 samples


def visualatom_bank(*overrides):
    from dr_fdsl.bank import bank_from_config

    return bank_from_config(load_config(None, ["bank.family=visualatom", *overrides]).bank, use_cache=False)


def test_visualatom_replay_keeps_the_published_category_and_its_vertex_pixels():
    import numpy as np

    rec = np.load(VISUALATOM_FIXTURES / "published_thread0.npz")
    n = 500_000  # more than category 0's 430,937 dense samples: no sub-sampling, every vertex on the canvas kept
    bank = visualatom_bank("bank.visualatom.replay=true", "bank.num_classes=1", f"bank.num_points={n}")
    assert bank.params["num_samples"][0] < n and bank.points.shape == (1, n, 3) and (bank.points[..., 2] == 0).all()
    assert bank.params["category"][0].tolist() == rec["c0_params"].tolist()
    assert bank.params["centre"][0].tolist() == rec["c0_centres"][0].tolist()
    grays = rec["c0_i0_grays"]
    assert bank.params["grays"][0, :len(grays)].tolist() == grays.tolist()
    assert (bank.params["grays"][0, len(grays):] == -1).all()
    # Every recorded vertex on the canvas is a point, exactly at the centre of the pixel PIL draws it in
    # (x = 1 - (2 int(X) + 1) / 512, PIL's (X, Y) being (col, row)), with its orbit's grey level.
    have = set(zip(*(t.tolist() for t in (bank.points[0, :, 0], bank.points[0, :, 1], bank.params["grey"][0]))))
    verts, orbits = rec["c0_i0_vertices"], rec["c0_i0_orbits"]
    checked = 0
    for row, orbit in zip(verts, orbits):
        for x, y in row:
            if 0 <= x < 512 and 0 <= y < 512:
                ndc = torch.tensor([1 - (2 * int(x) + 1) / 512, 1 - (2 * int(y) + 1) / 512], dtype=torch.float64)
                want = (*ndc.float().tolist(), float(torch.tensor(float(grays[orbit])) / 255))
                assert want in have, (orbit, x, y)
                checked += 1
    assert checked >= 100
    # A fresh stream seeded with 1 (the published process 0's seed) starts with the same category.
    fresh = visualatom_bank("bank.seed=1", "bank.num_classes=1", f"bank.num_points={n}")
    assert torch.equal(fresh.points, bank.points) and torch.equal(fresh.params["grey"], bank.params["grey"])


def canvas_renderer(bank, *overrides):
    from dr_fdsl.render import PointRenderer

    radius = 0.6 * 2 / 512  # 0.6 px
    cfg = load_config(None, ["bank.family=visualatom", "renderer.image_size=512", "renderer.raster_backend=sort",
                             "renderer.points_per_pixel=8",
                             f"renderer.radius_init={radius}", f"renderer.radius_min={radius / 2}",
                             f"renderer.radius_max={radius * 2}", *CANVAS_VIEW, *overrides])
    return PointRenderer(bank, cfg.renderer)


def published_drawing(cfg):
    """The category's orbits drawn as the published script draws them (PIL, 1-pixel closed polylines)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from dr_fdsl.families.visualatom import generator as visualatom2d

    params, centre, _, u = next(visualatom2d.categories(cfg))
    image = Image.new("L", (512, 512))
    draw = ImageDraw.Draw(image)
    for orbit in visualatom2d.vertices(params, centre, u).tolist():
        draw.line([tuple(v) for v in orbit + orbit[:1]], fill=255, width=1)
    return torch.from_numpy(np.array(image) > 0)


def test_visualatom_points_draw_the_published_line_pixels():
    settings = ["bank.family=visualatom", f"bank.seed={SMALL_SEED}", "bank.num_classes=1"]
    dense = int(visualatom_bank(*settings[1:], "bank.num_points=1").params["num_samples"][0])
    reference = published_drawing(load_config(None, settings).bank)
    masks = {}
    for n in (dense, dense + 1000):  # exactly the dense samples, then padded
        bank = visualatom_bank(*settings[1:], f"bank.num_points={n}")
        with torch.no_grad():
            image = canvas_renderer(bank)(torch.tensor([0]), torch.tensor([0]))[0]
        masks[n] = image[0] > 0.5
    drawn = masks[dense]
    iou = float((drawn & reference).sum() / (drawn | reference).sum())
    assert iou >= 0.9, iou
    # The padding (copies of one vertex, behind everything) changes at most the pixel that vertex is drawn in.
    assert int((masks[dense + 1000] != drawn).sum()) <= 1


def test_visualatom_cap_subsamples_along_the_arc_and_pads_with_one_vertex():
    import math

    from dr_fdsl.families.visualatom.generator import (
        MARGIN,
        categories,
        clip_segments,
        published_pixels,
        sample_polylines,
        vertices,
    )

    cfg = load_config(None, ["bank.family=visualatom", f"bank.seed={SMALL_SEED}", "bank.num_classes=1"]).bank
    params, centre, _, u = next(categories(cfg))
    verts = published_pixels(vertices(params, centre, u).flip(0))
    points, orbit, vertex, dense, length = sample_polylines(verts, 10_000, 0.5, 512)
    within_margin = ((verts >= -4) & (verts <= 512 + 4)).all(-1)
    assert dense == 3713 and vertex[:dense].sum() == within_margin.sum() > 800  # every vertex the canvas can show
    # Padded: copies of the first vertex on the canvas, after the samples.
    on_canvas = ((points[:dense] >= 0) & (points[:dense] < 512)).all(1)
    first = int((vertex[:dense] & on_canvas).nonzero()[0])
    assert (points[dense:] == points[first]).all() and (orbit[dense:] == orbit[first]).all()
    # Consecutive samples on the canvas and on one orbit are at most `spacing` apart: a connected line.
    pair = on_canvas[1:] & on_canvas[:-1] & (orbit[1:dense] == orbit[:dense - 1])
    gaps = (points[1:dense] - points[:dense - 1]).norm(dim=1)[pair]
    assert pair.sum() > 3000 and gaps.max() <= 0.5 + 1e-9
    # Capped: N points at arc positions (k + 1/2) S / N, all on the polylines, in orbit order.
    sub, sub_orbit, _, same_dense, same_length = sample_polylines(verts, 500, 0.5, 512)
    assert (same_dense, same_length) == (dense, length) and sub.shape == (500, 2)
    a = verts.reshape(-1, 2)  # every segment of the closed polylines: from a to b
    b = verts.roll(-1, dims=1).reshape(-1, 2)
    t = (((sub[:, None] - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    assert (sub[:, None] - (a + t[..., None] * (b - a))).norm(dim=-1).amin(1).max() < 1e-9  # on the lines
    assert (sub_orbit.diff() >= 0).all() and set(sub_orbit.tolist()) == {0, 1, 2, 3}
    # The same points from a walk along the drawn parts, one segment at a time.
    start, direction, t0, t1, _ = clip_segments(verts, -MARGIN, 512 + MARGIN)
    want, walked, k = [], 0.0, 0
    for p, d, lo, hi in zip(start.tolist(), direction.tolist(), t0.tolist(), t1.tolist()):
        part = math.hypot(*d) * (hi - lo)
        while k < 500 and (k + 0.5) * length / 500 < walked + part:
            t = lo + (hi - lo) * ((k + 0.5) * length / 500 - walked) / part
            want.append((p[0] + t * d[0], p[1] + t * d[1]))
            k += 1
        walked += part
    assert torch.allclose(sub, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-9)


def test_visualatom_bank_colours_train_only_the_drawn_categories():
    bank = visualatom_bank(f"bank.seed={SMALL_SEED}", "bank.num_classes=3", "bank.num_points=3000")
    renderer = canvas_renderer(bank, "renderer.image_size=64", "renderer.mode=joint", "renderer.color_init=bank")
    start = renderer.colors()
    # residual tables (the default of a learnable renderer) hold the bank's grey levels exactly
    assert torch.equal(start, bank.params["grey"].float().clamp(0, 1)[..., None].expand(-1, -1, 3))
    renderer(torch.tensor([0, 2, 2]), torch.tensor([5, 6, 7])).sum().backward()
    for table in (renderer.color_logits, renderer.radius_logits):
        grad = table.grad.coalesce()
        rows = set(grad.indices()[0].tolist())
        assert rows == {0, 2}, rows
        assert all(grad.values()[i].abs().sum() > 0 for i in range(len(rows)))


@pytest.mark.parametrize("overrides, pattern", [
    (["renderer.color_init=bank"], "'renderer.color_init': 'bank' takes each point's colour from the bank, and "
                                   "family 'ifs3d' stores none"),
    (["bank.family=visualatom", "bank.visualatom.replay=true", "bank.num_classes=1001"],
     "'bank.num_classes': the published run makes 1000 categories"),
    (["bank.family=visualatom", "bank.visualatom.line_num_min=0"], "'bank.visualatom.line_num_min': must be >= 1"),
])
def test_visualatom_settings_fail_fast(overrides, pattern):
    from dr_fdsl.bank import PointBank
    from dr_fdsl.config import RendererConfig
    from dr_fdsl.render import PointRenderer

    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)
    with pytest.raises(ConfigError, match="'renderer.color_init': 'bank' .* this bank has none"):
        PointRenderer(PointBank(torch.zeros(1, 5, 3), {}, {}, 1), RendererConfig(color_init="bank"))


def test_visualatom_trains_through_the_same_loop(tmp_path, bank_dir):
    from dr_fdsl.engine import build_run, fit
    from tests.conftest import tiny

    cfg = tiny(tmp_path, bank_dir, "bank.family=visualatom", "renderer.color_init=bank", "renderer.mode=joint",
               *CANVAS_VIEW, "train.max_steps=2")
    summary = fit(build_run(cfg))
    assert summary["step"] == 2 and summary["renderer_checksums"] != [untrained_checksum(cfg)]  # the renderer trained
