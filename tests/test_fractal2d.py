"""2D fractal families against the published code: FractalDB's category search and instance weights, and
Anderson & Farrell's SVD sampler, iteration and jitter. Fixture provenance: tests/fixtures/*/README.md."""

from pathlib import Path

import numpy as np
import pytest

from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.svd2d import published as svd2d

FIX = Path(__file__).parent / "fixtures"
FDB_CSVS = sorted((FIX / "fractaldb").glob("0*.csv"))
SVD = FIX / "svd2d" / "published.npz"


@pytest.fixture(scope="module")
def first_categories():
    return fdb.search_categories(len(FDB_CSVS))


def test_fractaldb_search_reproduces_published_csvs(first_categories):
    assert len(FDB_CSVS) == 5
    for cat, path in zip(first_categories, FDB_CSVS):
        assert cat.csv_text() == path.read_text(), path.name
        assert cat.fill >= fdb.FILL_THRESHOLD
        assert cat.params.shape == (len(cat.probs), 6) and cat.params.dtype == np.float64


def test_fractaldb_rejects_between_accepts_are_below_threshold(first_categories):
    # the candidates skipped before the second category really fail the filter (scalar reference path)
    cands = fdb.iter_candidates()
    first, second = first_categories[0].candidate, first_categories[1].candidate
    for i in range(second + 1):
        params, probs, uniforms = next(cands)
        if i <= first:
            continue
        fill = fdb.filling_rate(fdb._iterate_scalar(params, probs, uniforms))
        assert (fill >= fdb.FILL_THRESHOLD) == (i == second), i
    assert fill == first_categories[1].fill


def test_fractaldb_batch_matches_scalar_reference():
    cands = fdb.iter_candidates(seed=3, num_points=3000)
    batch = [next(cands) for _ in range(9)]
    # plus expanding systems that overflow within the 3000 steps: A alone to inf only (its terms keep one sign),
    # A with the scaled rotation C and C alone on to NaN (inf - inf)
    grow, rot = [0.99, 0.9, 0.9, 0.99, 0.1, 0.2], [0.99, -0.9, 0.9, 0.99, -0.3, 0.1]
    for j, maps in enumerate(([grow], [grow, rot], [rot])):
        m = len(maps)
        batch.insert(3 * j + 1, (np.array(maps), np.full(m, 1 / m), np.random.RandomState(0).random_sample(3000)))
    sel = np.stack([fdb._selections(p, u)[0] for _, p, u in batch])
    pts = fdb._iterate_batch([c[0] for c in batch], sel, chunk=700)
    finite = np.isfinite(pts).all(axis=(0, 1))
    assert finite.sum() == 9
    assert np.isnan(pts).any(axis=(0, 1)).sum() == 2  # one system only overflows to inf, two reach NaN
    fills = fdb._fill_batch(pts.copy(), finite, 512, 6)
    for s, (params, probs, uniforms) in enumerate(batch):
        ref = fdb._iterate_scalar(params, probs, uniforms)
        np.testing.assert_array_equal(pts[:, :, s], ref)
        if finite[s]:
            assert fills[s] == fdb.filling_rate(ref)
        else:
            assert fdb.filling_rate(ref) < 0.01  # the published inf / NaN handling collapses them


def test_fractaldb_draw_order_and_probabilities():
    rng = np.random.RandomState(fdb.PUBLISHED_SEED)
    params, probs, uniforms = fdb.draw_candidate(rng, 10)
    ref = np.random.RandomState(fdb.PUBLISHED_SEED)
    n = ref.randint(2, 8)
    assert len(params) == n
    for row in params:
        np.testing.assert_array_equal(row, ref.uniform(-1.0, 1.0, 6))
    np.testing.assert_array_equal(uniforms, ref.random_sample(10))
    det = np.abs(params[:, 0] * params[:, 3] - params[:, 1] * params[:, 2])
    np.testing.assert_allclose(probs, det / det.sum(), rtol=1e-15)
    counts = {len(fdb.draw_candidate(rng, 1)[0]) for _ in range(300)}
    assert counts == set(range(2, 8))  # randint's high is exclusive: never 8 maps


def test_chaos_game_start_and_selection():
    params = np.array([[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0]])
    pts = fdb.chaos_game_2d(params, np.array([0.5, 0.5]), 6, np.random.RandomState(0))
    u = np.random.RandomState(0).random_sample(6)
    assert pts.shape == (6, 2) and (pts[0] == 0).all()  # the start point is kept, no transient dropped
    x = 0.0
    for i in range(5):
        x = 0.5 * x + (0.5 if u[i] > 0.5 else 0.0)  # map 0 when u <= 0.5
        assert pts[i + 1, 0] == x


def test_filling_rate_pixel_mapping():
    pts = np.array([[-1.0, -2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    q = fdb.pixel_coords(pts)
    np.testing.assert_array_equal(q, [[6, 6], [506, 506], [256, 256], [256, 256]])
    assert fdb.filling_rate(pts) == 3 / 512**2
    # points after the first NaN and the 100 before it are dropped, as published
    xs = np.concatenate([np.linspace(0, 1, 200), [np.inf, np.nan, np.nan]])
    q = fdb.pixel_coords(np.stack([xs, xs], 1))
    assert len(q) == 101 and q[:, 0].max() == 506  # rows 101..202 dropped


def test_instance_weights_match_published_files():
    for path in sorted((FIX / "fractaldb").glob("weights_*.csv")):
        key = path.stem.split("_", 1)[1]
        rows = [[float(v) for v in line.split(",")] for line in path.read_text().splitlines()]
        np.testing.assert_array_equal(fdb.instance_weights(key), rows, err_msg=path.name)
    w = fdb.instance_weights()
    assert w.shape == (25, 6)
    assert (w == 1).all(axis=1).sum() == 1 and (w[2] == 1).all()  # one identity row, third
    assert sorted(set(w[w != 1].tolist())) == [0.2, 0.6, 1.4, 1.8]
    assert ((w != 1).sum(axis=1) <= 1).all() and ((w != 1).sum(axis=0) == 4).all()


def test_instance_params(first_categories):
    params = first_categories[0].params
    inst = fdb.instance_params(params)
    assert inst.shape == (25, len(params), 6)
    np.testing.assert_array_equal(inst[2], params)
    np.testing.assert_array_equal(inst[0][:, 0], params[:, 0] * 0.2)  # a of every map
    np.testing.assert_array_equal(inst[0][:, 1:], params[:, 1:])
    np.testing.assert_array_equal(inst[24][:, 5], params[:, 5] * 1.8)  # last row: f by 1.8


def _svd_cases():
    z = np.load(SVD)
    for i in range(int(z["num_cases"])):
        n = z[f"n_{i}"]
        yield z, i, (None if n[0] < 0 else (int(n[0]), int(n[1])))


def test_svd_systems_reproduce_published():
    for z, i, n in _svd_cases():
        rng = np.random.default_rng(int(z[f"seed_{i}"]))
        parts = svd2d.sample_system_parts(rng, n=n)
        np.testing.assert_array_equal(parts["system"], z[f"system_{i}"])
        np.testing.assert_array_equal(parts["s"], z[f"s_{i}"])
        assert parts["alpha"] == z[f"alpha_{i}"]
        assert rng.random() == z[f"next_{i}"]  # the stream consumed exactly as published


def test_svd_iterate_and_jitter_reproduce_published():
    z = np.load(SVD)
    for j in range(3):
        system = z[f"system_{int(z[f'iterate_system_{j}'])}"]
        pts = svd2d.iterate(system, 500, np.random.RandomState(int(z[f"iterate_seed_{j}"])))
        np.testing.assert_array_equal(pts, z[f"iterate_{j}"])
    for name, base in (("jitter_0", z["system_0"]), ("jitter_tight", z["jitter_tight_system"])):
        got = np.stack([svd2d.jitter_system(base, np.random.default_rng(1000 + s)) for s in range(40)])
        np.testing.assert_array_equal(got, z[name])
    kept = (z["jitter_tight"] == z["jitter_tight_system"]).all(axis=(1, 2, 3))
    assert 0 < kept.sum() < 40  # the fixture covers both the fall-back and accepted retries


@pytest.mark.parametrize("n", [(2, 5), None, 7])
def test_svd_constraints(n):
    rng = np.random.default_rng(12345)
    for _ in range(60):
        p = svd2d.sample_system_parts(rng, n=n)
        system, s = p["system"], p["s"]
        m = len(system)
        lo, hi = (2, 5) if n == (2, 5) else (2, 8) if n is None else (n, n + 1)
        assert lo <= m < hi
        assert (s >= 0).all() and (s[:, 0] >= s[:, 1]).all() and (s[:, 0] <= 1 + 1e-12).all()
        alpha = (s[:, 0] + 2 * s[:, 1]).sum()
        a_lo, a_hi = svd2d.sigma_factor_bounds(m)
        assert a_lo <= p["alpha"] <= a_hi and alpha == pytest.approx(p["alpha"], abs=1e-12)
        svals = np.linalg.svd(system[:, :, :2], compute_uv=False)
        np.testing.assert_allclose(svals, s, atol=1e-12)
        for f in (p["u"], p["v"]):
            np.testing.assert_allclose(f @ f.transpose(0, 2, 1), np.broadcast_to(np.eye(2), f.shape), atol=1e-12)
        assert (np.abs(system[:, :, 2]) <= 1).all()
        # the iteration starts at map 0's fixed point: its first step is map k applied to that point
        v = svd2d.fixed_point(system)
        np.testing.assert_allclose(system[0, :, :2] @ v + system[0, :, 2], v, atol=1e-9)
        state = np.random.RandomState(5)
        r = np.random.RandomState(5).random_sample()
        k = int(np.searchsorted(np.cumsum(svd2d.probabilities(system)), r, side="right"))
        first = svd2d.iterate(system, 3, state)[0]
        np.testing.assert_allclose(first, system[min(k, m - 1), :, :2] @ v + system[min(k, m - 1), :, 2], atol=1e-12)


def test_svd_jitter_bounds():
    rng = np.random.default_rng(7)
    for _ in range(50):
        system = svd2d.sample_system(rng)
        j = svd2d.jitter_system(system, rng)
        changed = np.flatnonzero((j != system).any(axis=(1, 2)))
        assert len(changed) <= 1
        if len(changed):
            k = changed[0]
            ratio = j[k] / system[k]
            assert np.allclose(ratio, ratio[0, 0]) and 0.8 <= ratio[0, 0] <= 1.1
        assert np.linalg.svd(j[:, :, :2], compute_uv=False).max() <= 1
