"""Formula families: what builds each category's point set.

A family is a package ``families/<name>/``: ``settings.py`` holds its settings dataclass (the config section
``bank.<name>``), its checks and its :class:`Family` entry, and imports no torch (the loader reads it);
``generator.py`` generates the points of every category (imported when a bank is built); ``published.py``, where
there is one, is the exact port of the published code. :mod:`dr_fdsl.bank` caches the points and the renderer
draws them. To add one: write that package and add its entry to ``FAMILIES`` below (``FAMILIES.get(name)`` is the
lookup for a config value: an unknown name is a did-you-mean config error). The section ``bank.<name>`` is composed
from this registry, in its order.
"""

from __future__ import annotations

from dr_fdsl.families.base import Family, FamilyOutput
from dr_fdsl.families.fractaldb import settings as fractaldb
from dr_fdsl.families.ifs3d import settings as ifs3d
from dr_fdsl.families.ofdb import settings as ofdb
from dr_fdsl.families.onepfrac import settings as onepfrac
from dr_fdsl.families.svd2d import settings as svd2d
from dr_fdsl.families.visualatom import settings as visualatom
from dr_fdsl.registry import Registry

FAMILIES: Registry[Family] = Registry("family", "bank.family")
FAMILIES.register("ifs3d", ifs3d.FAMILY)
FAMILIES.register("ofdb", ofdb.FAMILY)
FAMILIES.register("fractaldb", fractaldb.FAMILY)
FAMILIES.register("visualatom", visualatom.FAMILY)
FAMILIES.register("svd2d", svd2d.FAMILY)
FAMILIES.register("onepfrac", onepfrac.FAMILY)

__all__ = ["FAMILIES", "Family", "FamilyOutput"]
