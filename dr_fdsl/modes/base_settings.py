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


TARGET_DATASETS = ("fashion_mnist", "cifar10", "cifar100")  # and folder:PATH (its train/ folder)


def need_target_dataset(name: str, key: str) -> None:
    """A mode's target dataset (``match.dataset``, ``lookahead.dataset``) is one that dr_fdsl.datasets reads."""
    need(name in TARGET_DATASETS or (name.startswith("folder:") and len(name) > len("folder:")), key,
         f"{name!r} is not fashion_mnist, cifar10, cifar100 or folder:PATH")


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
        if cfg.renderer.leak_penalty > 0:
            need(cls.objective_sees_renderer(cfg), "renderer.leak_penalty",
                 f"the renderer pays it through the objective's images, which under renderer.mode={cls.name} do not "
                 "carry the renderer's gradient as it is (frozen: none; adversarial: reversed; match: detached unless "
                 "match.joint); use renderer.mode=joint or match with match.joint=true, or leak_penalty=0")
            from dr_fdsl.objectives import OBJECTIVES  # the objectives' specs (torch-free)

            need(OBJECTIVES.spec(cfg.train.objective).has_probe and cfg.train.probe, "renderer.leak_penalty",
                 f"it is paid for the leakage probe's accuracy, and objective {cfg.train.objective} "
                 f"{'trains no probe' if cfg.train.probe else 'runs without it (train.probe=false)'}; use "
                 "train.objective=classify or classify+mim with train.probe=true, or leak_penalty=0")

    @classmethod
    def objective_sees_renderer(cls, cfg: Config) -> bool:
        """Whether the objective's images carry the renderer's gradient as it is (not reversed, not detached), so
        that a term the objective adds (the leak penalty) reaches the tables with its own sign. False unless a mode
        says so."""
        return False

    @classmethod
    def table_copies(cls) -> int:
        """Float32 copies of each rendering table the run holds: the table, plus, when the tables train, their
        initial values (the base of ``residual`` tables and of the drift logged) and SparseAdam's two moments (for
        the memory check at load)."""
        return 4 if cls.trains_renderer else 1

    @classmethod
    def buffers(cls, cfg: Config) -> list[tuple[str, float, str, str]]:
        """This mode's own device buffers per step, as ``config.batch_sizes`` lists them (none by default)."""
        return []
