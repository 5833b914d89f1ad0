"""Mode ``lookahead``: the rendering tables descend the hypergradient of a target-task loss measured after a virtual
backbone step (a one-step bilevel problem, as DARTS and DADA approximate it; docs/lookahead.md).

With ``theta`` the backbone's parameters, ``phi`` the rendering tables, ``x(phi)`` the rendered batch and
``L_pre(theta, x)`` the objective's loss, every ``lookahead.every`` optimiser steps:

    theta'  = theta - xi grad_theta L_pre(theta, x(phi))                        (virtual step, plain descent)
    L_out   = nearest-class-mean loss of the backbone theta' on labelled target images (support -> prototypes,
              query -> softmax over cosine similarity / temperature)
    h       = grad_phi L_out(theta'(phi))                                         (the hypergradient)
            ~ -xi [grad_phi L_pre(theta+, x) - grad_phi L_pre(theta-, x)] / (2 eps),
              theta+- = theta +- eps v,  v = grad_theta' L_out,  eps = lookahead.epsilon / |v|   (DARTS, default)
            or exactly, by double backward through the virtual step (``lookahead.hypergradient: exact``).

Every gradient with respect to ``phi`` passes through the images, so both are computed as a pixel gradient
``dL_out/dx`` (:func:`pixel_hypergradient`), which the step pulls back through the renderer: the mode works with any
parameterisation of the tables. The backbone learns from its ordinary loss only, on the images detached, exactly as
in ``frozen`` (tested bit for bit); the virtual passes run on copies of the backbone's buffers, with every global
random generator restored after them (the real step draws what it would have drawn), in ``torch.func.functional_call``
on the real parameters, which they never write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from dr_fdsl.errors import ConfigError
from dr_fdsl.frozen_eval import model_input
from dr_fdsl.modes.base import ObjectiveLoss, RendererMode, Stop
from dr_fdsl.modes.lookahead_settings import LookaheadSpec
from dr_fdsl.settings import need
from dr_fdsl.static import quantize
from dr_fdsl.view_order import counter_seed

if TYPE_CHECKING:
    from dr_fdsl.config import Config
    from dr_fdsl.engine.step import Batch
    from dr_fdsl.objectives import Objective, ObjectiveOutput
    from dr_fdsl.render import PointRenderer

_SALT = 0x6C6F6F6B61  # "looka": separates the outer batches from every other stream of the same seed
Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------------
# The outer loss and the hypergradient: pure functions of losses given as callables
# --------------------------------------------------------------------------------------------------------


def prototype_loss(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                   query_labels: torch.Tensor, ways: int, temperature: float) -> torch.Tensor:
    """Nearest-class-mean softmax loss (prototypical networks with a cosine similarity).

    ``support (S, D)`` and ``query (Q, D)`` features, ``*_labels`` int64 in ``[0, ways)``, every class in the support.
    Prototype ``c_k`` = mean of class ``k``'s L2-normalised support features; the loss is the mean over queries of
    ``-log softmax_k(cos(f_q, c_k) / temperature)[y_q]``. A scalar in the features' dtype (float32 at least).
    """
    dtype = torch.promote_types(support.dtype, torch.float32)
    s, q = F.normalize(support.to(dtype), dim=1), F.normalize(query.to(dtype), dim=1)
    sums = s.new_zeros(ways, s.shape[1]).index_add(0, support_labels, s)
    counts = torch.bincount(support_labels, minlength=ways).to(dtype)
    prototypes = F.normalize(sums / counts[:, None], dim=1)
    return F.cross_entropy(q @ prototypes.T / temperature, query_labels)


class Hypergradient(NamedTuple):
    """pixels: ``dL_out(theta'(x))/dx``, the shape of the images, detached; outer_loss: ``L_out(theta')`` (scalar,
    detached)."""

    pixels: torch.Tensor
    outer_loss: torch.Tensor


def _grads(loss: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool = False) -> list[torch.Tensor]:
    """``autograd.grad`` with zeros where ``loss`` does not depend on an input."""
    grads = torch.autograd.grad(loss, inputs, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


def virtual_step(pre_loss: Callable[[Params, torch.Tensor], torch.Tensor], theta: Params, images: torch.Tensor,
                 xi: float) -> Params:
    """``theta' = theta - xi grad_theta L_pre(theta, images)``, detached (new tensors; ``theta`` is not written)."""
    leaves = {n: t.detach().requires_grad_() for n, t in theta.items()}
    grads = _grads(pre_loss(leaves, images.detach()), list(leaves.values()))
    return {n: (t - xi * g).detach() for (n, t), g in zip(leaves.items(), grads)}


def pixel_hypergradient(pre_loss: Callable[[Params, torch.Tensor], torch.Tensor],
                        outer_loss: Callable[[Params], torch.Tensor], theta: Params, images: torch.Tensor, xi: float,
                        method: str = "finite_difference", epsilon: float = 0.01) -> Hypergradient:
    """The gradient of ``L_out(theta - xi grad_theta L_pre(theta, x))`` with respect to the images ``x``.

    Args:
        pre_loss: ``(params, images) -> scalar``, the pre-training loss of the backbone with ``params``.
        outer_loss: ``params -> scalar``, the target loss of the backbone with ``params`` (independent of ``x``).
        theta: the backbone's parameters by name (never written).
        images: ``(B, 3, H, W)`` (only their values are used).
        method: ``"finite_difference"``, DARTS' ``-xi [g(theta+) - g(theta-)] / 2 eps`` with ``g = grad_x L_pre``,
            ``theta+- = theta +- eps v``, ``v = grad_theta' L_out``, ``eps = epsilon / |v|`` (the 2-norm over every
            parameter); ``"exact"``, double backward through the virtual step.
    """
    names = list(theta)
    if method == "exact":
        # Attention's fused kernels (flash, memory-efficient) have no double backward; the math one has.
        with sdpa_kernel(SDPBackend.MATH):
            x = images.detach().requires_grad_()
            leaves = [theta[n].detach().requires_grad_() for n in names]
            grads = _grads(pre_loss(dict(zip(names, leaves)), x), leaves, create_graph=True)
            unrolled = {n: t - xi * g for n, t, g in zip(names, leaves, grads)}
            loss = outer_loss(unrolled)
            (pixels,) = _grads(loss, [x])
        return Hypergradient(pixels.detach(), loss.detach())
    if method != "finite_difference":
        raise ValueError(f"unknown hypergradient method {method!r}")
    unrolled = {n: t.requires_grad_() for n, t in virtual_step(pre_loss, theta, images, xi).items()}
    loss = outer_loss(unrolled)
    v = _grads(loss, list(unrolled.values()))
    norm = torch.cat([g.reshape(-1) for g in v]).norm()
    if not bool(norm > 0):  # L_out does not depend on theta': no direction to differentiate along
        return Hypergradient(torch.zeros_like(images), loss.detach())
    r = epsilon / norm
    pixel_grads = []
    for sign in (1.0, -1.0):
        shifted = {n: theta[n].detach() + sign * r * g for n, g in zip(names, v)}
        x = images.detach().requires_grad_()
        pixel_grads.append(_grads(pre_loss(shifted, x), [x])[0])
    return Hypergradient((-xi * (pixel_grads[0] - pixel_grads[1]) / (2 * r)).detach(), loss.detach())


# --------------------------------------------------------------------------------------------------------
# The backbone evaluated at other parameters, leaving the real one untouched
# --------------------------------------------------------------------------------------------------------


def _random_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda, np.random.get_state(), __import__("random").getstate()


def _set_random_state(device: torch.device, state: tuple) -> None:
    cpu, cuda, numpy_state, python = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
    np.random.set_state(numpy_state)
    __import__("random").setstate(python)


@contextmanager
def replayed_draws(device: torch.device, state: tuple | None = None) -> Iterator[Callable[[], None]]:
    """Yields ``replay()``, which puts torch's (CPU and ``device``'s), numpy's and Python's global generators at
    ``state`` (default: as on entry), so that every pass in the block draws the same Mixup, erasing and dropout as
    the real step will; on exit they are as on entry: the block draws nothing from the run's streams."""
    entry = _random_state(device)
    start = entry if state is None else state
    try:
        yield lambda: _set_random_state(device, start)
    finally:
        _set_random_state(device, entry)


class _Calls(nn.Module):
    """Holds ``model`` so that ``functional_call`` can substitute its tensors while ``fn`` (which reaches the model
    through the objective) runs."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(*args)


@contextmanager
def plain_modules(objective: Objective, accelerator) -> Iterator[None]:
    """Within the block the objective's modules are the unwrapped ones, in float32; restored after.

    No DDP: a virtual pass must not arm DDP's gradient hooks. No mixed precision: the finite difference moves the
    weights by ``epsilon`` (1e-2) in 2-norm, about 1e-4 of a ViT-Tiny's, below bf16's resolution (2^-8), so under
    autocast ``theta+`` and ``theta-`` would mostly round to the same weights. Accelerate keeps the model's own
    forward as ``_original_forward`` when it wraps it in autocast; it is put back for the block (not through
    ``unwrap_model(keep_fp32_wrapper=False)``, which would drop the wrapper for good)."""
    saved = {k: v for k, v in vars(objective).items() if isinstance(v, nn.Module)}
    wrapped = []
    try:
        for k, v in saved.items():
            plain = accelerator.unwrap_model(v)
            setattr(objective, k, plain)
            if "_original_forward" in vars(plain) and "forward" in vars(plain):
                wrapped.append((plain, vars(plain)["forward"]))
                plain.forward = plain._original_forward
        yield
    finally:
        for plain, forward in wrapped:
            plain.forward = forward
        for k, v in saved.items():
            setattr(objective, k, v)


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` within the block; every submodule's own flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def backbone_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features ``(B, D)`` of the timm backbone in an objective's model (itself, or its
    ``backbone``) for normalised inputs ``x (B, 3, H, W)`` (what the k-NN and linear protocols read)."""
    backbone = getattr(model, "backbone", model)
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


# --------------------------------------------------------------------------------------------------------
# Labelled target images (training split only) and their outer batches
# --------------------------------------------------------------------------------------------------------


class Episode(NamedTuple):
    """One outer batch: indices into the target set and labels in ``[0, ways)``, support then query."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    ways: int


_LOADED_DIGESTS: dict[str, str] = {}  # lookahead.dataset -> digest of the folder images loaded last


class LabelledTargets:
    """The labelled target set: the *training* split of ``lookahead.dataset`` (``per_class`` images per class, the
    draw of ``ImageSet.few_shot`` with the run's seed, as fine-tuning draws them), on ``device`` as uint8; outer batch
    ``u`` of process ``rank`` is drawn from a generator seeded by ``(seed, rank, u)``, so the update count is the
    whole state of the stream."""

    def __init__(self, cfg: Config, device: torch.device, rank: int):
        from dr_fdsl import datasets

        la = cfg.lookahead
        data = datasets.load(la.dataset, train=True, root=la.data_root, size=cfg.renderer.image_size)
        if la.dataset.startswith("folder:"):  # what the run loaded is what its checkpoints record
            _LOADED_DIGESTS[la.dataset] = _folder_digest(cfg)
        counts = data.labels.bincount(minlength=data.num_classes)
        if la.per_class:
            need(la.per_class <= int(counts.min()), "lookahead.per_class",
                 f"{la.per_class} images per class asked, but the smallest class of {la.dataset}'s training split has "
                 f"{int(counts.min())}")
            data = data.few_shot(la.per_class, cfg.seed)
            counts = data.labels.bincount(minlength=data.num_classes)
        usable = (counts >= 2 * la.shots).nonzero().squeeze(1)
        if len(usable) < 2:
            raise ConfigError(f"config key 'lookahead.shots': an outer batch takes {la.shots} support and {la.shots} "
                              f"query images per class, and only {len(usable)} classes of {la.dataset}'s training "
                              f"split (per_class={la.per_class}) hold {2 * la.shots}; lower lookahead.shots")
        self.pixels, self.labels = data.images.to(device), data.labels.to(device)
        self.classes, self.ways = usable, min(la.classes, len(usable))
        self.shots, self.size, self.seed, self.rank = la.shots, cfg.renderer.image_size, cfg.seed, rank
        self._members = [(data.labels == c).nonzero().squeeze(1) for c in range(data.num_classes)]

    def episode(self, index: int) -> Episode:
        """Outer batch ``index``: ``ways`` classes, each with ``shots`` support and ``shots`` query images drawn
        without replacement."""
        generator = torch.Generator().manual_seed(counter_seed(self.seed, self.rank, index, _SALT))
        chosen = self.classes[torch.randperm(len(self.classes), generator=generator)[:self.ways]]
        support, query = [], []
        for c in chosen.tolist():
            members = self._members[c]
            picked = members[torch.randperm(len(members), generator=generator)[:2 * self.shots]]
            support.append(picked[:self.shots])
            query.append(picked[self.shots:])
        labels = torch.arange(self.ways).repeat_interleave(self.shots)
        return Episode(torch.cat(support), labels, torch.cat(query), labels.clone(), self.ways)

    def images(self, which: torch.Tensor) -> torch.Tensor:
        """Target images ``which (b,)`` as ``(b, 3, S, S)`` float32 in [0, 1] at the renderer's size (bilinear)."""
        zeros = torch.zeros(1, 3, 1, 1, device=self.pixels.device)
        return model_input(self.pixels[which.to(self.pixels.device)], self.size, zeros, zeros + 1)


def _folder_digest(cfg: Config) -> str:
    from dr_fdsl import datasets

    return datasets.folder_digest(datasets.folder_split(cfg.lookahead.dataset, train=True), cfg.bank.cache_dir or None)


# --------------------------------------------------------------------------------------------------------
# The mode
# --------------------------------------------------------------------------------------------------------


class _Update(NamedTuple):
    """What the latest renderer update used, to measure ``L_out`` again after the tables moved (at a log step)."""

    theta: Params
    buffers: Params
    class_ids: torch.Tensor
    view_seeds: torch.Tensor
    random_state: tuple
    episode: Episode


class Lookahead(LookaheadSpec, RendererMode):
    """Every ``lookahead.every`` optimiser steps, the step computes the hypergradient's pixel gradient ``h`` (module
    docstring) before the objective, then returns ``objective(images.detach()).total + sum(images * h)`` (plus the
    optional anchor): the networks get exactly the frozen mode's gradient, the tables only the hypergradient. Other
    steps are frozen steps (the tables get no gradient, so SparseAdam leaves them)."""

    latest: _Update | None = None  # the latest update's inputs (None before the first)

    @classmethod
    def fingerprint(cls, cfg: Config) -> dict:
        exact = {"lookahead": cfg.lookahead}  # a section: content_key records it
        if cfg.lookahead.dataset.startswith("folder:"):  # a folder's images can change under the same name
            exact["lookahead_images"] = _LOADED_DIGESTS.get(cfg.lookahead.dataset) or _folder_digest(cfg)
        return exact

    def __init__(self, cfg: Config, objective: Objective, accelerator) -> None:
        super().__init__(cfg, objective, accelerator)
        self.objective, self.accelerator, self.settings = objective, accelerator, cfg.lookahead
        plain = accelerator.unwrap_model(objective.model)
        backbone = getattr(plain, "backbone", plain)
        if not (hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")):
            raise ConfigError(f"config key 'renderer.mode': lookahead reads pooled features through timm's "
                              f"forward_features/forward_head, which {type(backbone).__name__} (model.name="
                              f"{cfg.model.name}) lacks; use another model.name or renderer.mode")
        # Built before the bank, so that a missing target dataset fails first; it draws on no global generator.
        self.targets = LabelledTargets(cfg, accelerator.device, accelerator.process_index)
        self.micro_batches = 0  # micro-batches seen (which steps update the tables)
        self.updates = 0  # renderer updates done (the outer batches' stream position)
        self.logged: dict[str, float] = {}  # the latest update's figures (log steps read them)

    def prepare(self, renderer: PointRenderer, accelerator) -> torch.optim.Optimizer | None:
        self.anchor = tuple(p.detach().clone() for p in renderer.parameters())  # initial tables (anchor)
        self.initial = (renderer.colors().detach().clone(), renderer.radii().detach().clone())  # drift
        return super().prepare(renderer, accelerator)

    # -- the backbone at other parameters ------------------------------------------------------------------

    def _model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.objective.model)

    def _theta(self) -> Params:
        return {n: p for n, p in self._model().named_parameters() if p.requires_grad}

    def _buffers(self) -> Params:
        return {n: b.detach().clone() for n, b in self._model().named_buffers()}

    def _losses(self, batch: Batch, buffers: Params, replay: Callable[[], None], episode: Episode):
        """The closures of :func:`pixel_hypergradient` for ``batch`` and ``episode``: every call runs on fresh
        copies of ``buffers`` (a batch norm's statistics never move) after ``replay()``."""
        model, objective = self._model(), self.objective
        ids, seeds = batch.class_ids, batch.view_seeds.to(batch.images.device)

        def call(params: Params, fn: Callable, *args):
            tensors = {f"model.{n}": t for n, t in {**{n: b.clone() for n, b in buffers.items()}, **params}.items()}
            return torch.func.functional_call(_Calls(model, fn), tensors, args, strict=False)

        def pre_loss(params: Params, images: torch.Tensor) -> torch.Tensor:
            replay()
            with plain_modules(objective, self.accelerator):
                return call(params, lambda x: objective.loss(x, ids, seeds).total, images)

        target = self.targets.images(torch.cat([episode.support, episode.query]))
        split = len(episode.support)

        def outer_loss(params: Params) -> torch.Tensor:
            with evaluation_mode(model):
                features = call(params, lambda x: backbone_features(model, x), objective.normalize(target))
            return prototype_loss(features[:split], episode.support_labels.to(features.device), features[split:],
                                  episode.query_labels.to(features.device), episode.ways,
                                  self.settings.temperature)

        return pre_loss, outer_loss

    def hypergradient(self, batch: Batch, theta: Params, buffers: Params, episode: Episode,
                      random_state: tuple | None = None) -> Hypergradient:
        """The pixel hypergradient for ``batch`` at ``theta`` (``lookahead.hypergradient``), every pass drawing from
        ``random_state`` (default: the generators' current state); the global random generators end as they
        began."""
        la = self.settings
        with replayed_draws(self.accelerator.device, random_state) as replay:
            pre_loss, outer_loss = self._losses(batch, buffers, replay, episode)
            return pixel_hypergradient(pre_loss, outer_loss, theta, batch.images, la.xi, la.hypergradient,
                                       la.epsilon)

    # -- the step ----------------------------------------------------------------------------------------

    def losses(self, batch: Batch, objective_loss: ObjectiveLoss, stop: Stop) -> tuple[ObjectiveOutput, torch.Tensor]:
        step = self.micro_batches // self.cfg.train.grad_accum
        self.micro_batches += 1
        if step % self.settings.every:  # a frozen step
            out = objective_loss(batch.images.detach())
            return out, out.total
        episode = self.targets.episode(self.updates)
        self.updates += 1
        theta, buffers = self._theta(), self._buffers()
        random_state = _random_state(self.accelerator.device)
        hyper = self.hypergradient(batch, theta, buffers, episode)
        if not torch.isfinite(hyper.outer_loss).item() or not torch.isfinite(hyper.pixels).all().item():
            stop(f"lookahead outer loss is {hyper.outer_loss.item()}", " (or its hypergradient is not finite)",
                 "a lower lookahead.xi or renderer.lr")
        params = [p for p in self.renderer.parameters() if p.requires_grad]
        table_grads = torch.autograd.grad(batch.images, params, hyper.pixels, retain_graph=True, allow_unused=True)
        norm = torch.stack([_norm(g) for g in table_grads]).norm()
        out = objective_loss(batch.images.detach())  # the networks' gradient: the frozen mode's
        total = out.total + (batch.images * hyper.pixels).sum()  # the tables': the hypergradient alone
        if self.settings.anchor_penalty > 0:
            total = total + self.settings.anchor_penalty * self.renderer.drift(batch.rows, self.anchor)
        self.latest = _Update({n: t.detach().clone() for n, t in theta.items()}, buffers, batch.class_ids,
                              batch.view_seeds, random_state, episode)
        self.logged = {"lookahead/outer_loss_before": float(hyper.outer_loss),
                       "lookahead/hypergradient_norm": float(norm)}
        return out, total

    def outer_loss_now(self) -> float | None:
        """``L_out(theta')`` of the latest update's batch, backbone and outer batch, with the tables as they are now
        (after that update), or None before any update."""
        u = self.latest
        if u is None:
            return None
        with torch.no_grad():
            images = self.renderer.render(u.class_ids, u.view_seeds).images  # keyed: the same views
        if self.cfg.data.quantize:
            images = quantize(images).float() / 255
        from dr_fdsl.engine.step import Batch  # the engine imports the modes

        batch = Batch(images, u.class_ids, u.view_seeds, torch.zeros(0))
        la = self.settings
        with replayed_draws(self.accelerator.device, u.random_state) as replay:
            pre_loss, outer_loss = self._losses(batch, u.buffers, replay, u.episode)
            unrolled = virtual_step(pre_loss, u.theta, images, la.xi)
            with torch.no_grad():
                return float(outer_loss(unrolled))

    def scalars(self) -> dict[str, float]:
        """``lr/renderer``; for the latest update: ``lookahead/outer_loss_before`` and ``_after`` it (the same batch
        and backbone), ``lookahead/hypergradient_norm`` (over every table); the mean absolute drift of the colours
        and radii from their initial values (``lookahead/color_drift``, ``lookahead/radius_drift``)."""
        out = super().scalars()
        if self.latest is not None:
            if "lookahead/outer_loss_after" not in self.logged:  # once per update: the tables move only then
                self.logged["lookahead/outer_loss_after"] = self.outer_loss_now()
            out.update(self.logged)
        with torch.no_grad():
            out["lookahead/color_drift"] = float((self.renderer.colors() - self.initial[0]).abs().mean())
            out["lookahead/radius_drift"] = float((self.renderer.radii() - self.initial[1]).abs().mean())
        return out

    def positions(self) -> dict[str, int]:
        return {"lookahead_micro_batches": self.micro_batches, "lookahead_updates": self.updates}

    def restore_positions(self, state: dict) -> None:
        self.micro_batches = int(state["lookahead_micro_batches"])
        self.updates = int(state["lookahead_updates"])


def _norm(grad: torch.Tensor | None) -> torch.Tensor:
    if grad is None:
        return torch.zeros(())
    values = grad.coalesce().values() if grad.is_sparse else grad
    return values.float().norm().cpu()


__all__ = ["Lookahead", "LabelledTargets", "pixel_hypergradient", "prototype_loss", "virtual_step"]
