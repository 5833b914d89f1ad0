"""Family svd2d (Anderson & Farrell's single-instance fractals) and the window and flips of their generator."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dr_fdsl.bank import build_bank
from dr_fdsl.config import AugmentConfig, BankConfig, RendererConfig, ViewConfig
from dr_fdsl.families import FAMILIES
from dr_fdsl.families.svd2d import generator as fam
from dr_fdsl.families.svd2d import published as svd2d
from dr_fdsl.render import PointRenderer
from dr_fdsl.render.window import window_and_flips

FIX = Path(__file__).parent / "fixtures" / "svd2d" / "published.npz"
FLAT = ViewConfig(rotation="none", projection="orthographic", ortho_scale=(1.0, 1.0))


@pytest.fixture(scope="module")
def svd_bank():
    return build_bank(family="svd2d", num_classes=40, num_points=400, seed=3, cache_dir=None)


def test_registered_with_grey_levels():
    assert FAMILIES["svd2d"].colors and FAMILIES["svd2d"].generate is fam.generate


def test_every_system_satisfies_its_constraints(svd_bank):
    p = svd_bank.params
    assert svd_bank.points.shape == (40, 400, 3) and p["grey"].shape == (40, 400)
    for c in range(40):
        n = int(p["num_maps"][c])
        assert 2 <= n <= 4
        system = p["system"][c, :n].numpy()
        assert (p["system"][c, n:] == 0).all()
        s = p["singular_values"][c, :n].numpy()
        # the stored pairs are the maps' singular values, each in [0, 1] with s1 >= s2
        got = np.linalg.svd(system[:, :, :2], compute_uv=False)
        np.testing.assert_allclose(got, s, atol=1e-12)
        assert (s <= 1 + 1e-12).all() and (s >= 0).all() and (s[:, 0] >= s[:, 1]).all()
        # the sigma-factor: sum of s1 + 2 s2 is the drawn alpha, inside [(5 + n) / 2, (6 + n) / 2]
        alpha = float(p["sigma_factor"][c])
        assert abs((s[:, 0] + 2 * s[:, 1]).sum() - alpha) < 1e-9
        lo, hi = svd2d.sigma_factor_bounds(n)
        assert lo <= alpha <= hi
        assert (np.abs(system[:, :, 2]) <= 1).all()  # translations U(-1, 1)
    pts = svd_bank.points
    assert (pts[..., 2] == 0).all() and pts[..., :2].abs().max() <= 1 - 1 / 224 + 1e-6
    grey = p["grey"]
    assert (grey > 0).all() and (grey <= 1).all() and torch.allclose(grey.amax(1), torch.ones(40))


def test_systems_and_chaos_games_match_the_published_code():
    z = np.load(FIX)
    # bank.seed=0: category c is sample_system(n=(2, 5)) on default_rng(c), the fixture's cases 0..5
    for c in range(6):
        parts, _ = fam.draw_category(0, c, 2, 4, 1.0)
        np.testing.assert_array_equal(parts["system"], z[f"system_{c}"])
        np.testing.assert_array_equal(parts["s"], z[f"s_{c}"])
    # the lockstep chaos games, all three in one batch, equal the published ifs.iterate with numba's seeds
    cases = range(3)
    systems = [z[f"system_{int(z[f'iterate_system_{j}'])}"] for j in cases]
    got, _ = fam.chaos_games(systems, [int(z[f"iterate_seed_{j}"]) for j in cases], 500)
    for j in cases:
        np.testing.assert_array_equal(got[j], z[f"iterate_{j}"])


def test_bank_points_are_the_chaos_game_in_the_published_window():
    cfg = BankConfig(family="svd2d", num_classes=3, num_points=300, seed=0, cache_dir="unused")
    out = fam.generate(cfg)
    s = cfg.svd2d.canvas
    for c in range(3):
        parts, seed = fam.draw_category(0, c, 2, 4, 1.0)
        xy = svd2d.iterate(parts["system"], 300, np.random.RandomState(seed))  # the port, checked above
        # slow reference of ifs._render_graded's pixel mapping and counts, one point at a time
        lo, hi = xy.min(0), xy.max(0)
        scale = [(s - 1) / (hi[i] - lo[i]) for i in range(2)]
        pix = [(int((x - lo[0]) * scale[0]), int((y - lo[1]) * scale[1])) for x, y in xy]
        counts = {}
        for rc in pix:
            counts[rc] = counts.get(rc, 0) + 1
        top = max(counts.values())
        grey = torch.tensor([counts[rc] / top for rc in pix], dtype=torch.float32)
        assert torch.equal(out.params["grey"][c], grey)
        # each point lies in its published pixel at the canvas size: row from NDC y, column from NDC x
        pts = out.points[c].double()
        row, col = (1 - pts[:, 1]) * s / 2 - 0.5, (1 - pts[:, 0]) * s / 2 - 0.5
        ref = torch.tensor(pix, dtype=torch.float64)
        assert ((row - ref[:, 0]).abs() < 1 + 1e-4).all() and ((row - ref[:, 0]) > -1e-4).all()
        assert ((col - ref[:, 1]).abs() < 1 + 1e-4).all() and ((col - ref[:, 1]) > -1e-4).all()


def test_bad_settings_fail_at_load():
    from dr_fdsl.config import load_config
    from dr_fdsl.errors import ConfigError

    for override, key in (("bank.svd2d.min_maps=5", "bank.svd2d.min_maps"), ("bank.svd2d.bval=0", "bank.svd2d.bval"),
                          ("renderer.augment.window_scale=[2, 1]", "renderer.augment.window_scale")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, ["bank.family=svd2d", override])


def _dihedral_images(xy: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in (xy, xy.flip(-1)):
        for sx in (1.0, -1.0):
            for sy in (1.0, -1.0):
                out.append(t * torch.tensor([sx, sy]))
    return out


def test_window_and_flips():
    g = torch.Generator().manual_seed(0)
    ndc = torch.rand(64, 50, 3, generator=g) * 2 - 1
    keys = torch.arange(64) * 7919
    assert window_and_flips(ndc, keys, AugmentConfig()) is ndc  # off by default
    # a window of twice the extent, not moved: the points at half the size, depth untouched
    half = window_and_flips(ndc, keys, AugmentConfig(window_scale=(2.0, 2.0)))
    assert torch.equal(half[..., :2], ndc[..., :2] / 2) and torch.equal(half[..., 2], ndc[..., 2])
    # a shift of t extents moves every point by -2 t (the window spans 2 NDC units), t within the bound
    moved = window_and_flips(ndc, keys, AugmentConfig(window_shift=0.2))
    delta = moved[..., :2] - ndc[..., :2]
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6) and delta.abs().max() <= 0.4 + 1e-6
    # every image is one of the 8 symmetries of the square, and all 8 occur
    flipped = window_and_flips(ndc, keys, AugmentConfig(dihedral=True))
    seen = set()
    for b in range(64):
        matches = [i for i, cand in enumerate(_dihedral_images(ndc[b, :, :2])) if torch.equal(cand, flipped[b, :, :2])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_renderer_draws_the_bank_grey_levels(svd_bank):
    cfg = RendererConfig(image_size=32, color_init="bank", view=FLAT, radius_init=0.03,
                         augment=AugmentConfig(window_scale=(0.5, 2.0), window_shift=0.2, dihedral=True))
    renderer = PointRenderer(svd_bank, cfg)
    # the initial colours are the grey levels on every channel (kept 1e-3 inside (0, 1) by the parameterisation)
    colors = renderer.colors()
    assert torch.allclose(colors, svd_bank.params["grey"][..., None].expand_as(colors), atol=2e-3)
    ids, seeds = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    images = renderer(ids, seeds)
    assert images.shape == (4, 3, 32, 32) and (images.amax(dim=(1, 2, 3)) > 0).all()
    # keyed per image: the same image in another batch
    assert torch.equal(renderer(ids[2:], seeds[2:]), images[2:])
    plain = PointRenderer(svd_bank, dataclasses.replace(cfg, augment=AugmentConfig()))
    assert not torch.equal(plain(ids, seeds), images)


def test_map_jitter_draws_follow_the_published_rule(svd_bank):
    from dr_fdsl.families.svd2d import instances as ifs_jitter

    p = svd_bank.params
    ids = torch.arange(40).repeat(25)
    keys = torch.arange(1000) * 7 + 11
    sv, n = p["singular_values"][ids], p["num_maps"][ids]
    j = ifs_jitter.draw_jitter(keys, sv, n, (0.8, 1.1))
    assert (j.map_index < n).all() and (j.map_index >= 0).all()
    moved = j.factor != 1
    assert ((j.factor[moved] >= 0.8) & (j.factor[moved] < 1.1)).all() and moved.float().mean() > 0.5
    jittered = ifs_jitter.jittered_system(p["system"][ids], j)
    for b in range(0, 1000, 37):  # every kept system stays contractive; only the chosen map changed, row and shift
        k = int(n[b])
        assert np.linalg.svd(jittered[b, :k, :, :2].numpy(), compute_uv=False).max() <= 1 + 1e-12
        same = torch.ones(k, dtype=torch.bool)
        same[j.map_index[b]] = False
        assert torch.equal(jittered[b, :k][same], p["system"][ids[b], :k][same])
        assert torch.allclose(jittered[b, j.map_index[b]], p["system"][ids[b], j.map_index[b]] * j.factor[b])
    # a system every draw would make expansive is used unchanged
    tight = torch.ones(8, 3, 2)
    fallback = ifs_jitter.draw_jitter(keys[:8], tight, torch.full((8,), 3), (1.05, 1.1))
    assert (fallback.factor == 1).all()


def test_map_jitter_replays_the_chaos_game_with_the_jittered_maps(svd_bank):
    from dr_fdsl.families.svd2d import instances as ifs_jitter

    p = svd_bank.params
    ids = torch.tensor([0, 5, 9])
    system, maps = p["system"][ids], p["maps"][ids].long()
    # unjittered, the replay is the bank's chaos game and lands on the bank's points
    same = ifs_jitter.window_ndc(ifs_jitter.replay(system, maps), 224)
    assert torch.allclose(same, svd_bank.points[ids], atol=1e-6)
    # jittered: a slow sequential reference, one point at a time from the jittered map 0's fixed point
    jitter = ifs_jitter.Jitter(torch.tensor([1, 0, 1]), torch.tensor([0.85, 1.05, 0.9], dtype=torch.float64))
    jsys = ifs_jitter.jittered_system(system, jitter)
    fast = ifs_jitter.replay(jsys, maps)
    for b in range(3):
        m = jsys[b].tolist()
        x, y = (float(t) for t in svd2d.fixed_point(jsys[b].numpy()))
        for i, k in enumerate(maps[b].tolist()):
            (a, bb, e), (c, d, f) = m[k]
            x, y = a * x + bb * y + e, c * x + d * y + f
            assert abs(fast[b, i, 0] - x) < 1e-12 and abs(fast[b, i, 1] - y) < 1e-12


def test_renderer_map_jitter(svd_bank):
    from dr_fdsl.config import load_config
    from dr_fdsl.errors import ConfigError

    cfg = RendererConfig(image_size=32, color_init="bank", view=FLAT, radius_init=0.03)
    jit = PointRenderer(svd_bank, dataclasses.replace(cfg, augment=AugmentConfig(map_jitter=(0.8, 1.1))))
    plain = PointRenderer(svd_bank, cfg)
    ids, seeds = torch.arange(8), torch.arange(8) + 100
    images = jit(ids, seeds)
    assert not torch.equal(images, plain(ids, seeds))
    assert torch.equal(jit(ids[3:5], seeds[3:5]), images[3:5])  # keyed per image
    with pytest.raises(ConfigError, match=r"renderer\.augment\.map_jitter"):
        load_config(None, ["renderer.augment.map_jitter=[0.8, 1.1]"])  # family ifs3d has no maps to jitter
