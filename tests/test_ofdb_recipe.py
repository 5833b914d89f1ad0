"""The 3D-OFDB search port against published values, and the parameter-file readers (fixtures: see
tests/fixtures/ofdb/README.md)."""

import hashlib
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dr_fdsl.families.ofdb import published as ofdb_recipe
from dr_fdsl.families.ofdb.params_io import (
    ParamsError,
    UnsafePickleError,
    read_contest_params,
    read_ofdb_csv,
    read_ofdb_csv_folder,
    write_ofdb_csv_folder,
)
from dr_fdsl.families.ofdb.published import IFSSystem, point_cloud, search_categories

FIX = Path(__file__).parent / "fixtures" / "ofdb"
CSV_DIR = FIX / "category_search_seed42"
N = 12  # categories in the fixtures
LAPACK_SENSITIVE = [8, 9, 10]  # where MKL's and OpenBLAS's det round differently (the fixture says so)


def _contest_published() -> list[np.ndarray]:
    doc = json.loads((FIX / "contest_params_first12.json").read_text())
    return [np.array([[float.fromhex(v) for v in row] for row in cat]) for cat in doc["categories"]]


def _csv_published() -> list[np.ndarray]:
    # parsed independently of params_io: comma-separated float literals, one map per line
    return [np.array([[float(v) for v in line.split(",")] for line in p.read_text().splitlines()])
            for p in sorted(CSV_DIR.glob("*.csv"))]


@pytest.fixture(scope="module")
def searched():
    return {"mkl": search_categories(N), "openblas": search_categories(N, lapack="openblas")}


def test_search_reproduces_the_contest_parameter_file_bit_for_bit(searched):
    published = _contest_published()
    assert len(published) == N
    for i, (mine, pub) in enumerate(zip(searched["mkl"], published)):
        got = mine.to_params13()
        assert got.dtype == np.float64 and got.shape == pub.shape, i
        assert np.array_equal(got, pub), f"category {i}: {got - pub}"


def test_search_reproduces_ofdb_category_search_output_bit_for_bit(searched, tmp_path):
    published = _csv_published()
    assert len(published) == N
    for i, (mine, pub) in enumerate(zip(searched["openblas"], published)):
        assert np.array_equal(mine.to_params13(), pub), i
    # and the files it would write are the published files, byte for byte
    for path in write_ofdb_csv_folder(searched["openblas"], tmp_path):
        assert path.read_bytes() == (CSV_DIR / path.name).read_bytes(), path.name


def test_lapack_flavours_differ_only_in_the_last_bits_of_prob(searched):
    # guards the two tests above from passing for the wrong reason: the fixtures do tell the flavours apart
    for i, (a, b) in enumerate(zip(searched["mkl"], searched["openblas"])):
        pa, pb = a.to_params13(), b.to_params13()
        assert np.array_equal(pa[:, :12], pb[:, :12]), i
        assert np.array_equal(pa[:, 12], pb[:, 12]) == (i not in LAPACK_SENSITIVE), i
        np.testing.assert_allclose(pa[:, 12], pb[:, 12], rtol=1e-13)


def test_screen_and_batching_do_not_change_the_result(searched):
    # every attempt through the published normalise-and-np.var filter instead of the streaming screen
    assert search_categories(5, screen_margin=math.inf) == searched["mkl"][:5]
    assert search_categories(5, batch_size=100) == searched["mkl"][:5]
    systems, attempts = search_categories(2, return_attempts=True)
    assert systems == searched["mkl"][:2] and attempts > 2  # most attempts are rejected
    with pytest.raises(RuntimeError, match="0 of 1 categories after 40 attempts"):
        search_categories(1, variance=0.9, max_attempts=40)  # nothing spans [-1, 1] with variance 0.9


def _digest(points: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(points, dtype="<f8").tobytes()).hexdigest()


def test_point_clouds_match_the_published_code():
    doc = json.loads((FIX / "published_clouds.json").read_text())
    systems = [IFSSystem.from_params13(p) for p in _contest_published()]
    rng = np.random.RandomState(42)  # one stream across categories, as the contest's generate() loop
    for i, ref in enumerate(doc["contest_seed42"]["clouds"]):
        pts = point_cloud(systems[i], rng)
        assert pts.shape == (9999, 3) and [v.hex() for v in pts[0]] == ref["first"], i
        assert _digest(pts) == ref["sha256"], i
    csv_systems = [IFSSystem.from_params13(p) for p in _csv_published()]
    rng = np.random.RandomState(7)
    for i, ref in enumerate(doc["ofdb_instance_seed7"]["clouds"]):
        pts = point_cloud(csv_systems[i], rng, weight=ofdb_recipe.OFDB_INSTANCE_WEIGHT)
        assert _digest(pts) == ref["sha256"], i
    # without the instance weights the cloud is a different one
    assert _digest(point_cloud(csv_systems[0], 7)) != doc["ofdb_instance_seed7"]["clouds"][0]["sha256"]


def _reference_chaos(params13: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The published chaos game, scalar Python floats: first map with u <= running sum, stale point if none."""
    cum, total = [], 0.0
    for p in params13[:, 12].tolist():
        total += p
        cum.append(total)
    x = y = z = 0.0
    out = []
    for u in uniforms[:-1].tolist():
        for k, c in enumerate(cum):
            if u <= c:
                a, b, c_, d, e, f, g, h, i, j, kk, ll = params13[k, :12].tolist()
                nx = x * a + y * b + z * c_ + j
                ny = x * d + y * e + z * f + kk
                nz = x * g + y * h + z * i + ll
                break
        out.append((nx, ny, nz))
        x, y, z = nx, ny, nz
    return np.array(out)


def test_chaos_game_matches_a_scalar_reference_including_unselected_steps():
    rs = np.random.RandomState(3)
    params = np.concatenate([rs.uniform(-1, 1, (3, 12)), [[0.25], [0.25], [0.25]]], axis=1)  # sums to 0.75
    system = IFSSystem.from_params13(params)
    uniforms = np.random.RandomState(11).random_sample(1500)
    uniforms[0] = 0.1  # the published loop crashes if the very first step selects nothing
    uniforms[1:4] = [0.25, 0.5, 0.75]  # exactly on the running sums: u <= sum picks the lower map
    raw = ofdb_recipe._chaos_trajectory([params[:, :12]], ofdb_recipe._select_maps(system.probs, uniforms[:-1])[None])
    ref = _reference_chaos(params, uniforms)
    assert (uniforms[:-1] > 0.75).sum() > 100  # many steps select no map and repeat the point
    assert np.array_equal(raw[:, :, 0], ref)
    uniforms[0] = 0.9
    with pytest.raises(RuntimeError, match="first chaos-game step"):
        ofdb_recipe._chaos_trajectory([params[:, :12]], ofdb_recipe._select_maps(system.probs, uniforms[:-1])[None])


def test_ofdb_csv_folder_reads_the_published_files_and_round_trips(searched, tmp_path):
    assert read_ofdb_csv_folder(CSV_DIR) == searched["openblas"]
    assert read_ofdb_csv_folder(CSV_DIR, limit=3) == searched["openblas"][:3]
    write_ofdb_csv_folder(searched["mkl"], tmp_path)
    (tmp_path / "notes.txt").write_text("not a category")
    assert read_ofdb_csv_folder(tmp_path) == searched["mkl"]
    system = read_ofdb_csv(CSV_DIR / "000007.csv")
    assert system.num_maps == 4 and system.affine.shape == (4, 3, 4) and system.probs.shape == (4,)
    row = _csv_published()[7][1]
    assert np.array_equal(system.affine[1], [[row[0], row[1], row[2], row[9]], [row[3], row[4], row[5], row[10]],
                                             [row[6], row[7], row[8], row[11]]])


GOOD_ROW = ",".join(["1.0e-01"] * 12)


@pytest.mark.parametrize(
    "text, needle",
    [
        (f"{GOOD_ROW},5e-01\n{','.join(['1'] * 12)}\n", "has 12 values, expected 13"),
        (f"{GOOD_ROW},5e-01,1\n{GOOD_ROW},5e-01\n", "has 14 values, expected 13"),
        (f"{GOOD_ROW},5e-01\n{GOOD_ROW.replace('1.0e-01', 'abc', 1)},5e-01\n", "not a number"),
        (f"{GOOD_ROW},5e-01\n{GOOD_ROW.replace('1.0e-01', 'nan', 1)},5e-01\n", "not a finite number"),
        (f"{GOOD_ROW},5e-01\n{GOOD_ROW},inf\n", "not a finite number"),
        (f"{GOOD_ROW},5e-01\n{GOOD_ROW},4e-01\n", "summing to 1"),
        (f"{GOOD_ROW},1.5e+00\n{GOOD_ROW},-5e-01\n", "non-negative"),
        ("\n\n", "empty file"),
    ],
)
def test_malformed_csv_is_refused_with_file_and_fix(tmp_path, text, needle):
    path = tmp_path / "000000.csv"
    path.write_text(text)
    with pytest.raises(ParamsError, match=needle) as info:
        read_ofdb_csv_folder(tmp_path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_csv_folders_are_refused(tmp_path):
    with pytest.raises(ParamsError, match="not a folder"):
        read_ofdb_csv_folder(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ParamsError, match="no .csv files"):
        read_ofdb_csv_folder(tmp_path)
    with pytest.raises(ParamsError, match="no such file"):
        read_ofdb_csv(tmp_path / "000000.csv")


def _contest_dict() -> dict:
    return dict(enumerate(_contest_published()))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_contest_pickle_of_numeric_arrays_is_read(tmp_path, protocol):
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps(_contest_dict(), protocol=protocol))
    got = read_contest_params(path)
    assert [s.to_params13() for s in got] and all(
        np.array_equal(s.to_params13(), p) for s, p in zip(got, _contest_published()))
    assert len(got) == N


@pytest.mark.parametrize("module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_contest_pickle_from_numpy_1_or_2_is_read(tmp_path, module):
    data = pickle.dumps(_contest_dict(), protocol=2)  # protocol 2 names globals as text: easy to rename
    for name in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        data = data.replace(b"c" + name + b"\n", b"c" + module + b"\n")
    assert module in data
    path = tmp_path / "params.pkl"
    path.write_bytes(data)
    assert len(read_contest_params(path)) == N


class _Shell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _Exec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload, forbidden", [(_Shell, "system"), (_Exec, "builtins.exec")])
@pytest.mark.parametrize("nested", [False, True])
def test_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path, payload, forbidden, nested):
    marker = tmp_path / "pwned"
    obj = payload(marker)
    data = pickle.dumps({0: _contest_published()[0], 1: obj} if nested else obj, protocol=4)
    # the payload is live: plain pickle runs it
    pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=forbidden) as info:
        read_contest_params(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_object_arrays_and_wrong_structures_are_refused(tmp_path):
    path = tmp_path / "params.pkl"
    for bad in (np.array([1, "x"], dtype=object), np.ones(13, dtype=np.complex128)):
        path.write_bytes(pickle.dumps({0: bad}))
        with pytest.raises(UnsafePickleError, match="not a plain number type"):
            read_contest_params(path)
    good = _contest_published()[0]
    cases = [
        ([good], "expected a non-empty dict"),
        ({}, "expected a non-empty dict"),
        ({1: good}, "indices must be the integers 0..0"),
        ({"0": good}, "indices must be the integers"),
        ({0: good[:, :12]}, "expected a \\(maps, 13\\) table"),
        ({0: np.where(np.arange(13) == 3, np.nan, good)}, "row 1, column 4 is nan"),
    ]
    for obj, needle in cases:
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(ParamsError, match=needle):
            read_contest_params(path)
    path.write_bytes(pickle.dumps(_contest_dict())[:-40])
    with pytest.raises(ParamsError, match="not a readable numeric pickle"):
        read_contest_params(path)
    with pytest.raises(ParamsError, match="no such file"):
        read_contest_params(tmp_path / "missing.pkl")


def test_batched_point_clouds_equal_one_at_a_time():
    from dr_fdsl.families.ofdb.published import OFDB_INSTANCE_WEIGHT, point_clouds

    systems = search_categories(5, 42)
    rng = np.random.RandomState(3)
    one_by_one = [point_cloud(s, rng, point_num=700, weight=OFDB_INSTANCE_WEIGHT) for s in systems]
    batched = point_clouds(systems, np.random.RandomState(3), point_num=700, weight=OFDB_INSTANCE_WEIGHT, group=2)
    assert batched.shape == (5, 699, 3)
    for a, b in zip(one_by_one, batched):
        assert np.array_equal(a, b)
