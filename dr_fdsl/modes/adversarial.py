"""Mode ``adversarial``: the rendering tables ascend the objective's loss, anchored to their initial values."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dr_fdsl.modes.adversarial_settings import AdversarialSpec
from dr_fdsl.modes.base import ObjectiveLoss, RendererMode, Stop
from dr_fdsl.reversal import GradientReversal

if TYPE_CHECKING:
    from dr_fdsl.engine.step import Batch
    from dr_fdsl.objectives.base import ObjectiveOutput
    from dr_fdsl.render import PointRenderer


class Adversarial(AdversarialSpec, RendererMode):
    """The objective sees the images through a gradient reversal of ``renderer.adversarial_scale``, so the tables
    ascend its loss while its networks descend it; the tables pay ``renderer.anchor_penalty`` x their mean squared
    distance from their initial logits (the anchor, a copy taken before the first step), so the renderer makes
    hard examples within its bounds. Works under every objective."""

    def prepare(self, renderer: PointRenderer, accelerator) -> torch.optim.Optimizer | None:
        self.anchor = tuple(p.detach().clone() for p in renderer.parameters())  # initial colour and radius logits
        return super().prepare(renderer, accelerator)

    def losses(self, batch: Batch, objective_loss: ObjectiveLoss, stop: Stop) -> tuple[ObjectiveOutput, torch.Tensor]:
        r = self.cfg.renderer
        # Between renderer and objective: only the renderer's gradient is reversed. (The first version reversed
        # after the backbone's input normalisation; for an adversarial_scale that is not a power of two the
        # renderer's gradients differ from it in the last bit.)
        out = objective_loss(GradientReversal.apply(batch.images, r.adversarial_scale))
        total = out.total
        if r.anchor_penalty > 0:
            # Only on the rows this batch read: the others do not move (SparseAdam is lazy).
            total = total + r.anchor_penalty * self.renderer.drift(batch.rows, self.anchor)
        return out, total
