"""Mode ``match``: the rendering tables descend a distance to unlabelled target images (``dr_fdsl/match.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from dr_fdsl.match import Matcher, target_digest
from dr_fdsl.modes.base import ObjectiveLoss, RendererMode, Stop
from dr_fdsl.modes.match_settings import MatchSpec

if TYPE_CHECKING:
    from dr_fdsl.config import Config
    from dr_fdsl.engine.step import Batch
    from dr_fdsl.objectives.base import Objective, ObjectiveOutput


class Match(MatchSpec, RendererMode):
    """The step computes ``match.distance`` between the rendered batch and the next target batch *before* the
    objective (its backbone features read the backbone with detached parameters), hands the objective the images
    detached (so the tables' gradient is that of ``match.weight`` x the distance alone) or, with ``match.joint``,
    attached (joint + match), and backpropagates the sum. The distance's features never train the networks. Works
    under every objective; ``match.joint`` not under one whose loss the renderer can trivialise."""

    @classmethod
    def fingerprint(cls, cfg: Config) -> dict:
        exact = {"match": cfg.match}  # the target set, its stream and what the renderer descends
        if cfg.match.dataset.startswith("folder:"):  # a folder's images can change under the same name
            exact["match_images"] = target_digest(cfg)
        return exact

    def __init__(self, cfg: Config, objective: Objective, accelerator) -> None:
        super().__init__(cfg, objective, accelerator)
        # Built before the bank, so that a missing target dataset fails first; it draws on no global generator.
        self.matcher = Matcher(cfg, objective, accelerator)

    def losses(self, batch: Batch, objective_loss: ObjectiveLoss, stop: Stop) -> tuple[ObjectiveOutput, torch.Tensor]:
        match = self.matcher(batch.images)  # before the objective: its features read the backbone, detached
        out = objective_loss(batch.images if self.matcher.joint else batch.images.detach())
        if not torch.isfinite(match.total.detach()).item():
            stop(f"match distance is {match.total.item()}",
                 f" (terms: { {k: v.item() for k, v in match.terms.items()} })", "a lower renderer.lr")
        total = out.total + self.matcher.weight * match.total
        out = out._replace(metrics={**out.metrics, "match/distance": match.total.detach(),
                                    **{f"match/{k}": v for k, v in match.terms.items()}})
        return out, total

    def log_images(self, writer, renders: torch.Tensor, count: int, nrow: int, step: int) -> None:
        """The renders (left) beside as many target images (right)."""
        targets = self.matcher.target_grid(count, nrow=nrow)
        height = max(renders.shape[1], targets.shape[1])
        panels = [F.pad(g, (0, 0, 0, height - g.shape[1]), value=0.5) for g in (renders, targets)]
        spacer = torch.full((3, height, 6), 0.5)
        writer.add_image("match/renders_vs_targets", torch.cat([panels[0], spacer, panels[1]], 2), step)

    def positions(self) -> dict[str, int]:
        return {"match_index": self.matcher.targets.index}

    def restore_positions(self, state: dict) -> None:
        # Checkpoints from before the key: both streams advance once per micro-batch
        self.matcher.targets.index = int(state.get("match_index", state["stream_index"]))
