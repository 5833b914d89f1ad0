"""Renderer modes (``renderer.mode``): which gradient reaches the rendering tables, and what follows from it.

One module per mode, each a :class:`~dr_fdsl.modes.base.RendererMode` registered in :data:`MODES` by its name:

    frozen       the tables never change (no gradient, no optimiser): the images of the classic static dataset.
    joint        they descend the objective's loss with their own SparseAdam.
    adversarial  they ascend it (a gradient reversal of ``renderer.adversarial_scale`` between renderer and
                 objective), pulled back towards their initial values by ``renderer.anchor_penalty``.
    match        they descend ``match.weight`` x ``match.distance`` to unlabelled target images (``dr_fdsl/match.py``);
                 the objective gets the images detached unless ``match.joint``.
    teach        TeachAugment's objective (section ``teach``): they ascend the backbone's loss in its bounded
                 form while an EMA teacher must still classify the images, with a colour regulariser; the
                 backbone learns from its ordinary loss on the images detached.

A mode decides in its module: its checks against the config and the objective (``validate``, run by
``load_config``), its optimiser and anchors (``prepare``), the loss the step backpropagates (``losses``), what it
logs (``scalars``, ``log_images``), the positions of its own streams that a checkpoint keeps, and its part of the
checkpoint fingerprint. The engine calls these and never branches on a mode's name. To add a mode: a module here
with a subclass and one ``MODES.register`` line below.
"""

from __future__ import annotations

from dr_fdsl.modes.adversarial import Adversarial
from dr_fdsl.modes.base import RendererMode
from dr_fdsl.modes.frozen import Frozen
from dr_fdsl.modes.joint import Joint
from dr_fdsl.modes.match import Match
from dr_fdsl.modes.teach import Teach
from dr_fdsl.registry import Registry

MODES: Registry[type[RendererMode]] = Registry("renderer mode", "renderer.mode")
MODES.register(Frozen.name, Frozen)
MODES.register(Joint.name, Joint)
MODES.register(Adversarial.name, Adversarial)
MODES.register(Match.name, Match)
MODES.register(Teach.name, Teach)

__all__ = ["MODES", "RendererMode"]
