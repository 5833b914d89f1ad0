"""Objective ``multilabel``'s checks, read at load (no torch; the networks are in
:mod:`dr_fdsl.objectives.multilabel`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.objectives.base_settings import ObjectiveSpec
from dr_fdsl.settings import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


class MultiLabelSpec(ObjectiveSpec):
    name = "multilabel"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        a = cfg.image_aug
        need(not a.mixing, "image_aug.mixup",
             f"objective multilabel names every object of an image: Mixup/CutMix (mixup={a.mixup}, cutmix={a.cutmix}, "
             f"mix_prob={a.mix_prob}) would blend another image's objects in without their labels; set "
             "image_aug.mixup=0 image_aug.cutmix=0 (or image_aug.mix_prob=0)")
        need(a.label_smoothing == 0, "image_aug.label_smoothing",
             f"objective multilabel uses binary targets (published); set image_aug.label_smoothing=0, got "
             f"{a.label_smoothing}")
