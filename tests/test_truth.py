"""What the code says about itself (issue 23, section 7): the det roundings that ``bank.ofdb.lapack`` emulates,
the compositor's documented limits, and the advice and file reading of the parameter and config loaders."""

import os
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from dr_fdsl.config import load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.families.ofdb import published as ofdb_recipe
from dr_fdsl.families.ofdb.params_io import (
    ParamsError,
    UnsafePickleError,
    read_contest_params,
    read_ofdb_csv_folder,
    write_ofdb_csv_folder,
)
from dr_fdsl.families.ofdb.published import IFSSystem
from dr_fdsl.render import Scene, render_scene
from dr_fdsl.render.composite import composite
from dr_fdsl.render.structures import Fragments
from tests.reference_render import pixel_centres

ORDERS = ("mkl", "openblas", "openblas_fma")
FIX = Path(__file__).parent / "fixtures" / "ofdb"


@pytest.fixture(scope="module")
def maps():
    """4,000 matrices drawn as the published search draws its maps (``uniform(-1, 1)`` coefficients)."""
    return np.random.RandomState(5).uniform(-1.0, 1.0, (4000, 3, 3))


def test_fma_is_rounded_once():
    # (1 + u)(1 - u) - 1 = -u^2 exactly: a fused multiply-add keeps it, a separate multiply rounds it to 0
    u = 2.0 ** -52
    assert (1 + u) * (1 - u) - 1 == 0.0
    assert ofdb_recipe._fma(1 + u, 1 - u, -1.0) == -(u * u)
    assert ofdb_recipe._fma(0.1, 0.2, 0.3) == float(Fraction(0.1) * Fraction(0.2) + Fraction(0.3))


def test_the_three_det_orders_differ_and_this_numpy_rounds_as_one_of_them(maps):
    """The docs' claim: numpy's ``det`` (any LAPACK/OpenBLAS kernel the project's machines run) rounds the
    last pivot in one of the three emulated orders, and which one depends on the build and CPU kernel."""
    dets = {order: ofdb_recipe._abs_dets(maps, order) for order in ORDERS}
    for i, a in enumerate(ORDERS):  # each order is told apart from the others on these maps
        for b in ORDERS[i + 1:]:
            assert (dets[a] != dets[b]).sum() > 100, (a, b)
        np.testing.assert_allclose(dets[a], dets["mkl"], rtol=1e-12)  # only last bits differ
    mine = np.abs(np.linalg.det(maps))
    matches = [order for order in ORDERS if np.array_equal(dets[order], mine)]
    assert len(matches) == 1, {order: int((dets[order] != mine).sum()) for order in ORDERS}


def test_only_the_measured_orders_are_config_choices():
    assert load_config(None, ["bank.family=ofdb", "bank.ofdb.lapack=openblas"]).bank.ofdb.lapack == "openblas"
    with pytest.raises(ConfigError, match="bank.ofdb.lapack"):  # derived from source, never run: not offered
        load_config(None, ["bank.family=ofdb", "bank.ofdb.lapack=openblas_fma"])


# --- the compositor's documented limits -------------------------------------------------------------------------

def _one_fragment(weight: float):
    """One pixel, one white fragment of ``weight`` (K=1) over a black background."""
    fragments = Fragments(idx=torch.zeros(1, 1, 1, 1, dtype=torch.long), zbuf=torch.ones(1, 1, 1, 1),
                          dists=torch.zeros(1, 1, 1, 1))
    weights = torch.full((1, 1, 1, 1), weight)
    return fragments, weights, torch.ones(1, 1, 3), torch.zeros(1, 3, 1, 1)


def test_norm_weighted_floors_the_weight_sum_at_1e_4():
    # below the floor: (1 - T) * w * c / 1e-4 = 5e-5 * 0.5, not the formula's (1 - T) * c = 5e-5
    image = composite(*_one_fragment(5e-5), compositor="norm_weighted")
    torch.testing.assert_close(image, torch.full((1, 3, 1, 1), 2.5e-5), rtol=1e-2, atol=0)  # float32 1 - T
    # above it the formula holds exactly as written, and alpha compositing has no floor at all
    torch.testing.assert_close(composite(*_one_fragment(2e-4), compositor="norm_weighted"),
                               torch.full((1, 3, 1, 1), 2e-4), rtol=1e-2, atol=0)
    torch.testing.assert_close(composite(*_one_fragment(5e-5), compositor="alpha"),
                               torch.full((1, 3, 1, 1), 5e-5), rtol=1e-2, atol=0)


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
def test_image_jumps_in_the_radius_where_k_binds(compositor):
    """A white far point covers a pixel; a nearer white point at distance d grows over it. With K=1 it evicts the
    far point on entering with weight ~0, and the pixel drops from white to the black background at r = d."""
    size, row, col, d = 16, 8, 8, 0.2
    xs, ys = pixel_centres(size)
    x, y = float(xs[row * size + col]), float(ys[row * size + col])
    points = torch.tensor([[[x, y, 2.0], [x + d, y, 1.0]]])  # far point on the pixel centre, near one at d

    def pixel(radius: float, k: int) -> float:
        scene = Scene(points, torch.ones(1, 2, 3), torch.tensor([[0.3, radius]]), torch.zeros(1, 3, 1, 1))
        return float(render_scene(scene, size, k, compositor)[0, 0, row, col])

    outside, inside = d * (1 - 1e-3), d * (1 + 1e-3)
    assert pixel(outside, 1) > 0.99  # the far point alone
    assert pixel(inside, 1) < 0.01  # evicted: only the near point's weight ~2e-3 is left
    # with a free slot the same change of radius changes the pixel by about the entering weight only
    assert abs(pixel(inside, 2) - pixel(outside, 2)) < 0.01


# --- parameter files: the advice names a format that is read ----------------------------------------------------

def _systems() -> list[IFSSystem]:
    return read_ofdb_csv_folder(FIX / "category_search_seed42", limit=2)  # OFDB's own output (fixture README)


def test_pickle_refusal_advises_a_csv_folder_and_that_advice_works(tmp_path):
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps({0: os.system}))  # a global outside the allow-list; never called
    with pytest.raises(UnsafePickleError) as info:
        read_contest_params(path)
    message = str(info.value)
    assert ".npy" not in message and "folder of 3D-OFDB CSVs" in message and "bank.ofdb.source" in message
    # following it: the CSV folder is read back exactly, and a config naming it validates
    systems = _systems()
    folder = tmp_path / "csv"
    write_ofdb_csv_folder(systems, folder)
    assert read_ofdb_csv_folder(folder) == systems
    load_config(None, ["bank.family=ofdb", f"bank.ofdb.source={folder}", "bank.num_classes=2"])


def test_npy_file_is_refused_naming_the_format_that_is_read(tmp_path):
    path = tmp_path / "params.npy"
    np.save(path, np.stack([s.to_params13() for s in _systems()]))
    with pytest.raises(ParamsError, match=r"params\.npy: is a \.npy array file.*folder of 3D-OFDB CSVs"):
        read_contest_params(path)
    with pytest.raises(ParamsError, match="is a folder, not a pickle"):
        read_contest_params(tmp_path)


# --- config files: read as UTF-8 whatever the locale, one line otherwise -----------------------------------------

def test_config_file_that_is_not_utf8_is_one_line_naming_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("bank:\n  num_classes: 7\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"config file '{path}' is not UTF-8 text: byte 0xe9 on line 3 cannot be decoded; "
                               "save the file as UTF-8")  # the file named once, one line
    # UTF-8, with or without a byte-order mark, is read whatever the locale says
    path.write_bytes("bank:\n  num_classes: 7\n# caf\u00e9\n".encode("utf-8"))
    assert load_config(path).bank.num_classes == 7
    path.write_bytes("bank:\n  num_classes: 7\n".encode("utf-8-sig"))
    assert load_config(path).bank.num_classes == 7


def test_config_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path)


def test_config_include_that_is_not_utf8_names_the_included_file(tmp_path):
    (tmp_path / "base.yaml").write_bytes(b"bank:\n  num_classes: \xff\n")
    (tmp_path / "run.yaml").write_text("include: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml' is not UTF-8 text: byte 0xff on line 2"):
        load_config(tmp_path / "run.yaml")


def test_truncated_config_file_is_one_line_with_the_place(tmp_path):
    path = tmp_path / "cut.yaml"
    path.write_text("bank:\n  num_classes: 4\nrenderer:\n  augment:\n    subsample: [0.6, ")  # cut mid-list
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and f"config file '{path}' is not valid YAML" in message
    assert "line 5, column 22" in message


# --- tools/preview.py: every bad input one `error:` line, exit 2 ---------------------------------------------------

@pytest.fixture(scope="module")
def preview_args(tmp_path_factory):
    cache = tmp_path_factory.mktemp("preview_banks")
    # the published CSVs as the bank: no search, two chaos games of 100 points
    return ["bank.family=ofdb", f"bank.ofdb.source={FIX / 'category_search_seed42'}", "bank.num_classes=2",
            "bank.num_points=100", "renderer.image_size=16", f"bank.cache_dir={cache}"]


def _preview(capsys, *argv):
    from tools.preview import main

    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip().splitlines()


def test_preview_writes_a_png_and_refuses_bad_outs_in_one_line(tmp_path, capsys, preview_args):
    rc, err = _preview(capsys, "--out", str(tmp_path / "sub" / "p.png"), "--classes", "2", "--views", "2",
                       *preview_args)
    assert rc == 0 and (tmp_path / "sub" / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", err
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, needle in [(afile / "p.png", f"'{afile}' is a file, not a folder"),  # mkdir would say 'File exists'
                        (tmp_path / "p", "must name a .png file"),  # PIL would raise ValueError
                        (tmp_path / "dir.png", "is a folder")]:
        if out.name == "dir.png":
            out.mkdir()
        rc, err = _preview(capsys, "--out", str(out), "--classes", "1", "--views", "1", *preview_args)
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_preview_bad_config_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"bank:\n  num_classes: 2 # \xe9\n")
    rc, err = _preview(capsys, "--config", str(path), "--out", str(tmp_path / "p.png"))
    assert rc == 2 and err == [f"error: config file '{path}' is not UTF-8 text: byte 0xe9 on line 2 cannot be "
                               "decoded; save the file as UTF-8"]


def test_preview_write_that_fails_is_one_line_naming_out(tmp_path, capsys, preview_args):
    """A real failed write: a file-size limit (RLIMIT_FSIZE) of 16 bytes makes the PNG write raise EFBIG."""
    import resource
    import signal

    from dr_fdsl.bank import bank_from_config

    bank_from_config(load_config(None, preview_args).bank)  # the bank's cache file is written before the limit
    out = tmp_path / "big.png"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    from tools.preview import main

    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
        rc = main(["--out", str(out), "--classes", "1", "--views", "1", *preview_args])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: cannot write '{out}' (File too large)"), err


# --- tools/fractaldb_patch_iou.py: refused before measuring, never a traceback ------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--rows", "99"], "--rows must name one or more weight rows in 0..24, got [99]"),  # was IndexError
    (["--rows"], "--rows must name one or more weight rows"),  # was StatisticsError (mean of nothing)
    (["--categories", "99"], "--categories must be 1..5"),  # was silently 5
])
def test_patch_iou_bad_options_are_usage_errors(argv, needle, capsys):
    from tools.fractaldb_patch_iou import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv, key", [(["--canvas", "0"], "bank.fractaldb.canvas"),
                                       (["--points", "-5"], "bank.num_points")])
def test_patch_iou_sizes_the_bank_refuses_are_one_line(argv, key, capsys):
    from tools.fractaldb_patch_iou import main

    assert main(argv + ["--categories", "1", "--rows", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --canvas ") and key in err[0], err


# --- tools/bench*.py: bad arguments refused before anything is timed; a failed --json write is one line -------------

@pytest.mark.parametrize("tool, argv, needle", [
    ("bench", ["--steps", "0"], "--steps must be >= 1, got 0"),  # was IndexError after building two runs
    ("bench", ["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    ("bench", ["--json", "{afile}/b.json"], "has no folder"),  # was NotADirectoryError after the whole benchmark
    ("bench_bank", ["--classes", "0"], "--classes must be >= 1, got 0"),  # was a ConfigError traceback
    ("bench_bank", ["--json", "{tmp}"], "is a folder"),
    ("bench_render", ["--batch", "0"], "--batch must be >= 1, got 0"),
    ("bench_render", ["--device", "bogus"], "--device 'bogus' is not a torch device"),
    ("bench_image_aug", ["--repeats", "1"], "--repeats must be >= 2"),  # was StatisticsError
    ("bench_image_aug", ["--device", "bogus"], "--device 'bogus' is not a torch device"),  # was RuntimeError
    ("bench_teach", ["--rounds", "0"], "--rounds must be >= 1, got 0"),
])
def test_bench_arguments_are_usage_errors(tool, argv, needle, tmp_path, monkeypatch, capsys):
    import importlib

    (tmp_path / "afile").write_text("x")
    argv = [a.format(afile=tmp_path / "afile", tmp=tmp_path) for a in argv]
    monkeypatch.setattr("sys.argv", [f"{tool}.py", *argv])
    with pytest.raises(SystemExit) as info:
        importlib.import_module(f"tools.{tool}").main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and needle in err and "Traceback" not in err, err


def test_bench_json_write_that_fails_is_one_line(tmp_path, capsys):
    """A real failed write: RLIMIT_FSIZE of 2 bytes makes the JSON write raise EFBIG."""
    import resource
    import signal

    from dr_fdsl.timing import save_json

    path = tmp_path / "b.json"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2, hard))
        rc = save_json(str(path), {"seconds": 1.0})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: cannot write --json '{path}' (File too large); the figures above are not "
                               "saved"]
    assert save_json(str(path), {"seconds": 1.0}) == 0 and '"seconds": 1.0' in path.read_text()
