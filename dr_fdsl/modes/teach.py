"""Mode ``teach``: TeachAugment's objective (Suzuki, CVPR 2022) with the rendering tables as the augmenter.

The published code (github.com/DensoITLab/TeachAugment: ``lib/teachaugment.py``, ``main.py``,
``lib/losses/non_saturating_loss.py``, ``lib/augmentation/augmentation_container.py``, ``replay_buffer.py``) trains
an augmenter ``A`` against a target model ``f`` and its EMA teacher ``f_ema``:

    L_A = NS(f(A(x)), y) + CE(f_ema(A(x)), y) + c_reg * SWD(x, A(x))
    NS(z, y) = -sum_k t_k log(1 - softmax(z)_k + 1e-12),   t = (1 - eps) onehot(y) + eps / K

``NS`` is the bounded (non-saturating) form of "ascend the target's loss": it is minimised at ``p_y = 0`` instead of
growing without bound; the teacher's cross-entropy keeps the images recognisable; ``SWD`` is the sliced Wasserstein
distance between the colours of the input and of the augmented image (128 random unit projections, sorted along the
batch dimension, as their ``slicd_Wasserstein_distance`` does). ``A`` steps every ``n_inner`` iterations; every
``sampling_freq`` epochs a copy of ``A`` joins a replay buffer, and the target model trains on images made, per
group of ``group_size``, by a copy drawn with priority ``rb_decay^age`` (the current one: 1).

Here ``A`` is the renderer: ``x`` is the render with the initial tables, ``A(x)`` the render with the current ones,
and one backward pass gives the backbone its ordinary loss (on the images detached, so its step is the frozen mode's
given the same images) and the tables ``L_A`` (through the backbone with its parameters detached, and the teacher,
which has none that train). Differences from the published loop, which steps ``A`` first and then the target on
``A``'s new output: both step together on the same render, as in the other modes; the augmenter's AdamW weight
decay has no counterpart (the tables step with the renderer's SparseAdam).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dr_fdsl.modes.base import ObjectiveLoss, RendererMode, Stop
from dr_fdsl.modes.teach_settings import TeachSpec
from dr_fdsl.static import quantize

if TYPE_CHECKING:
    from dr_fdsl.config import Config
    from dr_fdsl.engine.step import Batch
    from dr_fdsl.objectives import Objective, ObjectiveOutput
    from dr_fdsl.render import PointRenderer

PROJECTIONS = 128  # slicd_Wasserstein_distance's n_projection
_REPLAY_SALT, _PROJECTION_SALT = 1, 2  # the mode's two keyed random streams


def non_saturating_loss(logits: torch.Tensor, class_ids: torch.Tensor, epsilon: float) -> torch.Tensor:
    """TeachAugment's ``NonSaturatingLoss``: ``-log(1 - p_y)`` (scalar, mean over the batch), with label smoothing
    ``epsilon`` over the targets. ``logits``: ``(B, K)`` float32; ``class_ids``: ``(B,)`` int64."""
    log_rest = torch.log(1 - logits.softmax(1) + 1e-12)
    if epsilon > 0:
        targets = (1 - epsilon) * F.one_hot(class_ids, logits.shape[1]).float() + epsilon / logits.shape[1]
        return -(targets * log_rest).sum(1).mean()
    return F.nll_loss(log_rest, class_ids)


def sliced_wasserstein(x1: torch.Tensor, x2: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """TeachAugment's colour regulariser between two image batches ``(B, 3, H, W)``: each pixel's colour projected
    on ``projections`` ``(3, P)`` unit columns, sorted along the batch dimension (as published), mean squared
    difference (scalar)."""
    a = x1.flatten(-2).transpose(1, 2) @ projections  # (B, H*W, P)
    b = x2.flatten(-2).transpose(1, 2) @ projections
    return (a.sort(0)[0] - b.sort(0)[0]).pow(2).mean()


@contextmanager
def batch_statistics(module: nn.Module):
    """Within the block, batch-norm layers normalise by the batch and update no running statistics (TeachAugment's
    ``stop_bn_track_running_stats``: the step's ordinary forward has updated them already)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for m in norms:
            m.track_running_stats = False
        yield module
    finally:
        for m in norms:
            m.track_running_stats = True


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator that depends only on ``key`` (so that resume and ranks agree without saving its state)."""
    seed = 0
    for part in key:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class Teach(TeachSpec, RendererMode):
    """The tables descend ``teach.adversarial_weight`` x NS(backbone) + ``teach.teacher_weight`` x CE(teacher) +
    ``teach.color_weight`` x SWD(initial render, render) on every ``teach.interval``-th optimiser step; the backbone
    descends its ordinary loss on the images detached (with ``teach.replay_every``, on images of past tables in
    part); the teacher, an EMA copy of the backbone (``teach.ema_decay``), never gets a gradient. The teacher and
    the replayed tables are in the checkpoint (``mode.safetensors``). Needs ``train.objective=classify``."""

    @classmethod
    def fingerprint(cls, cfg: Config) -> dict:
        return {"teach": cfg.teach}  # a section: content_key records it

    def __init__(self, cfg: Config, objective: Objective, accelerator) -> None:
        super().__init__(cfg, objective, accelerator)
        self.objective, self.accelerator = objective, accelerator
        self.teacher: nn.Module | None = None
        self.replay: list[dict[str, torch.Tensor]] = []  # past tables, oldest first
        self.micro_batches = 0  # micro-batches this mode has seen (resume restores it)
        self.last: dict[str, torch.Tensor] = {}  # the last renderer update's terms, logged at every step

    def prepare(self, renderer: PointRenderer, accelerator) -> torch.optim.Optimizer | None:
        self.initial = self._tables(renderer)  # before the first step (as adversarial's anchor)
        # The published teacher is torch's AveragedModel of the target model: a copy of its parameters (and of its
        # buffers, which are not averaged), in train mode while training.
        self.teacher = copy.deepcopy(self._backbone()).requires_grad_(False)
        return super().prepare(renderer, accelerator)

    def _backbone(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.objective.model)

    @staticmethod
    def _tables(renderer: nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in renderer.named_parameters()}

    def _render(self, tables: dict[str, torch.Tensor], class_ids: torch.Tensor,
                view_seeds: torch.Tensor) -> torch.Tensor:
        """The images the renderer draws with ``tables`` in place of its parameters (no gradient), 8-bit as the
        training images are under ``data.quantize``."""
        with torch.no_grad():
            images = functional_call(self.renderer, tables, (class_ids, view_seeds))
        return quantize(images).float() / 255 if self.cfg.data.quantize else images

    # ---- the step --------------------------------------------------------------------------------------------

    def losses(self, batch: Batch, objective_loss: ObjectiveLoss, stop: Stop) -> tuple[ObjectiveOutput, torch.Tensor]:
        t = self.cfg.teach
        step, micro = divmod(self.micro_batches, self.cfg.train.grad_accum)  # optimiser steps done, micro-batch
        if micro == 0 and step > 0:  # a new optimiser step: the teacher follows the backbone's last one
            self._average()
            if t.replay_every and step % t.replay_every == 0:
                self._store()
        out = objective_loss(self._backbone_images(batch))  # the backbone's loss: no gradient to the tables
        total = out.total
        if step % t.interval == 0:
            augmenter = self._augmenter_loss(batch)
            if not torch.isfinite(augmenter.detach()).item():
                stop(f"teach renderer loss is {augmenter.item()}",
                     f" (terms: { {k: round(v.item(), 6) for k, v in self.last.items()} })", "a lower renderer.lr")
            total = total + augmenter
        self.micro_batches += 1
        return out._replace(metrics={**out.metrics, **self.last}), total

    def _augmenter_loss(self, batch: Batch) -> torch.Tensor:
        """``L_A`` on the batch's render (graph to the tables only); its terms go to ``self.last``."""
        t, y = self.cfg.teach, batch.class_ids
        x = self.objective.normalize(batch.images)
        backbone = self._backbone()
        detached = {name: p.detach() for name, p in backbone.named_parameters()}
        self.teacher.train(backbone.training)
        with self.accelerator.autocast(), batch_statistics(backbone):
            student = functional_call(backbone, detached, (x,)).float()
            teacher = self.teacher(x).float()
        adversarial = non_saturating_loss(student, y, t.label_smoothing)
        taught = F.cross_entropy(teacher, y)
        total = t.adversarial_weight * adversarial + t.teacher_weight * taught
        color = torch.zeros((), device=x.device)
        if t.color_weight > 0:
            gen = keyed_generator(self.cfg.seed, self.accelerator.process_index, self.micro_batches, _PROJECTION_SALT)
            proj = torch.randn(3, PROJECTIONS, generator=gen)
            proj = (proj / (proj.norm(2, dim=0, keepdim=True) + 1e-12)).to(x.device)
            initial = self.objective.normalize(self._render(self.initial, batch.class_ids, batch.view_seeds))
            color = t.color_weight * sliced_wasserstein(initial, x.float(), proj)
            total = total + color
        self.last.update({"teach/adversarial_loss": adversarial.detach(), "teach/teacher_loss": taught.detach(),
                          "teach/color_reg": color.detach(),
                          "teach/student_acc": (student.argmax(1) == y).float().mean().detach(),
                          "teach/teacher_acc": (teacher.argmax(1) == y).float().mean().detach()})
        return total

    def _backbone_images(self, batch: Batch) -> torch.Tensor:
        """The batch detached, each group of ``teach.replay_group`` images re-rendered by a past table copy drawn
        with priority ``replay_decay^age`` (the current tables: 1); ``(B, 3, H, W)``."""
        images = batch.images.detach()
        if not self.replay:
            return images
        t, count = self.cfg.teach, len(self.replay)
        priority = torch.tensor([t.replay_decay ** (count - i) for i in range(count)] + [1.0], dtype=torch.float64)
        groups = max(1, len(images) // t.replay_group)
        gen = keyed_generator(self.cfg.seed, self.accelerator.process_index, self.micro_batches, _REPLAY_SALT)
        chosen = torch.multinomial(priority, groups, replacement=True, generator=gen).tolist()
        parts = zip(images.chunk(groups), batch.class_ids.chunk(groups), batch.view_seeds.chunk(groups), chosen)
        drawn = [part if k == count else self._render(self.replay[k], ids, seeds) for part, ids, seeds, k in parts]
        self.last["teach/replayed"] = torch.tensor(sum(k < count for k in chosen) / len(chosen))
        return torch.cat(drawn)

    @torch.no_grad()
    def _average(self) -> None:
        """teacher <- ema_decay * teacher + (1 - ema_decay) * backbone, parameters only (AveragedModel's default)."""
        decay = self.cfg.teach.ema_decay
        for mine, theirs in zip(self.teacher.parameters(), self._backbone().parameters()):
            mine.copy_(decay * mine + (1 - decay) * theirs.detach())

    def _store(self) -> None:
        self.replay.append(self._tables(self.renderer))
        if self.cfg.teach.replay_size:
            self.replay = self.replay[-self.cfg.teach.replay_size:]

    # ---- logs, evaluation, checkpoints -----------------------------------------------------------------------

    eval_names = ("teach/val_top1",)

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """The teacher's top-1 hits ``(B, 1)`` on held-out renders ``(B, 3, H, W)`` in [0, 1] (in eval mode)."""
        training = self.teacher.training
        self.teacher.eval()
        with self.accelerator.autocast():
            logits = self.teacher(self.objective.normalize(images)).float()
        self.teacher.train(training)
        return (logits.argmax(1) == class_ids).float()[:, None]

    def positions(self) -> dict[str, int]:
        return {"teach_micro_batches": self.micro_batches, "teach_replays": len(self.replay)}

    def restore_positions(self, state: dict) -> None:
        self.micro_batches = int(state["teach_micro_batches"])
        # Placeholders of the right shapes for the checkpoint's copies (load_state_tensors fills them)
        self.replay = [{k: torch.empty_like(v) for k, v in self.initial.items()}
                       for _ in range(int(state["teach_replays"]))]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
        for i, tables in enumerate(self.replay):
            tensors.update({f"replay.{i}.{k}": v for k, v in tables.items()})
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.teacher.load_state_dict({k.removeprefix("teacher."): v for k, v in tensors.items()
                                      if k.startswith("teacher.")})
        for i, tables in enumerate(self.replay):
            for k, v in tables.items():
                v.copy_(tensors[f"replay.{i}.{k}"])
