"""Adding a part touches only its own modules and one registration line each: a toy family, objective and renderer
mode, written in a temporary package outside dr_fdsl, become config sections and choices of a real load_config."""

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

PACKAGE = {
    "family_settings.py": '''
        from dataclasses import dataclass

        from dr_fdsl.families.base import Family
        from dr_fdsl.settings import need


        @dataclass
        class ToySettings:
            size: float = 0.5  # half-side of the cube the points fill


        def validate(cfg):
            need(cfg.toy.size > 0, "bank.toy.size", f"must be positive, got {cfg.toy.size}")


        FAMILY = Family("toy", ToySettings, validate, "toyparts.family_generator")
        ''',
    "family_generator.py": '''
        import torch

        from dr_fdsl.families.base import FamilyOutput


        def generate(cfg, progress=False):
            g = torch.Generator().manual_seed(cfg.seed)
            points = (torch.rand(cfg.num_classes, cfg.num_points, 3, generator=g) * 2 - 1) * cfg.toy.size
            return FamilyOutput(points, {}, cfg.num_classes)
        ''',
    "objective_settings.py": '''
        from dataclasses import dataclass

        from dr_fdsl.objectives.classify_settings import ClassifySpec
        from dr_fdsl.settings import need


        @dataclass
        class ToyObjectiveSettings:
            weight: float = 1.0


        class ToyObjectiveSpec(ClassifySpec):
            name = "toyobj"
            sections = {"toyobj": ToyObjectiveSettings}

            @classmethod
            def validate(cls, cfg):
                super().validate(cfg)
                need(cfg.toyobj.weight > 0, "toyobj.weight", f"must be positive, got {cfg.toyobj.weight}")
        ''',
    "objective.py": '''
        from dr_fdsl.objectives.classify import Classify
        from toyparts.objective_settings import ToyObjectiveSpec


        class ToyObjective(ToyObjectiveSpec, Classify):
            pass
        ''',
    "mode_settings.py": '''
        from dataclasses import dataclass

        from dr_fdsl.modes.joint_settings import JointSpec


        @dataclass
        class ToyModeSettings:
            gain: float = 1.0


        class ToyModeSpec(JointSpec):
            name = "toymode"
            sections = {"toymode": ToyModeSettings}
        ''',
    "__init__.py": '''
        from dr_fdsl.families import FAMILIES
        from dr_fdsl.modes import MODES
        from dr_fdsl.objectives import OBJECTIVES
        from toyparts import family_settings, mode_settings, objective_settings

        FAMILIES.register("toy", family_settings.FAMILY)
        OBJECTIVES.register("toyobj", "toyparts.objective:ToyObjective", spec=objective_settings.ToyObjectiveSpec)
        MODES.register("toymode", "dr_fdsl.modes.joint:Joint", spec=mode_settings.ToyModeSpec)
        ''',
}

CHECK = '''
import sys

import toyparts  # the parts register before the config is composed
from dr_fdsl.config import load_config
from dr_fdsl.errors import ConfigError

cfg = load_config(None, ["bank.family=toy", "bank.toy.size=0.25", "train.objective=toyobj", "toyobj.weight=2",
                         "renderer.mode=toymode", "toymode.gain=3", "bank.num_classes=3", "bank.num_points=50"])
assert (cfg.bank.toy.size, cfg.toyobj.weight, cfg.toymode.gain) == (0.25, 2.0, 3.0)
assert "torch" not in sys.modules  # the parts' settings are read without their code
for bad, key in (["bank.family=toy", "bank.toy.size=-1"], "bank.toy.size"), (["train.objective=toyobj",
                 "toyobj.weight=0"], "toyobj.weight"), (["renderer.mode=toymod"], "renderer.mode"):
    try:
        load_config(None, bad)
    except ConfigError as err:
        assert key in str(err), err
    else:
        raise AssertionError(f"{bad} was accepted")
from dr_fdsl.families import FAMILIES
from dr_fdsl.objectives import OBJECTIVES

bank = FAMILIES.get("toy").generate(cfg.bank)
assert tuple(bank.points.shape) == (3, 50, 3) and float(bank.points.abs().max()) <= 0.25
assert OBJECTIVES.get("toyobj").__name__ == "ToyObjective"
print("ok")
'''


def test_a_toy_family_objective_and_mode_plug_in_with_one_registration_each(tmp_path):
    package = tmp_path / "toyparts"
    package.mkdir()
    for name, text in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(text).lstrip())
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
