"""Pre-training objectives: what a step computes from rendered images and their categories.

Registered by name (``train.objective``). To add one: write ``objectives/<name>.py`` with an
:class:`~dr_fdsl.objectives.base.Objective` subclass and add it to ``OBJECTIVES``.
"""

from __future__ import annotations

from dr_fdsl.errors import ConfigError
from dr_fdsl.objectives.base import Objective, ObjectiveOutput
from dr_fdsl.objectives.classify import Classify
from dr_fdsl.objectives.mim import MaskedImageModelling
from dr_fdsl.objectives.sit import SiT

OBJECTIVES: dict[str, type[Objective]] = {o.name: o for o in (Classify, MaskedImageModelling, SiT)}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "get_objective"]


def get_objective(name: str) -> type[Objective]:
    """The objective registered as ``name``; an unknown name is a config error listing the valid ones."""
    if name not in OBJECTIVES:
        raise ConfigError(f"config key 'train.objective': unknown objective {name!r}; valid: "
                          f"{', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]
