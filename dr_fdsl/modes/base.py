"""``RendererMode``: what a renderer mode decides, and the defaults of a mode whose tables train."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, NoReturn

import torch

from dr_fdsl.modes.base_settings import ModeSpec, joint_trap  # noqa: F401  (joint_trap: shared)

if TYPE_CHECKING:
    from dr_fdsl.config import Config
    from dr_fdsl.engine.step import Batch
    from dr_fdsl.objectives.base import Objective, ObjectiveOutput
    from dr_fdsl.render import PointRenderer

# The objective's loss on images (B, 3, H, W): the engine's, which stops the run on a non-finite loss.
ObjectiveLoss = Callable[[torch.Tensor], "ObjectiveOutput"]
# Stops the run on a non-finite value: stop(what, detail, remedy) raises NonFiniteLossError with the message
# "<what> at step <n><detail>; training stopped; <what to resume, with remedy>".
Stop = Callable[[str, str, str], NoReturn]


class RendererMode(ModeSpec):
    """One ``renderer.mode``. The class answers for the config (``validate``, ``fingerprint``, ``buffers``); an
    instance, built by ``build_run`` before the bank (``__init__``) and given the renderer once the objective is
    prepared (``prepare``), answers for the step.

    These defaults are those of a mode whose tables train on the objective's loss, descending it (``joint``).
    """

    eval_names: ClassVar[tuple[str, ...]] = ()  # the columns of this mode's ``evaluate`` (none by default)

    @classmethod
    def fingerprint(cls, cfg: Config) -> dict:
        """Entries of the checkpoint fingerprint's ``exact`` part that this mode adds (none by default): name ->
        a config section (recorded as its content fields that differ from their defaults, under that name) or a
        JSON value."""
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

    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """This mode's per-image values ``(B, len(eval_names))`` float32 on held-out renders ``(B, 3, H, W)`` in
        [0, 1], averaged by the engine beside the objective's (teach: its teacher's top-1). Default: none."""
        return images.new_zeros(len(images), 0)

    def positions(self) -> dict[str, int]:
        """Positions of this mode's own streams, kept in the checkpoint's trainer state. Default: none."""
        return {}

    def restore_positions(self, state: dict) -> None:
        """Restores :meth:`positions` from a checkpoint's trainer state (before :meth:`load_state_tensors`)."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """This mode's own tensors that a checkpoint keeps (``mode.safetensors``; teach: its teacher and replayed
        tables), after :meth:`restore_positions` the shapes a checkpoint's file must have. Default: none."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restores :meth:`state_tensors` from a checkpoint."""
