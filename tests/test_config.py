import re

import pytest

from dr_fdsl.config import Config, load_config, save_config
from dr_fdsl.errors import ConfigError
from tests.conftest import ROOT


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: runs/a\nbank:\n  num_classes: 7\n  ifs3d:\n    min_variance: 0.1\n")
    cfg = load_config(path, ["bank.num_classes=9", "bank.ifs3d.sampler=svd"])
    assert isinstance(cfg, Config)
    assert cfg.output_dir == "runs/a"
    assert cfg.bank.num_classes == 9  # the command line wins over the file
    assert cfg.bank.ifs3d.min_variance == 0.1
    assert cfg.bank.ifs3d.sampler == "svd"
    assert cfg.bank.num_points == 10000  # the dataclass default


def test_every_shipped_config_loads_and_validates():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"quickstart", "ofdb1k_vit_tiny_frozen", "ofdb1k_vit_tiny_joint",
                                       "ofdb1k_vit_tiny_adversarial"}
    for path in paths:
        load_config(path)  # every check of a value runs in load_config


def test_int_widens_to_float_but_not_the_reverse():
    assert load_config(None, ["bank.ifs3d.min_variance=0"]).bank.ifs3d.min_variance == 0.0
    with pytest.raises(ConfigError, match=r"'bank.num_points': expected int, got 1.5"):
        load_config(None, ["bank.num_points=1.5"])


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("bank.num_clases=3", r"unknown config key 'bank.num_clases' \(did you mean 'bank.num_classes'\?\)"),
        ("nope=3", r"unknown config key 'nope'.*valid keys: output_dir, seed, bank"),
        ("bank.num_classes=ten", r"'bank.num_classes': expected int, got 'ten'"),
        ("bank.num_classes=true", r"'bank.num_classes': expected int"),
        ("bank.ifs3d.sampler=gauss", r"'bank.ifs3d.sampler': 'gauss' is not one of 'uniform', 'svd'"),
        ("bank=3", r"section 'bank' must be a mapping"),
        ("bank.num_classes", r"must look like 'section.key=value'"),
        ("seed.x=1", r"'seed': expected int, got \{'x': 1\}"),
        ("model.patch_size=5", r"'model.patch_size': 5 does not divide renderer.image_size=224"),
        ("model.drop_path=1.5", r"'model.drop_path': must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_input_names_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_override_below_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'num_points' is a value, not a section"):
        load_config(None, ["bank.num_points=5", "bank.num_points.x=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nothere.yaml' does not exist"):
        load_config(tmp_path / "nothere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("bank: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("bank:\n  colour: red\n")
    with pytest.raises(ConfigError, match="unknown config key 'bank.colour'"):
        load_config(unknown)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["bank.num_classes=3", "output_dir=runs/x"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg


def test_yes_no_on_off_are_strings_not_booleans(tmp_path):
    cfg = load_config(None, ["train.mixed_precision=no", "train.probe=false", "train.progress=True"])
    assert cfg.train.mixed_precision == "no" and cfg.train.probe is False and cfg.train.progress is True
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="'train.probe': expected bool, got 'yes'"):
        load_config(None, ["train.probe=yes"])


@pytest.mark.parametrize("config, overrides, key", [
    # a renderer that descends sit's or mim's losses can trivialise them, in mode match as in mode joint
    ("sit_tiny.yaml", ["renderer.mode=match", "match.dataset=fashion_mnist", "match.joint=true"], "match.joint"),
    # quarter-turns hidden in other settings make sit's rotation labels ambiguous
    ("sit_tiny.yaml", ["renderer.augment.dihedral=true"], "renderer.augment.dihedral"),
    ("sit_tiny.yaml", ["renderer.view.elevation=[-90,90]"], "renderer.view.elevation"),
    # objectives that do not run image_aug refuse its pixel pipelines instead of ignoring them
    ("sit_tiny.yaml", ["image_aug.randaugment=rand-m9-mstd0.5-inc1"], "image_aug.randaugment"),
    ("quickstart.yaml", ["train.objective=mim", "renderer.mode=frozen", "image_aug.transpose=0.5"],
     "image_aug.transpose"),
    ("quickstart.yaml", ["train.objective=mim", "renderer.mode=frozen", "data.repeated_aug=2"], "data.repeated_aug"),
])
def test_objective_checks_cover_settings_that_would_be_ignored_or_degenerate(config, overrides, key):
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}'")):
        load_config(ROOT / "configs" / config, overrides)
