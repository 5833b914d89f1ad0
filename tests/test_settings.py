"""The settings ground floor: the loader knows no section, the parts' sections are composed from the registries, and
loading a config imports neither torch nor timm."""

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from dr_fdsl.config import BankConfig, Config, RendererConfig, load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.families import FAMILIES
from dr_fdsl.modes import MODES
from dr_fdsl.objectives import OBJECTIVES
from dr_fdsl.settings import chosen_by, compose, content_settings
from tests.conftest import ROOT


def test_loading_a_config_imports_neither_torch_nor_timm():
    """Neither for the quickstart nor for any family, objective section or mode (their checks are torch-free)."""
    code = ("import sys; from dr_fdsl.config import load_config; load_config('configs/quickstart.yaml')\n"
            "for family in ('ifs3d', 'ofdb', 'fractaldb', 'visualatom', 'svd2d'):\n"
            "    load_config(None, [f'bank.family={family}', 'bank.num_classes=2', 'bank.num_points=100'])\n"
            "load_config(None, ['train.objective=classify+mim', 'renderer.mode=match', 'match.dataset=cifar10'])\n"
            "heavy = sorted({'torch', 'timm', 'torchvision', 'pytorch3d'} & set(sys.modules))\n"
            "print(heavy); sys.exit(1 if heavy else 0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sections_are_composed_from_the_registries():
    bank = {f.name: f for f in dataclasses.fields(BankConfig)}
    for name, family in FAMILIES.items():
        assert bank[name].type is family.settings and bank[name].metadata == chosen_by("family")
    run = {f.name: f.type for f in dataclasses.fields(Config)}
    for registry in (OBJECTIVES, MODES):
        for spec in registry.specs():
            assert all(run[key] is section for key, section in spec.sections.items())
    assert {"mim", "sit", "match"} <= set(run)
    # Only the chosen family's section is content: another family's settings change no key.
    cfg = Config()
    assert set(content_settings(cfg.bank)) == {"family", "num_classes", "num_points", "seed", "ifs3d"}


def test_a_section_declared_twice_is_refused():
    @dataclass
    class Core:
        mim: int = 0

    @dataclass
    class Section:
        x: int = 1

    with pytest.raises(ValueError, match="section 'mim' of Toy is declared twice"):
        compose("Toy", Core, [("mim", Section)], module=__name__, doc="")
    toy = compose("Toy", Core, [("extra", Section)], module=__name__, doc="a toy")
    assert toy().extra == Section() and toy.__qualname__ == "Toy" and toy.__doc__ == "a toy"


def test_a_part_registered_by_path_is_imported_on_first_use_and_checked_by_its_spec():
    from dr_fdsl.modes.frozen import Frozen
    from dr_fdsl.modes.frozen_settings import FrozenSpec

    assert MODES.spec("frozen") is FrozenSpec and MODES.get("frozen") is Frozen and issubclass(Frozen, FrozenSpec)
    with pytest.raises(ConfigError, match=r"'train.objective': unknown objective 'mmi' \(did you mean 'mim'\?\)"):
        OBJECTIVES.spec("mmi")


@pytest.mark.parametrize("overrides, renderer", [
    (["renderer.augment.drop_local=10"], {"augment": {"drop_local": 10}}),
    (["renderer.objects.max=2"], {"objects": {"max": 2}}),
    (["renderer.augment.map_jitter=[0.8, 1.1]"], {"augment": {"map_jitter": (0.8, 1.1)}}),
])
def test_a_rule_between_renderer_and_bank_says_the_same_at_load_and_in_the_renderer(overrides, renderer):
    """One rule, one message: load_config (before the bank is built) and PointRenderer (a config built in Python)
    run the same check, against the bank's sizes."""
    from dr_fdsl.bank import PointBank
    from dr_fdsl.render import PointRenderer
    from dr_fdsl.settings import from_dict

    with pytest.raises(ConfigError) as at_load:
        load_config(None, ["bank.num_classes=1", "bank.num_points=10", *overrides])
    bank = PointBank(torch.zeros(1, 10, 3), {}, {"family": "ifs3d"}, 0)
    with pytest.raises(ConfigError) as in_renderer:
        PointRenderer(bank, from_dict(RendererConfig, renderer))
    assert str(in_renderer.value) == str(at_load.value)


def test_index_bytes_at_load_are_the_index_dtype_s_widths():
    """svd2d's size estimate at load uses index_bytes (no torch); the bank stores index_dtype's."""
    from dr_fdsl.memory import index_bytes, index_dtype

    for count in (1, 2**8, 2**8 + 1, 2**15, 2**15 + 1, 2**31, 2**31 + 1):
        assert index_bytes(count) == index_dtype(count).itemsize, count


def test_composed_sections_keep_their_fields_comments():
    """--print-config reads each key's comment from its dataclass's source: a composed section (BankConfig,
    AugmentConfig with the point operations' sections) has none of its own, so its base's comments are used."""
    from dr_fdsl.config import AugmentConfig
    from dr_fdsl.config_doc import field_comments

    assert "Gaussian noise" in field_comments(AugmentConfig)["jitter"]
    assert "cached" in field_comments(BankConfig)["cache_dir"]
