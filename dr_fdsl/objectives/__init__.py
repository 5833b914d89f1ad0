"""Pre-training objectives: what a step computes from rendered images and their categories.

Registered by name (``train.objective``). To add one: write ``objectives/<name>.py`` with an
:class:`~dr_fdsl.objectives.base.Objective` subclass and register it in ``OBJECTIVES``
(``OBJECTIVES.get(name)`` looks one up for a config value).

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

from dr_fdsl.objectives.base import Objective, ObjectiveOutput
from dr_fdsl.objectives.classify import Classify
from dr_fdsl.objectives.classify_mim import ClassifyMIM
from dr_fdsl.objectives.mim import MaskedImageModelling
from dr_fdsl.objectives.multilabel import MultiLabel
from dr_fdsl.objectives.sit import SiT
from dr_fdsl.registry import Registry

OBJECTIVES: Registry[type[Objective]] = Registry("objective", "train.objective")
for _objective in (Classify, MaskedImageModelling, ClassifyMIM, SiT, MultiLabel):
    OBJECTIVES.register(_objective.name, _objective)

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput"]
