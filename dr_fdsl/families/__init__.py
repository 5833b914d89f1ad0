"""Formula families: what builds each category's point set.

A family is a module with a :class:`Family` object registered here by name (``bank.family``). It checks its own
settings (``bank.<family>`` section) when the config is loaded and generates the points of every category;
:mod:`dr_fdsl.bank` caches them and the renderer draws them. To add one: write ``families/<name>.py`` with its
settings dataclass in ``dr_fdsl/config.py`` (a ``bank.<name>`` section) and add it to ``FAMILIES``.
"""

from __future__ import annotations

from dr_fdsl.errors import ConfigError
from dr_fdsl.families import fractaldb2d, ifs3d, ofdb, svd2d_family, visualatom2d
from dr_fdsl.families.base import Family, FamilyOutput

FAMILIES: dict[str, Family] = {f.name: f for f in (ifs3d.FAMILY, ofdb.FAMILY, fractaldb2d.FAMILY, visualatom2d.FAMILY,
                                                  svd2d_family.FAMILY)}

__all__ = ["FAMILIES", "Family", "FamilyOutput", "get_family"]


def get_family(name: str) -> Family:
    """The family registered as ``name``; an unknown name is a config error listing the valid ones."""
    if name not in FAMILIES:
        raise ConfigError(f"config key 'bank.family': unknown family {name!r}; valid: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
