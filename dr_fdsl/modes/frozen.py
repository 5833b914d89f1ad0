"""Mode ``frozen``: the rendering tables never change; the images are those of the classic static dataset."""

from __future__ import annotations

from dr_fdsl.config import Config
from dr_fdsl.modes.base import RendererMode
from dr_fdsl.modes.frozen_settings import FrozenSpec


class Frozen(FrozenSpec, RendererMode):
    """No gradient reaches the tables (``PointRenderer`` sets none to require it), so they get no optimiser; the
    objective's loss is the step's. Any objective and either data source works under it."""

    @classmethod
    def fingerprint(cls, cfg: Config) -> dict:
        """A trained run's tables (``renderer.tables``) by their digest: other tables are other images."""
        if not cfg.renderer.tables:
            return {}
        from dr_fdsl.tables import tables_digest  # reads the checkpoint's manifest

        return {"renderer.tables_sha256": tables_digest(cfg.renderer.tables)}
