"""Renderer modes (``renderer.mode``): which gradient reaches the rendering tables, and what follows from it.

One module per mode, each a :class:`~dr_fdsl.modes.base.RendererMode` registered in :data:`MODES` by its name:

    frozen       the tables never change (no gradient, no optimiser): the images of the classic static dataset.
    joint        they descend the objective's loss with their own SparseAdam.
    adversarial  they ascend it (a gradient reversal of ``renderer.adversarial_scale`` between renderer and
                 objective), pulled back towards their initial values by ``renderer.anchor_penalty``.
    match        they descend ``match.weight`` x ``match.distance`` to unlabelled target images (``dr_fdsl/match.py``);
                 the objective gets the images detached unless ``match.joint``.
    lookahead    they descend the hypergradient of a nearest-class-mean loss on labelled target images after a
                 virtual backbone step (DARTS' finite difference, or exact); the objective gets the images detached.

A mode decides in its module: its checks against the config and the objective (``validate``, run by
``load_config``), its optimiser and anchors (``prepare``), the loss the step backpropagates (``losses``), what it
logs (``scalars``, ``log_images``), the positions of its own streams that a checkpoint keeps, and its part of the
checkpoint fingerprint. The engine calls these and never branches on a mode's name. To add a mode: a torch-free
``<name>_settings.py`` (a :class:`~dr_fdsl.modes.base_settings.ModeSpec` subclass: its config sections, checks and
size estimates), a ``<name>.py`` whose class subclasses that spec and ``RendererMode``, and one ``MODES.register``
line below; its sections are composed into ``Config`` from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.modes.adversarial_settings import AdversarialSpec
from dr_fdsl.modes.base_settings import ModeSpec
from dr_fdsl.modes.frozen_settings import FrozenSpec
from dr_fdsl.modes.joint_settings import JointSpec
from dr_fdsl.modes.lookahead_settings import LookaheadSpec
from dr_fdsl.modes.match_settings import MatchSpec
from dr_fdsl.modes.teach_settings import TeachSpec
from dr_fdsl.registry import Registry

if TYPE_CHECKING:
    from dr_fdsl.modes.base import RendererMode

# Each mode: its class (imported on first use: torch) and its torch-free spec (read at load).
MODES: Registry[type[RendererMode]] = Registry("renderer mode", "renderer.mode")
MODES.register("frozen", "dr_fdsl.modes.frozen:Frozen", spec=FrozenSpec)
MODES.register("joint", "dr_fdsl.modes.joint:Joint", spec=JointSpec)
MODES.register("adversarial", "dr_fdsl.modes.adversarial:Adversarial", spec=AdversarialSpec)
MODES.register("match", "dr_fdsl.modes.match:Match", spec=MatchSpec)
MODES.register("lookahead", "dr_fdsl.modes.lookahead:Lookahead", spec=LookaheadSpec)
MODES.register("teach", "dr_fdsl.modes.teach:Teach", spec=TeachSpec)


__all__ = ["MODES", "ModeSpec"]
