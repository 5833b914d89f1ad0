"""Objective ``mim``'s settings (section ``mim``) and checks, read at load (no torch; the networks are in
:mod:`dr_fdsl.objectives.mim`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from dr_fdsl.objectives.base_settings import ObjectiveSpec, refuse_pixel_pipelines
from dr_fdsl.settings import NOT_CONTENT, finite, need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


@dataclass
class MIMConfig:
    """Objective ``mim``: masked-image modelling (Terentiev & Ivanenko's recipe): square pixel patches of side
    ``patch`` are masked with probability ``ratio`` each (drawn from each image's key), a ViT encodes the masked
    image and a linear decoder predicts every pixel; the loss is L1 against the clean image."""

    patch: int = 4  # side of a masked square, pixels (published: 2, 4 or 8; best 4)
    ratio: float = 0.2  # probability that a square is masked (published: 0.2, 0.4, 0.6; best 0.2)
    loss_on: Literal["all", "masked"] = "all"  # published: L1 over all pixels; "masked": over masked ones only
    # classify+mim: loss = classification loss + weight * reconstruction loss (the relative scale of the two
    # gradients; it changes no pixel and no draw of the random stream)
    weight: float = field(default=1.0, metadata=NOT_CONTENT)


def validate_mim(cfg: Config) -> None:
    """The ``mim`` section's checks against the image size (shared by every objective that masks)."""
    m, size = cfg.mim, cfg.renderer.image_size
    need(m.patch >= 1 and size % m.patch == 0, "mim.patch",
         f"must divide renderer.image_size={size} (whole squares), got {m.patch}")
    need(0 < m.ratio < 1, "mim.ratio", f"is a probability of masking a square: must be in (0, 1), got {m.ratio}")
    need(finite(m.weight) and m.weight >= 0, "mim.weight", f"must be a number >= 0, got {m.weight}")


class MIMSpec(ObjectiveSpec):
    name = "mim"
    sections = {"mim": MIMConfig}  # also read by classify+mim
    joint_trap = "descends the reconstruction loss: the renderer could empty the image, which is trivial to reconstruct"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        validate_mim(cfg)
        need(cfg.mim.weight == 1.0, "mim.weight", f"weighs the reconstruction against classification under "
             f"train.objective=classify+mim; mim's loss is the reconstruction alone: remove it (got {cfg.mim.weight})")
        refuse_pixel_pipelines(cfg, cls.name)
        need(cfg.data.repeated_aug == 1, "data.repeated_aug",
             f"objective mim masks each (category, view seed) by its key and applies no image augmentation: "
             f"{cfg.data.repeated_aug} copies would be identical images; set data.repeated_aug=1")
