"""Objective ``classify``'s checks, read at load (no torch; the networks are in :mod:`dr_fdsl.objectives.classify`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.objectives.base_settings import ObjectiveSpec
from dr_fdsl.settings import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


class ClassifySpec(ObjectiveSpec):
    name = "classify"
    has_probe = True

    @classmethod
    def validate(cls, cfg: Config) -> None:
        need(not cfg.image_aug.mixing or cfg.train.batch_size % 2 == 0, "train.batch_size",
             f"Mixup/CutMix pair images within a batch: needs an even batch, got {cfg.train.batch_size} (or set "
             "image_aug.mix_prob=0)")
