"""Formula families: what builds each category's point set.

A family is a module with a :class:`Family` object registered here by name (``bank.family``). It checks its own
settings (``bank.<family>`` section) when the config is loaded and generates the points of every category;
:mod:`dr_fdsl.bank` caches them and the renderer draws them. To add one: write ``families/<name>.py`` with its
settings dataclass in ``dr_fdsl/config.py`` (a ``bank.<name>`` section) and register it in ``FAMILIES``
(``FAMILIES.get(name)`` is the lookup for a config value: an unknown name is a did-you-mean config error).
"""

from __future__ import annotations

from dr_fdsl.families import fractaldb2d, ifs3d, ofdb, onepfrac, svd2d_family, visualatom2d
from dr_fdsl.families.base import Family, FamilyOutput
from dr_fdsl.registry import Registry

FAMILIES: Registry[Family] = Registry("family", "bank.family")
for _family in (ifs3d.FAMILY, ofdb.FAMILY, fractaldb2d.FAMILY, visualatom2d.FAMILY, svd2d_family.FAMILY,
                onepfrac.FAMILY):
    FAMILIES.register(_family.name, _family)

__all__ = ["FAMILIES", "Family", "FamilyOutput"]
