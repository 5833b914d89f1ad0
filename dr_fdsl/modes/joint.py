"""Mode ``joint``: the rendering tables descend the objective's loss with their own SparseAdam."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.config import need
from dr_fdsl.modes.base import RendererMode, joint_trap

if TYPE_CHECKING:
    from dr_fdsl.config import Config


class Joint(RendererMode):
    """The renderer's gradient is the objective's loss's (the defaults of ``RendererMode``). Refused for an
    objective whose loss the renderer can trivialise (``mim``, ``sit``); under ``classify`` the tables can leak the
    label through colour or size (the leakage probe watches it)."""

    name = "joint"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        trap = joint_trap(cfg)
        need(not trap, "renderer.mode", f"joint rendering {trap}; use frozen or adversarial")

    @classmethod
    def objective_sees_renderer(cls, cfg: Config) -> bool:
        return True
