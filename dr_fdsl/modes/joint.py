"""Mode ``joint``: the rendering tables descend the objective's loss with their own SparseAdam."""

from __future__ import annotations

from dr_fdsl.modes.base import RendererMode
from dr_fdsl.modes.joint_settings import JointSpec


class Joint(JointSpec, RendererMode):
    """The renderer's gradient is the objective's loss's (the defaults of ``RendererMode``). Refused for an
    objective whose loss the renderer can trivialise (``mim``, ``sit``); under ``classify`` the tables can leak the
    label through colour or size (the leakage probe watches it)."""
