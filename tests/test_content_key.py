"""Content keys (dr_fdsl/content_key.py): only non-default values under a schema version, so that a new option needs
no metadata; files made before them (recorded in tests/fixtures/legacy_keys by the code of 8af30cf) still open."""

import dataclasses
import hashlib
import json
import os
from dataclasses import replace

import pytest
import torch
from torchvision.io import encode_png

from dr_fdsl import content_key
from dr_fdsl.bank import PointBank, bank_from_config, cache_key, cache_path, legacy_cache_path, load_bank, save_bank
from dr_fdsl.checkpoint import EXACT, REQUIRED, STATE_FILE, fingerprint, legacy_fingerprint, read_state
from dr_fdsl.config import BankConfig, Config, FractalDBConfig, RendererConfig, content_settings
from dr_fdsl.errors import BankCacheError, CheckpointError, ConfigError
from dr_fdsl.static import StaticViews, dataset_settings, image_path, images_key
from tests.conftest import ROOT, tiny

RECORDS = json.loads((ROOT / "tests" / "fixtures" / "legacy_keys" / "records_8af30cf.json").read_text())
DEFAULTS = ROOT / "tests" / "golden" / "content_defaults.json"


def with_new_option(section, value=None):
    """``section`` as an instance of a subclass with one more content field, ``new_option`` (default 0.5): what
    adding an option to the dataclass does, without metadata."""
    cls = dataclasses.make_dataclass(f"{type(section).__name__}Plus",
                                     [("new_option", float, dataclasses.field(default=0.5))], bases=(type(section),))
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    return cls(**values) if value is None else cls(**values, new_option=value)


def test_a_key_holds_only_the_values_that_differ_from_their_defaults():
    assert cache_key(BankConfig()) == {"schema": 2, "values": {}}
    cfg = BankConfig(family="fractaldb", num_points=300, cache_dir="elsewhere",  # cache_dir: NOT_CONTENT
                     fractaldb=FractalDBConfig(rate=0.3), ofdb=replace(BankConfig().ofdb, variance=0.1))  # unused
    assert cache_key(cfg) == {"schema": 2, "values": {"bank.family": "fractaldb", "bank.fractaldb.rate": 0.3,
                                                      "bank.num_points": 300}}
    nested = Config(renderer=replace(RendererConfig(), view=replace(RendererConfig().view, fov=(30.0, 30.0))))
    assert images_key(nested)["values"] == {"renderer.view.fov": [30.0, 30.0]}


def test_a_new_option_at_its_default_changes_no_key(tmp_path):
    """Bank cache key, static dataset key and checkpoint fingerprint stay as they were when a field with a default
    is added, with no metadata; the legacy rule, which reads files made before content keys, stays too (the field
    is not among content_legacy.FIELDS), where the earlier rule without ``ADDED`` would have changed every key."""
    cfg = tiny(tmp_path, tmp_path / "banks", "renderer.mode=joint")
    plus = replace(cfg, bank=with_new_option(cfg.bank), renderer=with_new_option(cfg.renderer))
    assert cache_path(plus.bank) == cache_path(cfg.bank)
    assert images_key(plus) == images_key(cfg)
    assert fingerprint(plus, 1) == fingerprint(cfg, 1)
    assert legacy_fingerprint(plus, 1) == legacy_fingerprint(cfg, 1)
    assert legacy_cache_path(plus.bank) == legacy_cache_path(cfg.bank)
    assert content_settings(plus.renderer) != content_settings(cfg.renderer)  # the ratchet this replaces
    other = replace(cfg, renderer=with_new_option(cfg.renderer, 0.7))
    assert images_key(other)["values"]["renderer.new_option"] == 0.7
    assert fingerprint(other, 1)["exact"]["renderer.new_option"] == 0.7


def test_old_bank_files_are_found_under_their_names_and_open(tmp_path, monkeypatch):
    """A bank made before content keys (its legacy record, no key) is found under its earlier name and read; the
    names are those 8af30cf gave."""
    import dr_fdsl.bank as bank_module

    names = RECORDS["bank_names"]
    assert legacy_cache_path(tiny(tmp_path, "b").bank).name == names["tiny"]
    assert legacy_cache_path(BankConfig(family="fractaldb", num_classes=2, num_points=300)).name == names["fractaldb"]
    on = BankConfig(family="fractaldb", num_classes=2, num_points=300, fractaldb=FractalDBConfig(instances=True))
    assert legacy_cache_path(on).name == names["fractaldb_instances"]

    cfg = BankConfig(num_classes=2, num_points=50, seed=3, cache_dir=str(tmp_path))
    points = torch.rand(2, 50, 3) * 2 - 1
    old = PointBank(points, {"probs": torch.ones(2, 3)}, content_settings(cfg), 7)  # as 8af30cf wrote it
    save_bank(old, legacy_cache_path(cfg))
    assert "key" not in torch.load(legacy_cache_path(cfg), weights_only=True)
    monkeypatch.setattr(bank_module, "_generate", lambda *a, **k: pytest.fail("the old file was not used"))
    read = bank_from_config(cfg)
    assert torch.equal(read.points, points) and read.key is None and read.draws == 7
    with pytest.raises(BankCacheError, match=r"other settings \(bank.seed: file 3, config 4\)"):
        load_bank(legacy_cache_path(cfg), expect=replace(cfg, seed=4))


def test_a_new_bank_file_keeps_its_key_and_names_a_changed_value(tmp_path, monkeypatch):
    import dr_fdsl.bank as bank_module

    cfg = BankConfig(num_classes=2, num_points=50, seed=3, cache_dir=str(tmp_path))
    made = PointBank(torch.zeros(2, 50, 3), {"probs": torch.ones(2, 3)}, content_key.settings(cfg), 1, cache_key(cfg))
    save_bank(made, cache_path(cfg))
    monkeypatch.setattr(bank_module, "_generate", lambda *a, **k: pytest.fail("the file was not used"))
    assert bank_from_config(with_new_option(cfg)).key == cache_key(cfg)
    with pytest.raises(BankCacheError, match=r"other settings \(bank.num_points: file 50, config 60\)"):
        load_bank(cache_path(cfg), expect=replace(cfg, num_points=60))
    with pytest.raises(BankCacheError, match=r"other settings \(bank.new_option: file default, config 0.7\)"):
        load_bank(cache_path(cfg), expect=with_new_option(cfg, 0.7))
    data = torch.load(cache_path(cfg), weights_only=True)
    torch.save({**data, "key": cache_key(replace(cfg, seed=4))}, cache_path(cfg))  # edited: its digest fails
    with pytest.raises(BankCacheError, match="do not match the digest"):
        load_bank(cache_path(cfg), expect=replace(cfg, seed=4))


def _dataset(root, info: dict) -> None:
    """A complete 4-category, 1-view export of black 32 px images with ``info`` as its dataset.json."""
    rows = ["path,category,view_seed,sha256"]
    png = encode_png(torch.zeros(3, 32, 32, dtype=torch.uint8)).numpy().tobytes()
    for c in range(4):
        (root / image_path(c, 0)).parent.mkdir(parents=True)
        (root / image_path(c, 0)).write_bytes(png)
        rows.append(f"{image_path(c, 0)},{c},0,{hashlib.sha256(png).hexdigest()}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps(info))


def test_old_and_new_static_datasets_open_and_a_mismatch_names_the_key(tmp_path):
    cfg = tiny(tmp_path, tmp_path / "banks", *RECORDS["overrides"][0])
    old, new = tmp_path / "old", tmp_path / "new"
    _dataset(old, RECORDS["dataset"])  # dataset.json as 8af30cf wrote it
    _dataset(new, dataset_settings(cfg, 1))
    for root in (old, new):
        assert StaticViews(root).check_matches(cfg) == 1
    assert StaticViews(new).check_matches(replace(cfg, renderer=with_new_option(cfg.renderer))) == 1
    other = tiny(tmp_path, tmp_path / "banks", *RECORDS["overrides"][0], "renderer.radius_init=0.05")
    for root in (old, new):
        with pytest.raises(ConfigError, match=r"other settings than this config \(renderer.radius_init: dataset "
                                              r"0.04, config 0.05\)"):
            StaticViews(root).check_matches(other)


def _checkpoint(folder, fp: dict):
    folder.mkdir()
    (folder / STATE_FILE).write_text(json.dumps({"step": 2, "stream_index": 16, "fingerprint": fp}))
    return folder


@pytest.mark.parametrize("which", [0, 1])
def test_old_checkpoint_fingerprints_still_resume(tmp_path, which):
    """The fingerprints 8af30cf recorded are reproduced exactly by legacy_fingerprint and accepted by read_state
    (no manifest and no random states here: only those are reported); another value is refused by its dotted key.
    The records hold squash tables, the default then: learnable modes now default to residual ones, so the config
    names squash (under the new default the old joint record is refused: test_reliability)."""
    overrides = RECORDS["overrides"][which]
    squash = [f"renderer.{key}=squash" for key in ("color_param", "radius_param")
              if not any(o.startswith(f"renderer.{key}=") for o in overrides)]
    cfg = tiny(tmp_path, tmp_path / "banks", *overrides, *squash)
    saved, processes = RECORDS["fingerprints"][which], which + 1
    assert json.loads(json.dumps(legacy_fingerprint(cfg, processes))) == saved
    folder = _checkpoint(tmp_path / "ckpt", saved)
    state = read_state(folder, cfg, processes, allow_inexact=True)
    assert all(problem.startswith("random_states_") for problem in state["inexact"]), state["inexact"]
    with pytest.raises(CheckpointError, match=r"other settings \(bank.num_classes: checkpoint 4, config 3\)"):
        read_state(folder, replace(cfg, bank=replace(cfg.bank, num_classes=3)), processes, allow_inexact=True)
    state = read_state(folder, replace(cfg, seed=5), processes, allow_inexact=True)
    assert "settings that change the random stream differ (seed: checkpoint 0, config 5)" in state["inexact"]


def test_a_new_checkpoint_keeps_its_fingerprint_and_names_a_changed_value(tmp_path):
    cfg = tiny(tmp_path, tmp_path / "banks", "renderer.mode=joint")
    folder = _checkpoint(tmp_path / "ckpt", fingerprint(cfg, 1))
    plus = replace(cfg, renderer=with_new_option(cfg.renderer))
    assert all(p.startswith("random_states_") for p in read_state(folder, plus, 1, allow_inexact=True)["inexact"])
    state = read_state(folder, replace(cfg, renderer=with_new_option(cfg.renderer, 0.7)), 1, allow_inexact=True)
    assert ("settings that change the random stream differ (renderer.new_option: checkpoint default, config 0.7)"
            in state["inexact"])
    with pytest.raises(CheckpointError, match=r"other settings \(renderer.radius_max: checkpoint default, config "
                                              r"0.08; renderer.radius_min: checkpoint default, config 0.01\)"):
        read_state(folder, replace(cfg, renderer=replace(cfg.renderer, radius_min=0.01, radius_max=0.08)), 1)
    _checkpoint(tmp_path / "later", {**fingerprint(cfg, 1), "schema": 3})
    with pytest.raises(CheckpointError, match="under schema 3, and this version of dr_fdsl reads 2"):
        read_state(tmp_path / "later", cfg, 1)


def content_defaults() -> dict:
    """The default of every config key that a content key or fingerprint can record, every family's included."""
    cfg, out = Config(), {}

    def walk(section, prefix):
        for f in dataclasses.fields(section):
            value, key = getattr(section, f.name), f"{prefix}.{f.name}" if prefix else f.name
            if f.metadata.get("content", True) is False and key not in REQUIRED + EXACT or "content_as" in f.metadata:
                continue  # content_as: recorded as one value whatever is chosen (raster_backend)
            if dataclasses.is_dataclass(value):
                walk(value, key)
            elif key in REQUIRED + EXACT or "." in key and key.split(".")[0] not in ("model", "optim", "train"):
                out[key] = json.loads(json.dumps(value))
    walk(cfg, "")
    return out


def test_content_defaults_do_not_change():
    """A key records only what differs from the default, so a changed default would make files made under the old
    one match the new (and a renamed field would drop out of old keys). New keys are free to appear."""
    if os.environ.get("DR_FDSL_UPDATE_GOLDEN"):
        DEFAULTS.write_text(json.dumps(content_defaults(), indent=1, sort_keys=True) + "\n")
    recorded, now = json.loads(DEFAULTS.read_text()), content_defaults()
    changed = [f"{k}: recorded {v!r}, now {now.get(k, 'missing')!r}" for k, v in recorded.items() if now.get(k) != v]
    assert not changed, ("defaults of content keys changed (give a new option instead, or keep the default): "
                         + "; ".join(changed))


def test_a_raster_backend_changes_no_key():
    """Every backend gives the same fragments bit for bit, so a run, bank or dataset made with one matches the others
    (keys and legacy records hold 'pytorch3d', as files made before 'auto' did)."""
    cfg = Config()
    sort = replace(cfg, renderer=replace(cfg.renderer, raster_backend="sort"))
    assert fingerprint(sort, 1) == fingerprint(cfg, 1)
    assert legacy_fingerprint(sort, 1) == legacy_fingerprint(cfg, 1)
    assert content_key.legacy_settings(sort.renderer, "renderer")["raster_backend"] == "pytorch3d"


def test_an_old_export_made_with_the_sort_backend_still_matches(tmp_path):
    """Before content keys a dataset.json held raster_backend as chosen; a backend changes no pixel, so an export
    made with 'sort' matches a config of any backend (the review found it refused)."""
    from dr_fdsl.static import _settings_differ

    cfg = tiny(tmp_path, tmp_path / "banks")
    sort = replace(cfg, renderer=replace(cfg.renderer, raster_backend="sort"))
    found = {"format": 2, "views": 1, "image_size": cfg.renderer.image_size,
             "bank": content_key.legacy_settings(cfg.bank, "bank"),
             "renderer": {**content_key.legacy_settings(cfg.renderer, "renderer"), "raster_backend": "sort"}}
    assert _settings_differ(found, cfg, 1) == [] and _settings_differ(found, sort, 1) == []
    assert _settings_differ(found, replace(cfg, seed=cfg.seed), 1) == []
    moved = {**found, "renderer": {**found["renderer"], "radius_init": 0.5}}
    assert _settings_differ(moved, cfg, 1) == [f"renderer.radius_init: dataset 0.5, config {cfg.renderer.radius_init}"]


def test_table_parameterisations_are_keyed_as_used():
    """An explicit squash under frozen, or residual under joint, are the tables auto gives there: the same keys. A
    parameterisation auto would not give (squash under joint) is named (found in review)."""
    from dr_fdsl.static import images_key

    cfg = Config()
    for mode, same in (("frozen", "squash"), ("joint", "residual")):
        auto = replace(cfg, renderer=replace(cfg.renderer, mode=mode))
        written = replace(auto, renderer=replace(auto.renderer, color_param=same, radius_param=same))
        assert fingerprint(written, 1) == fingerprint(auto, 1) and images_key(written) == images_key(auto)
    joint = replace(cfg, renderer=replace(cfg.renderer, mode="joint", color_param="squash"))
    assert fingerprint(joint, 1)["required"]["renderer.color_param"] == "squash"
