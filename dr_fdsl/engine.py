"""The training step and loop: render a batch in the step, augment it on the device, classify it, and update
the classifier and (unless frozen) the rendering parameters together, under Hugging Face Accelerate.

Renderer modes:
    frozen       rendering parameters never change: the images are those of the classic static dataset.
    joint        rendering parameters descend the classification loss with their own AdamW.
    adversarial  rendering parameters ascend it (a gradient reversal of ``renderer.adversarial_scale`` between
                 renderer and classifier), pulled back towards their initial values by
                 ``renderer.anchor_penalty``: the renderer makes hard examples within its bounds.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from dr_fdsl import checkpoint
from dr_fdsl.config import Config, ConfigError, save_config, to_dict
from dr_fdsl.fractals import bank_from_config
from dr_fdsl.image_augment import ImageAugment
from dr_fdsl.models import create_classifier, normalization
from dr_fdsl.probe import LeakageProbe, colour_statistics
from dr_fdsl.render import FractalRenderer, render_grid
from dr_fdsl.sparse_sync import average_row_gradients, clip_sparse_grad_norm_
from dr_fdsl.static import StaticViews, quantize, static_loader

TB_DIR = "tensorboard"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and no checkpoint was written after it."""


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale`` (the renderer ascends the loss)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


class ViewStream:
    """This process's stream of (category, view seed) draws.

    Counter-based: micro-batch ``k`` comes from a generator seeded by ``(seed, rank, k)``, so a data loader may
    prefetch ahead and the checkpointed state is just the next ``k``. View seeds are drawn in ``[0, 2^62)``, or
    in ``[0, views_per_class)`` to train on a static dataset's views; negative seeds are held out for evaluation.
    """

    def __init__(self, seed: int, rank: int, num_classes: int, views_per_class: int = 0):
        self.seed, self.rank, self.num_classes, self.views = seed, rank, num_classes, views_per_class
        self.index = 0

    def batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``index``: ``(B,)`` int64 class ids and ``(B,)`` int64 view seeds, on the CPU."""
        generator = torch.Generator().manual_seed(hash((self.seed, self.rank, index)) & (2**63 - 1))
        ids = torch.randint(0, self.num_classes, (batch_size,), generator=generator)
        seeds = torch.randint(0, self.views or 2**62, (batch_size,), generator=generator)
        return ids, seeds

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.batch(self.index, batch_size)
        self.index += 1
        return out

    def state_dict(self) -> dict:
        return {"index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.index = int(state["index"])


def held_out_views(count: int, num_classes: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of the evaluation set: categories round-robin, view seeds ``-1, -2, ...`` (never
    drawn in training). The set is rounded up to a multiple of ``world`` so that every share is equal."""
    total = math.ceil(count / world) * world
    index = torch.arange(rank, total, world)
    return index % num_classes, -(index + 1)


class Trainer:
    """Builds everything from a :class:`Config` and runs the step-based loop (``fit``)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        t = cfg.train
        self.output_dir = Path(cfg.output_dir)
        acc = self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum,
            log_with="tensorboard", project_dir=str(self.output_dir), step_scheduler_with_optimizer=False)
        self.check_settings()
        self.static = self.loader = None
        views = cfg.data.views_per_class
        if cfg.data.source == "static":  # before any work: a missing or foreign dataset fails here
            self.static = StaticViews(cfg.data.path)
            self.static.check_matches(cfg)
            views = self.static.views
        # Shared seed: identical classifier and renderer initialisation on every process.
        set_seed(cfg.seed)
        with acc.main_process_first():  # the main process builds and caches the bank, the others read it
            bank = bank_from_config(cfg.bank, progress=acc.is_main_process and t.progress)
        self.num_classes, self.image_size = bank.num_classes, cfg.renderer.image_size
        renderer = FractalRenderer(bank, cfg.renderer).to(acc.device)
        model = create_classifier(cfg.model, self.num_classes, self.image_size)
        mean, std = normalization(model)
        self.mean, self.std = mean.to(acc.device), std.to(acc.device)

        self.total_batch = t.batch_size * t.grad_accum * acc.num_processes
        self.lr = cfg.optim.lr * self.total_batch / 512
        optimizer = create_optimizer_v2(model, "adamw", lr=self.lr, weight_decay=cfg.optim.weight_decay)
        self.schedulers = [self.cosine(optimizer)]
        self.mode = cfg.renderer.mode
        self.trainable_renderer = self.mode != "frozen"
        # The anchor of the adversarial penalty: the initial logits (identical on every process).
        self.anchor = tuple(p.detach().clone() for p in renderer.parameters())

        # Accelerate: prepare what trains. The renderer stays outside DDP: its gradients are row-sparse and are
        # averaged row by row (sparse_sync), so a step pays for the categories it touched, not for all of them.
        # It is checkpointed as a registered object; its SparseAdam goes through prepare like any optimiser.
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.renderer, self.renderer_optimizer = renderer, None
        acc.register_for_checkpointing(renderer)
        if self.trainable_renderer:
            self.renderer_optimizer = acc.prepare(torch.optim.SparseAdam(renderer.parameters(), lr=cfg.renderer.lr))
            self.schedulers.append(self.cosine(self.renderer_optimizer))
        self.probe = self.probe_optimizer = None
        if t.probe:
            probe = LeakageProbe(self.num_classes).to(acc.device)
            self.probe, self.probe_optimizer = acc.prepare(probe, torch.optim.Adam(probe.parameters(), lr=t.probe_lr))
        for scheduler in self.schedulers:  # timm schedulers cannot go through prepare (no step_update there)
            acc.register_for_checkpointing(scheduler)
        self.stream = ViewStream(cfg.seed, acc.process_index, self.num_classes, views)
        acc.register_for_checkpointing(self.stream)
        # Per-process seed for the image augmentations (global torch / numpy / random generators).
        set_seed(cfg.seed, device_specific=True)
        self.image_aug = ImageAugment(cfg.image_aug, self.num_classes, acc.device)
        self.eval_ids, self.eval_seeds = held_out_views(t.eval_images, self.num_classes, acc.process_index,
                                                        acc.num_processes)
        rows = min(8, self.num_classes)
        self.grid_ids = torch.arange(rows).repeat_interleave(4)
        self.grid_seeds = -(10**9) - torch.arange(4).repeat(rows)  # held out like the evaluation views
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.first_batch: list[int] | None = None

        if acc.is_main_process:
            save_config(cfg, self.output_dir / "config.yaml")
        acc.init_trackers(TB_DIR)
        self.writer = acc.get_tracker("tensorboard", unwrap=True) if acc.is_main_process else None

    # ----------------------------------------------------------------------------------------------------
    # Set-up helpers
    # ----------------------------------------------------------------------------------------------------

    def check_settings(self) -> None:
        t = self.cfg.train
        for key in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "image_every",
                    "ckpt_every", "eval_images"):
            if getattr(t, key) < 1:
                raise ConfigError(f"config key 'train.{key}' must be >= 1, got {getattr(t, key)}")
        if self.cfg.optim.warmup_steps < 0 or self.cfg.optim.clip_grad < 0:
            raise ConfigError("config keys 'optim.warmup_steps' and 'optim.clip_grad' must be >= 0")
        data = self.cfg.data
        if data.source == "static":
            if not data.path:
                raise ConfigError("config key 'data.path' must name a dataset folder when data.source=static")
            if self.cfg.renderer.mode != "frozen":
                raise ConfigError("data.source=static trains on fixed images: it needs renderer.mode=frozen "
                                  f"(got {self.cfg.renderer.mode!r})")
        if data.views_per_class < 0 or data.workers < 0:
            raise ConfigError("config keys 'data.views_per_class' and 'data.workers' must be >= 0")

    def cosine(self, optimizer) -> CosineLRScheduler:
        """Linear warm-up then cosine decay to ``optim.min_lr``, counted in optimiser steps."""
        o = self.cfg.optim
        return CosineLRScheduler(optimizer, t_initial=self.cfg.train.max_steps, lr_min=o.min_lr,
                                 warmup_t=o.warmup_steps, warmup_lr_init=o.min_lr, t_in_epochs=False)

    def fingerprint(self) -> dict:
        """Settings a checkpoint must share with the run that resumes it."""
        c = self.cfg
        return {"bank": to_dict(c.bank) | {"cache_dir": None}, "model": c.model.name,
                "image_size": c.renderer.image_size, "mode": c.renderer.mode,
                "share_colors": c.renderer.share_colors, "share_radii": c.renderer.share_radii,
                "probe": c.train.probe, "num_processes": self.accelerator.num_processes,
                "data": [c.data.source, c.data.views_per_class, c.data.quantize]}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    # ----------------------------------------------------------------------------------------------------
    # The step
    # ----------------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One micro-batch; an optimiser step when it completes an accumulation. Returns timings and metrics."""
        acc, t = self.accelerator, self.cfg.train
        modules = [m for m in (self.model, self.probe) if m is not None]
        timed = (self.step + 1) % t.log_every == 0 and acc.device.type == "cuda"
        start = time.perf_counter()
        with acc.accumulate(*modules):
            images, ids = self.next_batch()
            if timed:
                torch.cuda.synchronize()
            render_seconds = time.perf_counter() - start

            x = self.normalize(images)
            if self.mode == "adversarial":
                x = GradientReversal.apply(x, self.cfg.renderer.adversarial_scale)
            x, targets = self.image_aug(x, ids)
            logits = self.model(x)
            loss = self.image_aug.train_loss(logits.float(), targets)
            if not torch.isfinite(loss.detach()).item():
                where = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {self.step + 1}; training stopped ({where}). Lower optim.lr, "
                    "raise optim.warmup_steps or use train.mixed_precision=no/bf16")
            total = loss
            if self.mode == "adversarial" and self.cfg.renderer.anchor_penalty > 0:
                # On the rows this batch drew: the others do not move (SparseAdam is lazy).
                total = total + self.cfg.renderer.anchor_penalty * self.renderer.drift(self.anchor)
            probe_correct = None
            if self.probe is not None:  # a separate graph on detached statistics: it never shapes the renderer
                probe_logits = self.probe(colour_statistics(images, self.cfg.renderer.background_color[0]))
                total = total + torch.nn.functional.cross_entropy(probe_logits, ids)
                probe_correct = (probe_logits.argmax(1) == ids).float().mean()
            acc.backward(total)

            norms = {}
            if acc.sync_gradients:
                if self.trainable_renderer:
                    rows = average_row_gradients(self.renderer.parameters(), acc)
                    norms["perf/renderer_rows_synced"] = torch.tensor(float(rows))
                acc.unscale_gradients()  # once for all optimisers (fp16); no-op otherwise
                clip = self.cfg.optim.clip_grad or math.inf
                norms["grad_norm/classifier"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                if self.trainable_renderer:
                    norms["grad_norm/renderer"] = clip_sparse_grad_norm_(self.renderer.parameters(), clip)
            for opt in (self.optimizer, self.renderer_optimizer, self.probe_optimizer):
                if opt is not None:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            self.step += 1
            for scheduler in self.schedulers:
                scheduler.step_update(self.step)
        if timed:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        metrics = {"train/loss": loss.detach(), "train/acc": (logits.argmax(1) == ids).float().mean().detach(),
                   **{k: v.detach() for k, v in norms.items()}}
        if probe_correct is not None:
            metrics["probe/train_acc"] = probe_correct.detach()
        return {"seconds": seconds, "render_seconds": render_seconds, **metrics}

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch, rendered or read: ``(B, 3, H, W)`` float32 in [0, 1] and ``(B,)`` class ids."""
        device, b = self.accelerator.device, self.cfg.train.batch_size
        if self.static is None:
            ids, seeds = self.stream.draw(b)
            ids, seeds = ids.to(device), seeds.to(device)
            images = self.renderer(ids, seeds)  # float32, outside autocast
            if self.cfg.data.quantize:  # 8-bit values forward, straight-through gradients backward
                images = images + (quantize(images).float() / 255 - images).detach()
        else:
            if self.loader is None:  # created on first use, so that a resume starts it at the right batch
                self.loader = iter(static_loader(self.static, self.stream, b, self.stream.index, self.cfg.data.workers))
            pixels, ids, seeds = next(self.loader)
            self.stream.index += 1
            ids = ids.to(device)
            images = pixels.to(device, non_blocking=True).float() / 255
        if self.first_batch is None:
            self.first_batch = seeds[:4].tolist()
        return images, ids

    def render_eval(self, ids: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Held-out views, through the same 8-bit rounding as training images when those are 8-bit."""
        images = self.renderer(ids, seeds)
        if self.cfg.data.quantize or self.static is not None:
            images = quantize(images).float() / 255
        return images

    # ----------------------------------------------------------------------------------------------------
    # Evaluation, images, checkpoints
    # ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss, top-1 and top-5 on held-out views (and the probe's accuracy), over all processes."""
        acc, b = self.accelerator, self.cfg.train.batch_size
        self.model.eval()
        if self.probe is not None:
            self.probe.eval()
        rows = []
        for i in range(0, len(self.eval_ids), b):
            ids = self.eval_ids[i:i + b].to(acc.device)
            images = self.render_eval(ids, self.eval_seeds[i:i + b].to(acc.device))
            logits = self.model(self.normalize(images)).float()
            loss = torch.nn.functional.cross_entropy(logits, ids, reduction="none")
            top5 = logits.topk(min(5, self.num_classes), dim=1).indices
            row = [loss, (top5[:, 0] == ids).float(), (top5 == ids[:, None]).any(1).float()]
            if self.probe is not None:
                stats = colour_statistics(images, self.cfg.renderer.background_color[0])
                row.append((self.probe(stats).argmax(1) == ids).float())
            rows.append(torch.stack(row, 1))
        gathered = acc.gather_for_metrics(torch.cat(rows)).mean(0).tolist()
        self.model.train()
        if self.probe is not None:
            self.probe.train()
        names = ["val/loss", "val/top1", "val/top5", "probe/val_acc"]
        return dict(zip(names, gathered))

    def log_images(self) -> None:
        if self.writer is None:
            return
        renderer = self.renderer
        grid = render_grid(renderer, self.grid_ids.to(self.accelerator.device),
                           self.grid_seeds.to(self.accelerator.device), nrow=4)
        self.writer.add_image("renders", grid, self.step)
        with torch.no_grad():
            self.writer.add_histogram("renderer/radii", renderer.radii().float().cpu(), self.step)
            self.writer.add_histogram("renderer/colors", renderer.colors().float().cpu(), self.step)

    def renderer_checksums(self) -> list[float]:
        """A float64 checksum of the rendering parameters from every process (they must agree)."""
        with torch.no_grad():
            total = sum(p.double().sum() * (i + 1) for i, p in enumerate(self.renderer.parameters()))
            mine = torch.as_tensor(total, dtype=torch.float64, device=self.accelerator.device).reshape(1)
        sums = self.accelerator.gather(mine).tolist()
        if len(set(sums)) > 1:
            raise RuntimeError(f"rendering parameters differ across processes at step {self.step}: {sums}")
        return sums

    def save_checkpoint(self) -> Path:
        """``save_state`` into a temporary folder, then a rename: an interrupted save never looks complete."""
        acc = self.accelerator
        self.renderer_checksums()
        tmp = checkpoint.temporary_path(self.output_dir, self.step)
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        path = tmp.parent / f"step_{self.step:07d}"
        if acc.is_main_process:
            path = checkpoint.finalize(tmp, self.step, self.fingerprint(), self.cfg.train.keep_checkpoints)
        acc.wait_for_everyone()
        self.last_checkpoint = path
        return path

    def resume(self, resume: str) -> None:
        """Restores a checkpoint (``"latest"`` or a folder) made by a run with the same settings."""
        path = checkpoint.resolve(self.output_dir, resume)
        step = checkpoint.read_state(path, self.fingerprint())
        try:
            self.accelerator.load_state(str(path))
        except Exception as err:  # truncated or foreign files surface as many exception types
            raise checkpoint.CheckpointError(
                f"checkpoint '{path}' could not be loaded ({type(err).__name__}: {str(err)[:300]}); resume from "
                "another checkpoint or start afresh") from err
        self.step, self.last_checkpoint = step, path
        self.accelerator.print(f"resumed from {path} at step {step}")

    # ----------------------------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Trains to ``train.max_steps`` optimiser steps; returns the final summary (also ``summary.json``)."""
        acc, t = self.accelerator, self.cfg.train
        bar = tqdm(total=t.max_steps, initial=self.step, desc=f"train ({self.mode})", unit="step",
                   disable=not (acc.is_main_process and t.progress), dynamic_ncols=True)
        images_per_micro_batch = t.batch_size * acc.num_processes
        window = {"seconds": 0.0, "render_seconds": 0.0, "images": 0}  # since the last log line
        run = {"seconds": 0.0, "images": 0}  # the whole run, for summary.json
        last_eval: dict[str, float] = {}
        if self.step == 0:
            self.log_images()
        while self.step < t.max_steps:
            before = self.step
            out = self.train_step()
            seconds = out.pop("seconds")
            window["seconds"] += seconds
            window["render_seconds"] += out.pop("render_seconds")
            window["images"] += images_per_micro_batch
            run["seconds"] += seconds
            run["images"] += images_per_micro_batch
            if self.step == before:
                continue  # inside an accumulation
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                scalars = {k: float(acc.reduce(v.to(acc.device).float(), "mean")) for k, v in out.items()}
                scalars["perf/images_per_s"] = window["images"] / max(window["seconds"], 1e-9)
                scalars["perf/render_share"] = window["render_seconds"] / max(window["seconds"], 1e-9)
                scalars["lr/classifier"] = self.optimizer.param_groups[0]["lr"]
                if self.renderer_optimizer is not None:
                    scalars["lr/renderer"] = self.renderer_optimizer.param_groups[0]["lr"]
                acc.log(scalars, step=self.step)
                bar.set_postfix(loss=f"{scalars['train/loss']:.3f}", img_s=f"{scalars['perf/images_per_s']:.0f}")
                window = {"seconds": 0.0, "render_seconds": 0.0, "images": 0}
            if self.step % t.eval_every == 0 or self.step == t.max_steps:
                last_eval = self.evaluate()
                acc.log(last_eval, step=self.step)
            if self.step % t.image_every == 0 or self.step == t.max_steps:
                self.log_images()
            if self.step % t.ckpt_every == 0 or self.step == t.max_steps:
                self.save_checkpoint()
        bar.close()
        summary = {"step": self.step, "num_processes": acc.num_processes, "total_batch": self.total_batch,
                   "lr": self.lr, "mode": self.mode, "source": self.cfg.data.source,
                   "images_per_s": run["images"] / max(run["seconds"], 1e-9), **last_eval,
                   "renderer_checksums": self.renderer_checksums(),
                   "first_view_seeds": acc.gather(torch.tensor(self.first_batch or [0] * 4,
                                                               device=acc.device)).view(acc.num_processes, -1).tolist(),
                   "last_checkpoint": str(self.last_checkpoint)}
        if acc.is_main_process:
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            hparams = {"mode": self.mode, "model": self.cfg.model.name, "classes": self.num_classes,
                       "image_size": self.image_size, "total_batch": self.total_batch, "lr": self.lr,
                       "steps": self.step, "renderer_lr": self.cfg.renderer.lr}
            metrics = {f"hparam/{k.replace('/', '_')}": v for k, v in last_eval.items()}
            if self.writer is not None and metrics:
                self.writer.add_hparams(hparams, metrics, run_name=".")
        acc.wait_for_everyone()
        self.release_ddp()
        acc.end_training()  # destroys the process group
        return summary

    def release_ddp(self) -> None:
        """Drops the DDP wrappers (keeping the plain modules) while the process group is still registered.

        Left to interpreter exit, freeing DDP's reducer drops the last reference to the gloo process group, whose
        destructor joins a worker thread that may itself wait for the GIL the exiting thread holds: a hang
        observed in 2-process CPU runs (py-spy: ~ProcessGroupGloo -> thread::join vs ~AsyncAllgatherWork ->
        gil_scoped_acquire).
        """
        self.model = self.accelerator.unwrap_model(self.model)
        if self.probe is not None:
            self.probe = self.accelerator.unwrap_model(self.probe)
        self.accelerator.free_memory()  # Accelerate's own references to the wrapped modules
        gc.collect()
