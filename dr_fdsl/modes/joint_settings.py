"""Mode ``joint``'s checks, read at load (no torch; the mode is :mod:`dr_fdsl.modes.joint`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.modes.base_settings import ModeSpec, joint_trap
from dr_fdsl.settings import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


class JointSpec(ModeSpec):
    name = "joint"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        trap = joint_trap(cfg)
        need(not trap, "renderer.mode", f"joint rendering {trap}; use frozen or adversarial")

    @classmethod
    def objective_sees_renderer(cls, cfg: Config) -> bool:
        return True
