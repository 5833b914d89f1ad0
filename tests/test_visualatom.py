"""VisualAtom building blocks against the published code's own outputs (fixtures: tests/fixtures/visualatom/)."""

import hashlib
import json
import math
import random

import numpy as np
import pytest
import torch

from dr_fdsl.families.visualatom.perlin import pnoise1, pnoise1_scalar
from dr_fdsl.families.visualatom.published import (
    SCRIPT_DEFAULTS,
    VISUALATOM_1K,
    CategoryParams,
    MersenneStream,
    draw_centre,
    orbit_vertices,
    published_category,
    replay_thread,
    sample_category,
)
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "visualatom"


# ---------------------------------------------------------------- pnoise1


def test_pnoise1_matches_the_noise_package():
    data = np.load(FIXTURES / "pnoise1.npz")
    settings = json.loads(str(data["settings"]))
    assert len(settings) == 5
    for name, kw in settings:
        x, want = data[f"{name}_x"], data[f"{name}_y"].astype(np.float64)
        got = pnoise1(torch.from_numpy(x), **kw)
        assert got.dtype == torch.float64 and got.shape == x.shape
        err = np.abs(got.numpy() - want)
        assert err.max() < 1e-6, (name, err.max())
        # The port does the C's float32 arithmetic step for step, so it is bit-exact, not just close.
        assert (err == 0).all(), (name, int((err > 0).sum()))


def test_pnoise1_hand_value_scalar_and_shapes():
    # x = 0.5: PERM[0] = 151 -> gradient 8, PERM[1] = 160 -> gradient 1; fade(0.5) = 0.5:
    # (8 * 0.5 + 0.5 * (1 * -0.5 - 8 * 0.5)) * 0.4 = 0.7 in float32.
    assert pnoise1_scalar(0.5) == float(np.float32(0.7))
    assert pnoise1_scalar(3.0) == 0.0  # zero at lattice points
    x = torch.linspace(-20, 20, 24, dtype=torch.float64).reshape(2, 3, 4)
    y = pnoise1(x, octaves=3)
    assert y.shape == (2, 3, 4)
    assert pnoise1_scalar(float(x[1, 2, 3]), octaves=3) == float(y[1, 2, 3])
    with pytest.raises(ValueError):
        pnoise1(x, base=257)
    with pytest.raises(ValueError):
        pnoise1(x, octaves=0)
    with pytest.raises(ValueError):
        pnoise1(x, octaves=2, repeat=1, lacunarity=0.5)  # second octave's repeat is (int)0.5 = 0


# ---------------------------------------------------------------- random stream and draw order


def test_stream_is_python_random_word_for_word():
    ours, theirs = MersenneStream(7, chunk=1000), random.Random(7)
    ops = np.random.default_rng(0)
    for _ in range(3000):
        op = int(ops.integers(0, 5))
        if op == 0:
            a = int(ops.integers(-600, 600))
            b = a + int(ops.integers(0, 1100))
            assert ours.randint(a, b) == theirs.randint(a, b)
        elif op == 1:
            assert ours.uniform(0, 10000) == theirs.uniform(0, 10000)
        elif op == 2:
            n = int(ops.integers(1, 1500))
            assert np.array_equal(ours.randoms(n), [theirs.random() for _ in range(n)])
        elif op == 3:
            n = int(ops.integers(1, 3000))
            ours.skip(n)
            theirs.getrandbits(32 * n)  # CPython takes exactly ceil(k / 32) words here
        else:
            k = int(ops.integers(1, 33))
            assert ours.getrandbits(k) == theirs.getrandbits(k)


def _script_category_draws(r, a):
    """The script's category draws, transcribed literally, on a random.Random."""
    vertex_number = r.randint(a.vertex_num_min, a.vertex_num_max)
    line_draw_num = r.randint(a.line_num_min, a.line_num_max)
    perlin_noise_coefficient = r.uniform(a.perlin_min, (a.perlin_min + 4))
    line_width = r.uniform(0.0, a.line_width)
    start_rad = r.randint(a.radius_min, a.radius_min + 50)
    nami1 = r.randint(a.nami_1_min, a.nami_1_max)
    while True:
        nami2 = r.randint(a.nami_2_min, a.nami_2_max)
        if nami1 != nami2:  # noqa: SIM114 (kept as the script writes it)
            break
        elif nami1 == 0:
            break
    oval_rate_x = r.uniform(1, a.oval_rate)
    oval_rate_y = r.uniform(1, a.oval_rate)
    start_pos_h = (a.image_size + r.randint(-1 * a.start_pos, a.start_pos)) / 2
    start_pos_w = (a.image_size + r.randint(-1 * a.start_pos, a.start_pos)) / 2
    return (vertex_number, line_draw_num, perlin_noise_coefficient, line_width, start_rad, nami1, nami2, oval_rate_x,
            oval_rate_y, start_pos_w, start_pos_h)


@pytest.mark.parametrize("cfg", [VISUALATOM_1K, SCRIPT_DEFAULTS], ids=["make_VisualAtom.sh", "argparse_defaults"])
def test_category_draw_order_matches_a_literal_transcription(cfg):
    stream, r = MersenneStream(3), random.Random(3)
    for i in range(400):
        p = sample_category(stream, i, cfg)
        mine = (p.num_vertices, p.num_orbits, p.noise_amp, p.width, p.radius, p.n1, p.n2, p.oval_x, p.oval_y,
                *draw_centre(stream, cfg))
        assert mine == _script_category_draws(r, cfg)
    assert stream.consumed > 0


@pytest.fixture(scope="module")
def many_categories():
    stream = MersenneStream(11)
    cats, centres = [], []
    for i in range(4000):
        cats.append(sample_category(stream, i))
        centres.append(draw_centre(stream))
    return cats, np.array(centres)


def test_parameter_ranges_as_published(many_categories):
    cats, centres = many_categories
    col = {f: np.array([getattr(c, f) for c in cats]) for f in CategoryParams.__dataclass_fields__}
    assert col["num_vertices"].min() >= 200 and col["num_vertices"].max() <= 1000
    assert col["num_orbits"].min() >= 1 and col["num_orbits"].max() <= 200
    assert col["noise_amp"].min() >= 0 and col["noise_amp"].max() < 4  # perlin_min = 0 in make_VisualAtom.sh
    assert col["width"].min() >= 0 and col["width"].max() < 0.1
    assert col["radius"].min() == 10 and col["radius"].max() == 60  # randint(10, 60): both ends inclusive
    for n in ("n1", "n2"):
        assert set(col[n]) == set(range(21))
    for o in ("oval_x", "oval_y"):
        assert col[o].min() >= 1 and col[o].max() < 2
    # Spread: the ranges are used, not just respected.
    assert col["num_vertices"].min() < 210 and col["num_vertices"].max() > 990
    assert col["num_orbits"].min() == 1 and col["num_orbits"].max() == 200
    assert col["noise_amp"].max() > 3.99 and col["width"].max() > 0.0999
    # Centre: (512 + randint(-512, 512)) / 2, half-pixel steps over the whole canvas.
    assert centres.min() == 0 and centres.max() == 512 and ((centres * 2) % 1 == 0).all()


def test_n2_given_n1_rule(many_categories):
    cats, _ = many_categories
    n1 = np.array([c.n1 for c in cats])
    n2 = np.array([c.n2 for c in cats])
    assert not ((n1 == n2) & (n1 != 0)).any()  # redrawn while equal ...
    assert ((n1 == 0) & (n2 == 0)).sum() > 0  # ... except that n1 = 0 keeps its first n2, even 0
    # With n1 = 0 the first n2 is uniform on 0..20; otherwise n2 is uniform on the 20 other values.
    assert set(n2[n1 == 0]) == set(range(21))


def test_orbit_vertices_match_a_scalar_transcription():
    params = CategoryParams(index=0, num_vertices=23, num_orbits=6, noise_amp=2.7, width=0.04, radius=37, n1=5, n2=0,
                            oval_x=1.3, oval_y=1.8)
    centre = (101.5, 7.0)
    u = np.random.default_rng(5).uniform(0, 10000, (6, 2, 23))
    got = orbit_vertices(params, centre, u)
    assert got.shape == (6, 23, 2) and got.dtype == torch.float64

    # The script's loops, with its variable names.
    K, lam, w = params.num_vertices, params.noise_amp, params.width
    angle = (math.pi * 2) / K
    vx = [math.cos(angle * v) * params.radius * params.oval_x + centre[0] for v in range(K)]
    vy = [math.sin(angle * v) * params.radius * params.oval_y + centre[1] for v in range(K)]
    for line in range(params.num_orbits):
        nx = [pnoise1_scalar(u[line, 0, v]) * lam - lam - 0.5 * math.sin(angle * v * params.n1)
              - 0.5 * math.sin(angle * v * params.n2) for v in range(K)]
        ny = [pnoise1_scalar(u[line, 1, v]) * lam - lam - 0.5 * math.sin(angle * v * params.n1)
              - 0.5 * math.sin(angle * v * params.n2) for v in range(K)]
        for v in range(K):
            vx[v] -= math.cos(angle * v) * (nx[v] - w)
            vy[v] -= math.sin(angle * v) * (ny[v] - w)
        assert got[line, :, 0].tolist() == vx and got[line, :, 1].tolist() == vy, line


# ---------------------------------------------------------------- the published script's own outputs


def _check_against_recording(category, rec):
    p = category.params
    c = p.index
    want = rec[f"c{c}_params"]
    mine = [p.num_vertices, p.num_orbits, p.noise_amp, p.width, p.radius, p.n1, p.n2, p.oval_x, p.oval_y]
    assert mine == want.tolist(), c
    centres = rec[f"c{c}_centres"]
    assert np.array_equal(category.centres[:len(centres)], centres), c
    for k in sorted(int(key.split("_")[1][1:]) for key in rec.files if key.startswith(f"c{c}_i") and "grays" in key):
        pre = f"c{c}_i{k}_"
        draws = category.instances[k]
        assert np.array_equal(draws.grays, rec[pre + "grays"]), (c, k)
        verts = orbit_vertices(p, draws.centre, draws.u).numpy()
        sub = verts[rec[pre + "orbits"]][:, rec[pre + "vertex_idx"]]
        assert np.abs(sub - rec[pre + "vertices"]).max() < 1e-9, (c, k)
        # All L * K vertices, bit for bit (the recording stores their hash).
        assert hashlib.sha256(np.ascontiguousarray(verts).tobytes()).hexdigest() == str(rec[pre + "sha256"]), (c, k)


def test_first_three_published_categories():
    rec = np.load(FIXTURES / "published_thread0.npz")
    assert str(rec["python"]).startswith("3.8.")
    recorded = sorted(int(k[1:].split("_")[0]) for k in rec.files if k.endswith("_params"))
    assert recorded == [0, 1, 2]
    categories = list(replay_thread(0, instances=(0, 1, 999), stop=3))
    assert [c.params.index for c in categories] == [0, 1, 2]
    for category in categories:
        _check_against_recording(category, rec)


def test_first_category_of_another_thread():
    rec = np.load(FIXTURES / "published_thread1.npz")
    category = published_category(50)  # thread 1: random.seed(2), the first of categories 50..99
    _check_against_recording(category, rec)
    with pytest.raises(ValueError):
        VISUALATOM_1K.locate(1000)
