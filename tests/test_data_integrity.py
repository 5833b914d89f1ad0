"""Bank caches and static exports are checked by content before they are trusted (issue 23).

Bank cache files carry a digest of their settings and tensors; static exports a SHA-256 per PNG in manifest.csv,
checked on every read; re-running the export checks every file already there. Files made before digests still
open, with a warning.
"""

import csv
import re
import shutil

import pytest
import torch
from torchvision.io import decode_png, encode_png

from dr_fdsl.bank import PointBank, build_bank, cache_path
from dr_fdsl.config import BankConfig
from dr_fdsl.engine import build_run, train_step
from dr_fdsl.errors import BankCacheError, ConfigError, DatasetError
from dr_fdsl.static import StaticViews, export, image_path
from tests.conftest import tiny

# ------------------------------------------------------------------------------------------------------------
# Bank caches
# ------------------------------------------------------------------------------------------------------------

BANK = dict(num_classes=4, num_points=300)  # the tiny runs' bank (built once per session), as make_bank.py builds it


@pytest.fixture(scope="module")
def banks(tmp_path_factory, bank_dir, small_bank):
    """A cache folder holding this bank (a copy of the session's), the bank, and another bank of its shape (the
    session's seed-1 bank, cut to 4 categories of 300 points)."""
    folder = tmp_path_factory.mktemp("bank_cache")
    good = build_bank(**BANK, cache_dir=str(bank_dir))
    shutil.copy(cache_path(BankConfig(**BANK, cache_dir=str(bank_dir))), folder)
    other = PointBank(small_bank.points[:4, :300].clone(), {k: v[:4].clone() for k, v in small_bank.params.items()},
                      small_bank.settings, small_bank.draws)
    return folder, good, other


@pytest.fixture
def cache(tmp_path, banks):
    """A copy of the cache folder (to damage), this bank's file in it, and the bank."""
    folder = shutil.copytree(banks[0], tmp_path / "cache")
    return folder, cache_path(BankConfig(**BANK, cache_dir=str(folder))), banks[1], banks[2]


def no_generation(monkeypatch):
    import dr_fdsl.bank as bank

    monkeypatch.setattr(bank, "_generate", lambda *a, **k: pytest.fail("the cache file was not used"))


@pytest.mark.parametrize("damage", ["other_bank_relabelled", "points_edited", "bytes_flipped"])
def test_a_bank_cache_with_these_settings_but_other_points_is_refused(cache, damage):
    folder, path, good, other = cache
    data = torch.load(path, weights_only=True)
    if damage == "other_bank_relabelled":  # another seed's points saved under this bank's settings and name
        data.update(points=other.points, params=other.params, draws=other.draws)
        torch.save(data, path)
    elif damage == "points_edited":
        data["points"][1] = data["points"][1].flip(0)  # the same points, in another order
        torch.save(data, path)
    else:  # one low mantissa bit of one coordinate: torch.load itself reads the file without a word
        raw = bytearray(path.read_bytes())
        raw[raw.index(good.points.numpy().tobytes()[:64]) + 100] ^= 1
        path.write_bytes(raw)
        assert not torch.equal(torch.load(path, weights_only=True)["points"], good.points)
    with pytest.raises(BankCacheError, match=rf"'{re.escape(str(path))}' .*do not match the digest recorded when it "
                                             r"was written.*tools/make_bank.py --config CONFIG --rebuild"):
        build_bank(**BANK, cache_dir=str(folder))


def test_a_bank_cache_written_before_digests_opens_with_one_warning(cache, capsys, monkeypatch):
    folder, path, good, _ = cache
    data = torch.load(path, weights_only=True)
    del data["digest"]  # what save_bank wrote before digests existed
    torch.save(data, path)
    no_generation(monkeypatch)
    capsys.readouterr()
    for _ in range(2):
        assert torch.equal(build_bank(**BANK, cache_dir=str(folder)).points, good.points)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: bank cache '{path}' was written before content digests")
    assert "--rebuild" in err


def test_make_bank_reports_a_mismatch_and_an_unwritable_cache_in_one_line(tmp_path, cache, capsys):
    from tools.make_bank import main

    folder, path, good, _ = cache
    args = ["bank.num_classes=4", "bank.num_points=300", f"bank.cache_dir={folder}"]
    data = torch.load(path, weights_only=True)
    data["points"] = data["points"].flip(1)
    torch.save(data, path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: bank cache '{path}'") and "--rebuild" in err
    (tmp_path / "file").write_text("")
    assert main([*args[:-1], f"bank.cache_dir={tmp_path / 'file' / 'banks'}"]) == 2  # fails before generating
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(rf"error: cannot write bank cache '{re.escape(str(tmp_path))}/file/banks/"
                                             r"bank-v2-.*\.pt' \(Not a directory\); .*bank.cache_dir", err), err
    assert main([*args, "--rebuild"]) == 0 and main(args) == 0  # the fix the message names
    assert torch.equal(torch.load(path, weights_only=True)["points"], good.points)


# ------------------------------------------------------------------------------------------------------------
# Static exports
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bank_dir):
    """A finished 4-category x 2-view export of the tiny config, never changed (tests damage copies of it)."""
    from dr_fdsl.bank import bank_from_config
    from dr_fdsl.render import PointRenderer

    root = tmp_path_factory.mktemp("integrity")
    cfg = tiny(root, bank_dir)
    renderer = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
    export(renderer, cfg, root / "data", 2, progress=False)
    return root / "data", cfg, renderer


@pytest.fixture
def data(tmp_path, exported):
    """A copy of the export, to damage."""
    return shutil.copytree(exported[0], tmp_path / "data")


def rows(folder):
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_rows(folder, table, columns=("path", "category", "view_seed", "sha256")):
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)


def pre_digest(folder):
    """Turns an export into what export() wrote before digests: a manifest without the sha256 column."""
    write_rows(folder, rows(folder), columns=("path", "category", "view_seed"))


def another_valid_png(folder, name):
    """Replaces ``name`` by a valid PNG of the same size that the header check at opening accepts: another
    view's file, or the same image with one pixel changed."""
    if name != image_path(0, 0):
        shutil.copyfile(folder / image_path(0, 0), folder / name)
    else:
        image = decode_png(torch.frombuffer(bytearray((folder / name).read_bytes()), dtype=torch.uint8))
        image[:, 0, 0] = 255 - image[:, 0, 0]
        (folder / name).write_bytes(encode_png(image).numpy().tobytes())


@pytest.mark.parametrize("digests", [True, False], ids=["digests", "pre_digest"])
def test_a_manifest_row_pointing_at_another_png_is_refused_when_opened(data, digests):
    table = rows(data)
    line = next(i for i, row in enumerate(table) if row["path"] == image_path(1, 1))
    table[line]["path"] = image_path(0, 0)  # (category 1, view 1) would read category 0's image
    write_rows(data, table)
    if not digests:
        pre_digest(data)
    with pytest.raises(DatasetError, match=rf"manifest.csv' line {line + 2} is damaged .*category 1, view 1 is the "
                                           r"file '00001/000001.png', not '00000/000000.png'"):
        StaticViews(data)


@pytest.mark.parametrize("name", [image_path(1, 1), image_path(0, 0)], ids=["another_view", "one_pixel"])
def test_a_png_replaced_after_the_export_is_refused_when_read(data, name):
    views = StaticViews(data)  # the header check at opening cannot see it
    another_valid_png(data, name)
    views = StaticViews(data)
    c, v = int(name[:5]), int(name[6:12])
    with pytest.raises(DatasetError, match=rf"'{re.escape(str(data / name))}' does not match the digest manifest.csv "
                                           rf"records for category {c}, view {v} .*re-run tools/render_dataset.py"):
        views[(c, v)]
    assert views[(2, 1)][1:] == (2, 1)  # the others read as before


def test_static_training_refuses_a_replaced_png_in_a_loader_worker(tmp_path, bank_dir, data):
    for c in range(4):  # every image but (0, 0) replaced by (0, 0)'s: any draw of the first batch is refused
        for v in range(2):
            if (c, v) != (0, 0):
                another_valid_png(data, image_path(c, v))
    run = build_run(tiny(tmp_path, bank_dir, "data.source=static", f"data.path={data}", "renderer.mode=frozen",
                         "data.workers=1"))
    with pytest.raises(DatasetError, match=r"^'.*/data/0000\d/00000\d.png' does not match the digest manifest.csv "
                                           r"records for category \d, view \d \(damaged or replaced"):
        train_step(run)


def test_an_export_made_before_digests_opens_with_a_warning(tmp_path, bank_dir, data, capsys):
    pre_digest(data)
    views = StaticViews(data)
    assert views.digests is None and len(views) == 8 and views[(3, 1)][1:] == (3, 1)
    run = build_run(tiny(tmp_path, bank_dir, "data.source=static", f"data.path={data}", "renderer.mode=frozen"))
    out = capsys.readouterr().out
    assert f"warning: static dataset '{data}' was exported before content digests" in out
    assert f"run tools/render_dataset.py again with its config, --out {data} and --views 2" in out
    assert run.static is not None


@pytest.mark.parametrize("state", ["finished", "interrupted", "pre_digest"])
def test_re_export_checks_every_existing_file_and_re_renders_the_damaged_ones(data, exported, state):
    _, cfg, renderer = exported
    before = {(c, v): (data / image_path(c, v)).read_bytes() for c in range(4) for v in range(2)}
    truncated = data / image_path(1, 1)
    truncated.write_bytes(truncated.read_bytes()[:-40])  # its header intact: opening the dataset accepts it
    damaged = [image_path(1, 1)]
    if state == "finished":  # a valid PNG of another view: only the recorded digest can tell
        another_valid_png(data, image_path(2, 0))
        damaged.append(image_path(2, 0))  # (in the export's order: categories, then views)
    elif state == "interrupted":
        (data / "manifest.csv").unlink()
    else:
        pre_digest(data)
    counts = export(renderer, cfg, data, 2, progress=False)
    assert counts["damaged"] == damaged and counts["written"] == len(damaged) and counts["skipped"] == 8 - len(damaged)
    views = StaticViews(data)
    assert views.digests is not None  # a pre-digest export gains its digests
    for (c, v), content in before.items():
        assert (data / image_path(c, v)).read_bytes() == content
        assert views[(c, v)][1:] == (c, v)


def test_the_export_tool_names_the_files_it_re_renders(tmp_path, bank_dir, data, capsys):
    from tools.render_dataset import main

    (data / image_path(3, 0)).write_bytes((data / image_path(3, 0)).read_bytes()[:100])
    args = ["--out", str(data), "--views", "2", "--device", "cpu", f"bank.cache_dir={bank_dir}", "bank.num_classes=4",
            "bank.num_points=300", "renderer.image_size=32", "renderer.points_per_pixel=4", "renderer.radius_init=0.04"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote 1 images" in out and "7 already there and intact" in out
    assert "re-rendered 1 damaged or replaced images: 00003/000000.png" in out


def test_an_interrupted_repair_leaves_an_incomplete_export(data, exported, monkeypatch):
    """While files are rewritten the manifest is gone: a repair that stops half-way never leaves a complete-looking
    export whose digests describe other files."""
    import dr_fdsl.static as static

    _, cfg, renderer = exported
    another_valid_png(data, image_path(2, 1))
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(static, "_write_png", full_disk)
    with pytest.raises(OSError):
        export(renderer, cfg, data, 2, progress=False)
    with pytest.raises(DatasetError, match="incomplete export"):
        StaticViews(data)


def test_views_per_class_is_honoured_or_refused_on_a_static_dataset(tmp_path, bank_dir, data):
    static = ["data.source=static", f"data.path={data}", "renderer.mode=frozen"]
    with pytest.raises(ConfigError, match=rf"'data.views_per_class': 3 view seeds per category, but '{data}' holds 2; "
                                          "lower it"):
        build_run(tiny(tmp_path, bank_dir, *static, "data.views_per_class=3"))
    run = build_run(tiny(tmp_path, bank_dir, *static, "data.views_per_class=1"))  # fewer: seeds 0..V-1, as in-loop
    assert run.order.views == 1 and (run.order.batch(0, 64)[1] == 0).all()
    assert build_run(tiny(tmp_path / "all", bank_dir, *static)).order.views == 2
