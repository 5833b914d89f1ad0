"""Renderer modes as strategy objects (dr_fdsl/modes/): the registry, which gradient each mode sends to the
images, its optimiser, and the engine's built objects kept apart from the training state."""

import typing
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dr_fdsl.config import RendererConfig
from dr_fdsl.engine import Batch, build_run, save_checkpoint, train_step
from dr_fdsl.engine.build import Run, TrainState
from dr_fdsl.errors import ConfigError, NonFiniteLossError
from dr_fdsl.match import Distance
from dr_fdsl.modes import MODES
from dr_fdsl.modes.match import Match
from dr_fdsl.objectives.base import ObjectiveOutput
from tests.conftest import tiny

WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 1, 2, 2)  # the toy objective's loss is sum(WEIGHTS * images)


def settings(**renderer):
    return SimpleNamespace(renderer=SimpleNamespace(**{"lr": 0.1, "adversarial_scale": 1.0, "anchor_penalty": 0.0,
                                                       **renderer}))


def image_gradient(mode, stop=None):
    """The gradient that ``mode``'s total sends to a (1, 1, 2, 2) batch of images under the toy objective."""
    images = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    batch = Batch(images, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.zeros(0))

    def objective_loss(x):
        loss = (WEIGHTS * x).sum()
        return ObjectiveOutput(loss, loss, {"train/loss": loss.detach()})

    out, total = mode.losses(batch, objective_loss, stop)
    total.backward()
    return out, images.grad, total


class Accelerator:
    def prepare(self, thing):
        return thing

    def unwrap_model(self, model):
        return model


class Tables(nn.Module):
    def __init__(self):
        super().__init__()
        self.color_logits = nn.Parameter(torch.zeros(2, 3))

    def colors(self):
        return self.color_logits

    def radii(self):
        return self.color_logits[:, 0]


def test_the_registry_holds_every_mode_the_config_accepts():
    assert set(MODES) == set(typing.get_args(typing.get_type_hints(RendererConfig)["mode"]))
    assert all(MODES[name].name == name for name in MODES)


def test_an_unknown_mode_is_refused_with_did_you_mean():
    with pytest.raises(ConfigError, match=r"'renderer.mode': unknown renderer mode 'jiont' \(did you mean "
                                          r"'joint'\?\); valid: adversarial, frozen, joint, lookahead, match"):
        MODES.get("jiont")


@pytest.mark.parametrize("name, sign", [("frozen", 1.0), ("joint", 1.0), ("adversarial", -1.0)])
def test_each_mode_sends_its_gradient_to_the_images(name, sign):
    mode = MODES.get(name)(settings(adversarial_scale=1.5 if name == "adversarial" else 1.0), None, None)
    mode.prepare(Tables(), Accelerator())
    out, grad, _ = image_gradient(mode)
    scale = 1.5 if name == "adversarial" else 1.0
    torch.testing.assert_close(grad, sign * scale * WEIGHTS, rtol=0, atol=0)
    assert set(out.metrics) == {"train/loss"}


def test_frozen_has_no_renderer_optimiser_and_the_others_sparse_adam():
    for name in MODES:
        mode = MODES.get(name).__new__(MODES.get(name))  # match's __init__ reads its target images
        mode.cfg, mode.optimizer = settings(), None
        mode.objective, mode.accelerator = SimpleNamespace(model=nn.Linear(2, 2)), Accelerator()  # teach's teacher
        optimizer = mode.prepare(Tables(), Accelerator())
        if name == "frozen":
            assert optimizer is None and mode.scalars() == {}
        else:
            drift = {"lookahead/color_drift": 0.0, "lookahead/radius_drift": 0.0} if name == "lookahead" else {}
            assert isinstance(optimizer, torch.optim.SparseAdam) and mode.scalars() == {"lr/renderer": 0.1, **drift}


class ToyMatcher:
    """A distance whose gradient with respect to the rendered images is 4 everywhere."""

    weight = 0.25

    def __init__(self, joint, value=4.0):
        self.joint, self.value = joint, value

    def __call__(self, rendered):
        total = self.value * rendered.sum()
        return Distance(total, {"moments": total.detach()})


@pytest.mark.parametrize("joint", [False, True])
def test_match_descends_the_weighted_distance_and_the_loss_only_when_joint(joint):
    mode = Match.__new__(Match)
    mode.cfg, mode.matcher = settings(), ToyMatcher(joint)
    out, grad, _ = image_gradient(mode)
    expected = torch.full_like(WEIGHTS, 0.25 * 4.0) + (WEIGHTS if joint else 0)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    assert {"match/distance", "match/moments"} <= set(out.metrics)


def test_a_non_finite_match_distance_stops_through_the_engine():
    mode = Match.__new__(Match)
    mode.cfg, mode.matcher = settings(), ToyMatcher(False, value=float("nan"))

    def stop(what, detail, remedy):
        raise NonFiniteLossError(f"{what}{detail} / {remedy}")

    with pytest.raises(NonFiniteLossError, match=r"match distance is nan \(terms: .*moments.*\) / a lower renderer"):
        image_gradient(mode, stop)


def test_adversarial_anchor_is_the_initial_tables_and_pulls_back():
    mode = MODES.get("adversarial")(settings(anchor_penalty=0.5), None, None)
    tables = Tables()
    mode.prepare(tables, Accelerator())
    assert torch.equal(mode.anchor[0], tables.color_logits) and mode.anchor[0] is not tables.color_logits
    with torch.no_grad():
        tables.color_logits += 1.0  # the tables have moved one unit from the anchor
    tables.drift = lambda rows, anchors: ((tables.color_logits - anchors[0]) ** 2).mean()  # PointRenderer.drift's
    _, grad, total = image_gradient(mode)
    torch.testing.assert_close(grad, -WEIGHTS, rtol=0, atol=0)  # the penalty reaches the tables, not the images
    assert total.item() == pytest.approx(float((WEIGHTS * 0.5).sum()) + 0.5 * 1.0)
    torch.testing.assert_close(tables.color_logits.grad, torch.full((2, 3), 0.5 * 2 / 6))


def test_the_run_keeps_its_training_state_apart(tmp_path, bank_dir):
    """Everything that changes while training is in ``run.state``; the rest of ``Run`` is what build_run built."""
    assert {f.name for f in Run.__dataclass_fields__.values()} >= {"mode", "state", "renderer_optimizer"}
    assert {f.name for f in TrainState.__dataclass_fields__.values()} == {"run_id", "step", "last_checkpoint",
                                                                         "batches"}
    run = build_run(tiny(tmp_path, bank_dir, "renderer.mode=joint"))
    assert run.mode.name == "joint" and run.renderer_optimizer is run.mode.optimizer is not None
    built = {name: id(getattr(run, name)) for name in Run.__dataclass_fields__ if name != "state"}
    train_step(run)
    train_step(run)
    assert run.state.step == 2 and run.state.batches is None  # rendered in the loop: no loader
    assert {name: id(getattr(run, name)) for name in built} == built
    path = save_checkpoint(run)
    assert run.state.last_checkpoint == path
