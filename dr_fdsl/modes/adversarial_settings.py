"""Mode ``adversarial`` as the config sees it (no torch; the mode is :mod:`dr_fdsl.modes.adversarial`). Its keys
are the renderer's (``renderer.adversarial_scale``, ``renderer.anchor_penalty``), checked with that section."""

from __future__ import annotations

from dr_fdsl.modes.base_settings import ModeSpec


class AdversarialSpec(ModeSpec):
    name = "adversarial"
