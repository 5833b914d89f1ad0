"""Pre-training objectives: what a step computes from rendered images and their categories.

Registered by name (``train.objective``). To add one: write ``objectives/<name>_settings.py`` (no torch: its
config sections, if any, and its checks, an :class:`~dr_fdsl.objectives.base_settings.ObjectiveSpec` subclass) and
``objectives/<name>.py`` (its networks: a subclass of that spec and of :class:`~dr_fdsl.objectives.base.Objective`),
and register the two in ``OBJECTIVES`` below (``OBJECTIVES.get(name)`` looks one up for a config value and imports
it; ``OBJECTIVES.spec(name)`` is what the loader reads). Its sections are composed into ``Config`` from here.

Renderer modes under each objective (``renderer.mode``, ``dr_fdsl/modes/``; the renderer's gradient is that of the
loss named). "Refused at load": the objective's ``joint_trap`` says how the renderer could trivialise its loss, and
the modes that descend it (``joint``, ``match`` with ``match.joint``) refuse it:

==============  ======  ==========================================  ==========================================
objective       frozen  joint (renderer descends)                   adversarial (ascends, anchored)
==============  ======  ==========================================  ==========================================
classify        yes     the classification loss; can leak the       the classification loss: hard examples
                        label through colour or size (the leakage   within the bounds
                        probe watches it)
mim             yes     refused at load: descending reconstruction  the reconstruction loss: images that are
                        can empty the image, trivially              hard to reconstruct within the bounds
                        reconstructed
classify+mim    yes     the classification loss only (the           the classification loss only, as
                        reconstruction branch gets the images       classify: exactly classify's gradient
                        detached): exactly classify's gradient      with the same weights (tested)
                        with the same weights (tested); the same
                        leakage trap as classify
sit             yes     refused at load: descending reconstruction  SiT's weighted loss through the network's
                        and contrastive losses can empty the image  input (the reconstruction target is
                        or colour each category apart               detached): hard views within the bounds
==============  ======  ==========================================  ==========================================

Objectives whose name joins two (``classify+mim``) read every section named in it (``mim``); the checkpoint
fingerprint includes each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dr_fdsl.objectives.base_settings import ObjectiveSpec
from dr_fdsl.objectives.classify_mim_settings import ClassifyMIMSpec
from dr_fdsl.objectives.classify_settings import ClassifySpec
from dr_fdsl.objectives.mim_settings import MIMSpec
from dr_fdsl.objectives.multilabel_settings import MultiLabelSpec
from dr_fdsl.objectives.sit_settings import SiTSpec
from dr_fdsl.registry import Registry

if TYPE_CHECKING:
    from dr_fdsl.objectives.base import Objective

# Each objective: its networks (imported on first use) and its torch-free spec (read at load).
OBJECTIVES: Registry[type[Objective]] = Registry("objective", "train.objective")
OBJECTIVES.register("classify", "dr_fdsl.objectives.classify:Classify", spec=ClassifySpec)
OBJECTIVES.register("mim", "dr_fdsl.objectives.mim:MaskedImageModelling", spec=MIMSpec)
OBJECTIVES.register("classify+mim", "dr_fdsl.objectives.classify_mim:ClassifyMIM", spec=ClassifyMIMSpec)
OBJECTIVES.register("sit", "dr_fdsl.objectives.sit:SiT", spec=SiTSpec)
OBJECTIVES.register("multilabel", "dr_fdsl.objectives.multilabel:MultiLabel", spec=MultiLabelSpec)


__all__ = ["OBJECTIVES", "ObjectiveSpec"]
