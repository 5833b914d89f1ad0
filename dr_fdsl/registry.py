"""One registry type for every kind of part chosen by name in a config (the shape of timm's ``@register_model``).

A :class:`Registry` maps names to parts (a family, an objective class, a rasteriser, a renderer mode, ...). It is a
read-only ``Mapping`` (``name in FAMILIES``, ``FAMILIES[name]``, ``sorted(FAMILIES)`` work as on a dict) with
:meth:`Registry.register` to add a part, usable as a decorator, and :meth:`Registry.get` to look one up for a
config key: an unknown name is a :class:`~dr_fdsl.errors.ConfigError` naming the key, the valid names and the
closest one. The module imports nothing heavy: the config loader may use it.

A part whose module imports torch is registered by its path (``"dr_fdsl.objectives.mim:MaskedImageModelling"``),
imported on first use, with a torch-free ``spec`` beside it: what the config loader reads (its settings sections
and checks; :meth:`Registry.spec`). A part registered as an object is its own spec.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from dr_fdsl.errors import ConfigError

T = TypeVar("T")


def resolve(path: str):
    """The object a ``"package.module:attribute"`` path names, its module imported (how every part registered by
    its path is loaded on first use: registries, ``Family.drawer``, a point operation's function)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Registry(Mapping[str, T], Generic[T]):
    """Parts of one kind by name.

    Args:
        kind: what a part is, for messages ("family", "objective").
        key: the config key that chooses one ("bank.family", "train.objective").
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        self._parts: dict[str, T | str] = {}
        self._specs: dict[str, object] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, part: T | str, spec: object = None) -> T | str: ...

    def register(self, name, part=None, spec=None):
        """Adds ``part`` as ``name`` and returns it; without ``part``, a decorator that does so. ``part`` may be a
        path ``"package.module:attribute"``, imported on first use; then ``spec`` is what the loader reads instead
        (see the module docstring). A name registered twice is a programming error (two parts would answer to one
        config value)."""
        def add(part: T | str) -> T | str:
            if name in self._parts:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self._parts[name]!r} and {part!r})")
            if isinstance(part, str) and spec is None:
                raise ValueError(f"{self.kind} {name!r} is registered by its path {part!r} without a spec")
            self._parts[name] = part
            self._specs[name] = part if spec is None else spec
            return part

        return add if part is None else add(part)

    def _check(self, name: str) -> None:
        if name not in self._parts:
            close = difflib.get_close_matches(str(name), self._parts, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config key '{self.key}': unknown {self.kind} {name!r}{hint}; valid: "
                              f"{', '.join(sorted(self._parts))}")

    def spec(self, name: str):
        """What the config loader reads of part ``name`` (torch-free); an unknown name is :meth:`get`'s error."""
        self._check(name)
        return self._specs[name]

    def specs(self) -> list:
        """Every part's spec, in registration order (the order in which their config sections are composed)."""
        return list(self._specs.values())

    def get(self, name: str) -> T:  # type: ignore[override]  # Mapping.get's default: a config must name a part
        """The part registered as ``name``; an unknown name is a ``ConfigError`` naming :attr:`key`, the valid names
        and the closest one."""
        self._check(name)
        return self[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._parts)

    def __getitem__(self, name: str) -> T:
        part = self._parts[name]
        if isinstance(part, str):  # registered by its path: imported now, once
            part = self._parts[name] = resolve(part)
        return part

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.key!r}, {self.names()})"
