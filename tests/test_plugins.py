"""Adding a part touches only its own modules and one registration line each: a toy family, objective, renderer
mode and point operation, written in a temporary package outside dr_fdsl, become config sections and choices of a
real load_config, and the point operation runs in the renderer's pipeline."""

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
    "op_settings.py": '''
        from dataclasses import dataclass

        from dr_fdsl.settings import finite, need


        @dataclass
        class ToyOpSettings:
            amount: float = 0.0  # shift of every point along x, cloud units (0: the identity)


        def validate(r):
            amount = r.augment.toyop.amount
            need(finite(amount) and abs(amount) <= 1, "renderer.augment.toyop.amount",
                 f"must be in [-1, 1], got {amount}")
        ''',
    "op.py": '''
        from dr_fdsl.render import keyed_random as rnd

        STREAM = 200  # its own random stream (registered in __init__.py)


        def shift_x(points: "Points", ctx: "SceneContext") -> "Points":
            """Every point of an image shifted along x by amount x u, u uniform in [0, 1) per image."""
            amount = ctx.cfg.augment.toyop.amount
            if amount == 0:
                return points
            shift = amount * rnd.uniform(ctx.keys, STREAM, ())
            return points._replace(xyz=points.xyz + shift[:, None, None] * points.xyz.new_tensor([1.0, 0.0, 0.0]))
        ''',
    "__init__.py": '''
        from dr_fdsl.families import FAMILIES
        from dr_fdsl.modes import MODES
        from dr_fdsl.objectives import OBJECTIVES
        from dr_fdsl.render.point_ops_settings import point_op
        from toyparts import family_settings, mode_settings, objective_settings, op_settings

        FAMILIES.register("toy", family_settings.FAMILY)
        OBJECTIVES.register("toyobj", "toyparts.objective:ToyObjective", spec=objective_settings.ToyObjectiveSpec)
        MODES.register("toymode", "dr_fdsl.modes.joint:Joint", spec=mode_settings.ToyModeSpec)
        point_op("toyop", "toyparts.op:shift_x", settings=op_settings.ToyOpSettings, validate=op_settings.validate,
                 streams=(200,), after="jitter")
        ''',
}

CHECK = '''
import sys

import toyparts  # the parts register before the config is composed
from dr_fdsl.config import load_config
from dr_fdsl.errors import ConfigError

cfg = load_config(None, ["bank.family=toy", "bank.toy.size=0.25", "train.objective=toyobj", "toyobj.weight=2",
                         "renderer.mode=toymode", "toymode.gain=3", "bank.num_classes=3", "bank.num_points=50",
                         "renderer.augment.toyop.amount=0.5"])
assert (cfg.bank.toy.size, cfg.toyobj.weight, cfg.toymode.gain, cfg.renderer.augment.toyop.amount) == \
    (0.25, 2.0, 3.0, 0.5)
assert "torch" not in sys.modules  # the parts' settings are read without their code
from dr_fdsl import content_key
from dr_fdsl.render.point_ops_settings import pipeline, point_op

assert content_key.changed(cfg.renderer, "renderer") == {"renderer.augment.toyop.amount": 0.5}
order = pipeline()
assert order.index("toyop") == order.index("jitter") + 1, order
for bad, key in (["bank.family=toy", "bank.toy.size=-1"], "bank.toy.size"), (["train.objective=toyobj",
                 "toyobj.weight=0"], "toyobj.weight"), (["renderer.mode=toymod"], "renderer.mode"), \
        (["renderer.augment.toyop.amount=2"], "renderer.augment.toyop.amount"), \
        (["renderer.augment.toyop.amout=0.1"], "renderer.augment.toyop.amount"):
    try:
        load_config(None, bad)
    except ConfigError as err:
        assert key in str(err), err
    else:
        raise AssertionError(f"{bad} was accepted")
from dr_fdsl.families import FAMILIES
from dr_fdsl.objectives import OBJECTIVES

for stream, taken in ((10, "Stream.JITTER"), (200, "'toyop'")):  # a new operation's streams are its own
    try:
        point_op("toyop2", "toyparts.op:shift_x", streams=(stream,))
    except ValueError as err:
        assert taken in str(err), err
    else:
        raise AssertionError(f"stream {stream} was taken twice")
bank = FAMILIES.get("toy").generate(cfg.bank)
assert tuple(bank.points.shape) == (3, 50, 3) and float(bank.points.abs().max()) <= 0.25
assert OBJECTIVES.get("toyobj").__name__ == "ToyObjective"

# The operation runs in the pipeline: with a fixed orthographic camera, NDC x moves by its shift x ortho_scale.
import dataclasses

import torch

from dr_fdsl.bank import generate_bank
from dr_fdsl.render import PointRenderer
from dr_fdsl.render import keyed_random as rnd

view = dataclasses.replace(cfg.renderer.view, rotation="none", projection="orthographic", ortho_scale=(0.5, 0.5))
points = generate_bank(cfg.bank)
ids, seeds = torch.tensor([0, 2]), torch.tensor([4, 5])
scenes, images = {}, {}
for amount in (0.0, 0.5):
    aug = dataclasses.replace(cfg.renderer.augment, toyop=dataclasses.replace(cfg.renderer.augment.toyop,
                                                                              amount=amount))
    r = PointRenderer(points, dataclasses.replace(cfg.renderer, image_size=16, view=view, augment=aug))
    with torch.no_grad():
        scenes[amount] = r.scene(ids, seeds)[0].points
        images[amount] = r(ids, seeds)
moved = scenes[0.5] - scenes[0.0]
expected = 0.5 * 0.5 * rnd.uniform(rnd.image_keys(ids, seeds), 200, ())  # amount x u x ortho_scale, per image
assert expected.min() > 0.01 and expected.max() - expected.min() > 0.01, expected  # so that the check can fail
assert torch.allclose(moved[..., 0], expected[:, None].expand(-1, 50), atol=1e-6)
assert torch.equal(moved[..., 1:], torch.zeros_like(moved[..., 1:]))
assert not torch.equal(images[0.5], images[0.0])
from dr_fdsl.render import point_ops

# Left out of the pipeline, the renderer at amount 0.5 draws what it draws at 0: the default is the identity.
point_ops.pipeline = lambda: tuple(n for n in order if n != "toyop")
with torch.no_grad():
    assert torch.equal(r.scene(ids, seeds)[0].points, scenes[0.0]) and torch.equal(r(ids, seeds), images[0.0])
# Placed after an operation, a later one runs after those placed there before it; after an unknown one: refused.
point_op("toyop_b", "toyparts.op:shift_x", after="jitter")
point_op("toyop_c", "toyparts.op:shift_x", after="toyop")
at = pipeline().index("jitter")
assert pipeline()[at:at + 5] == ("jitter", "toyop", "toyop_c", "toyop_b", "view"), pipeline()
for late, message in ({"after": "jiter"}, "'jiter', which is not registered"), \
        ({"settings": type(aug.toyop)}, "register it before dr_fdsl.config"):  # its section could not be composed
    try:
        point_op("toyop_d", "toyparts.op:shift_x", **late)
    except ValueError as err:
        assert message in str(err), err
    else:
        raise AssertionError(f"{late} was accepted")
print("ok")
'''


def test_a_toy_family_objective_mode_and_point_operation_plug_in_with_one_registration_each(tmp_path):
    package = tmp_path / "toyparts"
    package.mkdir()
    for name, text in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(text).lstrip())
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
