"""What the config loader reads of a renderer mode (no torch): :class:`ModeSpec`, and the checks modes share.

A mode ``<name>`` has a torch-free ``modes/<name>_settings.py`` with its spec (a subclass of :class:`ModeSpec`: its
config sections, checks and size estimates) and ``modes/<name>.py``, whose :class:`~dr_fdsl.modes.base.RendererMode`
subclass also subclasses that spec; ``modes/__init__.py`` registers the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from dr_fdsl.settings import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


def joint_trap(cfg: Config) -> str:
    """How the renderer could trivialise ``train.objective``'s loss by descending it (``Objective.joint_trap``;
    "" when it cannot): a mode that makes the tables descend it refuses such an objective."""
    from dr_fdsl.objectives import OBJECTIVES  # a mode's checks ask the objective's spec

    return OBJECTIVES.spec(cfg.train.objective).joint_trap


class ModeSpec:
    """A renderer mode as the config sees it. These defaults are those of a mode whose tables train on the
    objective's loss, descending it (``joint``)."""

    # Sections of the config this mode owns (``{"match": MatchConfig}``), composed into ``Config`` from the registry.
    sections: ClassVar[dict[str, type]] = {}
    name: ClassVar[str]
    trains_renderer: ClassVar[bool] = True  # False: the tables get no gradient and no optimiser

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """This mode's checks against the config and the objective (at load); a ``ConfigError`` names the key."""
        if cfg.data.source == "static":
            need(not cls.trains_renderer, "renderer.mode",
                 f"data.source=static trains on fixed images: it needs renderer.mode=frozen, got {cls.name!r}")

    @classmethod
    def table_copies(cls) -> int:
        """Float32 copies of each rendering table the run holds: the table, plus SparseAdam's two moments when the
        tables train (for the memory check at load)."""
        return 3 if cls.trains_renderer else 1

    @classmethod
    def buffers(cls, cfg: Config) -> list[tuple[str, float, str, str]]:
        """This mode's own device buffers per step, as ``config.batch_sizes`` lists them (none by default)."""
        return []
