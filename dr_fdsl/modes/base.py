"""``RendererMode``: what a renderer mode decides, and the defaults of a mode whose tables train."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, NoReturn

import torch

from dr_fdsl.config import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config
    from dr_fdsl.engine.step import Batch
    from dr_fdsl.objectives import Objective, ObjectiveOutput
    from dr_fdsl.render import PointRenderer

# The objective's loss on images (B, 3, H, W): the engine's, which stops the run on a non-finite loss.
ObjectiveLoss = Callable[[torch.Tensor], "ObjectiveOutput"]
# Stops the run on a non-finite value: stop(what, detail, remedy) raises NonFiniteLossError with the message
# "<what> at step <n><detail>; training stopped; <what to resume, with remedy>".
Stop = Callable[[str, str, str], NoReturn]


def joint_trap(cfg: Config) -> str:
    """How the renderer could trivialise ``train.objective``'s loss by descending it (``Objective.joint_trap``;
    "" when it cannot): a mode that makes the tables descend it refuses such an objective."""
    from dr_fdsl.objectives import OBJECTIVES  # objectives import the config module, whose checks ask the modes

    return OBJECTIVES.get(cfg.train.objective).joint_trap


class RendererMode:
    """One ``renderer.mode``. The class answers for the config (``validate``, ``fingerprint``, ``buffers``); an
    instance, built by ``build_run`` before the bank (``__init__``) and given the renderer once the objective is
    prepared (``prepare``), answers for the step.

    These defaults are those of a mode whose tables train on the objective's loss, descending it (``joint``).
    """

    name: ClassVar[str]
    trains_renderer: ClassVar[bool] = True  # False: the tables get no gradient and no optimiser

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """This mode's checks against the config and the objective (at load); a ``ConfigError`` names the key."""
        if cfg.data.source == "static":
            need(not cls.trains_renderer, "renderer.mode",
                 f"data.source=static trains on fixed images: it needs renderer.mode=frozen, got {cls.name!r}")
        if cfg.renderer.leak_penalty > 0:
            need(cls.objective_sees_renderer(cfg), "renderer.leak_penalty",
                 f"the renderer pays it through the objective's images, which under renderer.mode={cls.name} do not "
                 "carry the renderer's gradient as it is (frozen: none; adversarial: reversed; match: detached unless "
                 "match.joint); use renderer.mode=joint or match with match.joint=true, or leak_penalty=0")
            from dr_fdsl.objectives import OBJECTIVES  # objectives import the config module, which asks the modes

            need(OBJECTIVES.get(cfg.train.objective).has_probe and cfg.train.probe, "renderer.leak_penalty",
                 f"it is paid for the leakage probe's accuracy, and objective {cfg.train.objective} "
                 f"{'trains no probe' if cfg.train.probe else 'runs without it (train.probe=false)'}; use "
                 "train.objective=classify or classify+mim with train.probe=true, or leak_penalty=0")

    @classmethod
    def objective_sees_renderer(cls, cfg: Config) -> bool:
        """Whether the objective's images carry the renderer's gradient as it is (not reversed, not detached), so
        that a term the objective adds (the leak penalty) reaches the tables with its own sign. False unless a mode
        says so."""
        return False

    @classmethod
    def table_copies(cls) -> int:
        """Float32 copies of each rendering table the run holds: the table, plus, when the tables train, their
        initial values (the base of ``residual`` tables and of the drift logged) and SparseAdam's two moments (for
        the memory check at load)."""
        return 4 if cls.trains_renderer else 1

    @classmethod
    def buffers(cls, cfg: Config) -> list[tuple[str, float, str, str]]:
        """This mode's own device buffers per step, as ``config.batch_sizes`` lists them (none by default)."""
        return []

    @classmethod
    def fingerprint(cls, cfg: Config) -> dict:
        """Entries of the checkpoint fingerprint's ``exact`` part that this mode adds (none by default)."""
        return {}

    def __init__(self, cfg: Config, objective: Objective, accelerator) -> None:
        self.cfg = cfg
        self.renderer: PointRenderer | None = None
        self.optimizer: torch.optim.Optimizer | None = None  # SparseAdam on the tables, prepared; None when frozen

    def prepare(self, renderer: PointRenderer, accelerator) -> torch.optim.Optimizer | None:
        """Takes the renderer (after the objective's networks are prepared, so that Accelerate numbers the
        optimisers objective first) and returns the tables' optimiser, prepared, or None when they do not train."""
        self.renderer = renderer
        if self.trains_renderer:
            self.optimizer = accelerator.prepare(torch.optim.SparseAdam(renderer.parameters(),
                                                                        lr=self.cfg.renderer.lr))
        return self.optimizer

    def losses(self, batch: Batch, objective_loss: ObjectiveLoss, stop: Stop) -> tuple[ObjectiveOutput, torch.Tensor]:
        """The objective's output on ``batch`` (with this mode's metrics) and the scalar to backpropagate: its
        gradient with respect to ``batch.images`` is what reaches the tables. Default: the objective's loss."""
        out = objective_loss(batch.images)
        return out, out.total

    def scalars(self) -> dict[str, float]:
        """What this mode logs at a log step, beside the step's metrics."""
        if self.optimizer is None:
            return {}
        return {"lr/renderer": self.optimizer.param_groups[0]["lr"]}

    def log_images(self, writer, renders: torch.Tensor, count: int, nrow: int, step: int) -> None:
        """TensorBoard images of this mode (main process): ``renders`` is the held-out grid ``(3, H', W')`` of
        ``count`` images, ``nrow`` a row. Default: none."""

    def positions(self) -> dict[str, int]:
        """Positions of this mode's own streams, kept in the checkpoint's trainer state. Default: none."""
        return {}

    def restore_positions(self, state: dict) -> None:
        """Restores :meth:`positions` from a checkpoint's trainer state."""
