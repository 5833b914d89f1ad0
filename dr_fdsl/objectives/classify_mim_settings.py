"""Objective ``classify+mim``'s checks, read at load (no torch; the networks are in
:mod:`dr_fdsl.objectives.classify_mim`). It reads section ``mim``, which objective ``mim`` owns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.objectives.base_settings import ObjectiveSpec
from dr_fdsl.objectives.classify_settings import ClassifySpec
from dr_fdsl.objectives.mim_settings import validate_mim

if TYPE_CHECKING:
    from dr_fdsl.config import Config


class ClassifyMIMSpec(ObjectiveSpec):
    name = "classify+mim"
    has_probe = True  # classify's leakage probe, on the classification head's images

    @classmethod
    def validate(cls, cfg: Config) -> None:
        ClassifySpec.validate(cfg)
        validate_mim(cfg)
