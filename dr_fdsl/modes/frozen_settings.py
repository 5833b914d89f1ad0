"""Mode ``frozen`` as the config sees it (no torch; the mode is :mod:`dr_fdsl.modes.frozen`)."""

from __future__ import annotations

from dr_fdsl.modes.base_settings import ModeSpec


class FrozenSpec(ModeSpec):
    name = "frozen"
    trains_renderer = False
