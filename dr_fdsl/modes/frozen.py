"""Mode ``frozen``: the rendering tables never change; the images are those of the classic static dataset."""

from __future__ import annotations

from dr_fdsl.modes.base import RendererMode
from dr_fdsl.modes.frozen_settings import FrozenSpec


class Frozen(FrozenSpec, RendererMode):
    """No gradient reaches the tables (``PointRenderer`` sets none to require it), so they get no optimiser; the
    objective's loss is the step's. Any objective and either data source works under it."""
