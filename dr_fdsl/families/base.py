"""The contract of a formula family (see :mod:`dr_fdsl.families`). Imports no torch: the config loader reads a
family's settings and checks from its :class:`Family` entry, and the generator is imported when a bank is built."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from dr_fdsl.registry import resolve

if TYPE_CHECKING:
    import torch

    from dr_fdsl.config import BankConfig
    from dr_fdsl.render.settings import RendererConfig


class FamilyOutput(NamedTuple):
    """What a family generates for ``C`` categories.

    points: ``(C, N, 3)`` float32, each set centred and inside ``[-1, 1]^3`` (2D families: z = 0; a family that
        reproduces a published 2D canvas, such as ``fractaldb`` and ``visualatom``, keeps the canvas's placement).
    params: the formula parameters behind the points, tensors whose first dimension is ``C`` (saved in the bank).
    draws: how many candidate formulas were drawn to find these ``C``.
    """

    points: torch.Tensor
    params: dict[str, torch.Tensor]
    draws: int


@dataclass(frozen=True)
class Family:
    """A registered formula family: what the loader needs (its settings and checks) and where its generator is.

    Args:
        name: the value of ``bank.family`` that chooses it; its settings are the section ``bank.<name>``.
        settings: the dataclass of that section (``dr_fdsl/families/<name>/settings.py``).
        validate: ``(cfg: BankConfig) -> None``, raises ``ConfigError`` naming a bad ``bank.<name>`` key; run at load.
        generator: the module (imported on first use) with ``generate(cfg: BankConfig, progress: bool) ->
            FamilyOutput`` and, optionally, ``check_cached(params) -> str | None``: why a cached bank of this family
            cannot be used by today's code, or None (a cache file keeps its name across a fix that changes how
            params are stored, as svd2d's map indices, once uint8 at any count).
        colors: True when params hold each point's grey level, ``grey (C, N)`` float32 in [0, 1]: the colours that
            ``renderer.color_init=bank`` starts from.
        replays_maps: True when params hold each system's maps and map sequence, so that the renderer can replay a
            category's chaos game with one map scaled (``renderer.augment.map_jitter``).
        always_instances: True when every image's points are made from its category's maps in the step, whatever
            the section says (``onepfrac``: the bank holds one fractal, each category its perturbation factors).
        renderer_rules: ``(section: dict, r: RendererConfig) -> None``, the family's rules against the renderer's
            settings (``section``: the content settings of ``bank.<name>``), or None; run at load and by
            ``PointRenderer`` (``render.settings.validate_against_bank``).
        drawer: ``"module:attribute"`` of the builder of the family's per-image drawer (its instances or replay,
            ``dr_fdsl/families/<name>/instances.py``), imported on first use: ``(bank: PointBank, cfg:
            RendererConfig) -> nn.Module | None`` (None: not asked for by these settings; see
            :mod:`dr_fdsl.render.instances`); None when the family has none.
        learnt_perturbation: True when its drawer can learn the size of its categories' perturbation
            (``renderer.perturbation``: ``onepfrac``).
    """

    name: str
    settings: type
    validate: Callable[[BankConfig], None]
    generator: str
    colors: bool = False
    replays_maps: bool = False
    always_instances: bool = False
    renderer_rules: Callable[[dict, RendererConfig], None] | None = None
    drawer: str | None = None
    learnt_perturbation: bool = False

    @property
    def module(self) -> ModuleType:
        """The generator's module (imports torch)."""
        return importlib.import_module(self.generator)

    @property
    def build_drawer(self) -> Callable | None:
        """The drawer's builder (imports its module, and torch), or None (see :attr:`drawer`)."""
        return None if self.drawer is None else resolve(self.drawer)

    @property
    def generate(self) -> Callable[..., FamilyOutput]:
        return self.module.generate

    @property
    def check_cached(self) -> Callable[[dict[str, torch.Tensor]], str | None] | None:
        return getattr(self.module, "check_cached", None)
