"""The training step in callable parts: render (or read) a batch, the objective's forward and backward, and the
optimiser updates. ``train_step`` composes them; ``tools/bench.py`` times these same functions.

Which gradient reaches the renderer is the renderer mode's (``run.mode``, ``dr_fdsl/modes/``): ``forward_backward``
hands it the batch and the objective's loss, and backpropagates the total it returns.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch

from dr_fdsl import checkpoint
from dr_fdsl.engine.build import Run
from dr_fdsl.errors import DatasetError, NonFiniteLossError
from dr_fdsl.objectives.base import ObjectiveOutput
from dr_fdsl.sparse_sync import average_row_gradients, clip_sparse_grad_norm_
from dr_fdsl.static import quantize


class Batch(NamedTuple):
    """images: ``(B, 3, H, W)`` float32 in [0, 1]; class_ids, view_seeds: ``(B,)`` int64; rows: ``(R,)`` the
    rendering-table rows the images read (empty for a static batch)."""

    images: torch.Tensor
    class_ids: torch.Tensor
    view_seeds: torch.Tensor
    rows: torch.Tensor


def render_batch(run: Run) -> Batch:
    """The next micro-batch of this process's stream, rendered in the loop or read from the static dataset."""
    device, b = run.accelerator.device, run.cfg.train.batch_size
    if run.static is None:
        ids, seeds = (t.to(device) for t in run.order.draw(b))
        copies = run.cfg.data.repeated_aug  # adjacent copies of one (category, view seed): one render, repeated
        images, rows = run.renderer.render(ids[::copies], seeds[::copies])  # float32, outside autocast
        if copies > 1:  # renders are batch-independent bit for bit, so this is the batch rendered copy by copy
            images = images.repeat_interleave(copies, dim=0)
        if run.cfg.data.quantize:  # 8-bit values forward, straight-through gradients backward
            images = images + (quantize(images).float() / 255 - images).detach()
        return Batch(images, ids, seeds, rows)
    try:
        pixels, ids, seeds = next(run.state.batches)  # opened at the stream's position (build.open_batches)
    except DatasetError as err:  # raised in a worker: its message carries the worker's traceback; keep the cause
        raise DatasetError(str(err).strip().splitlines()[-1].split("DatasetError: ", 1)[-1]) from None
    expected = run.order.draw(b)  # the loader's workers read ahead from the same counter-based stream
    if not (torch.equal(ids, expected[0]) and torch.equal(seeds, expected[1])):
        raise RuntimeError(f"static loader out of step with the view order at micro-batch {run.order.index - 1}")
    images = pixels.to(device, non_blocking=True).float() / 255
    return Batch(images, ids.to(device), seeds, ids.new_zeros(0))


def forward_backward(run: Run, batch: Batch) -> ObjectiveOutput:
    """The objective on a batch, the renderer's mode applied (``RendererMode.losses``), and the backward pass
    (scaled for accumulation). A non-finite loss or mode term stops the run, naming a checkpoint to resume."""
    step = run.state.step + 1

    def stop(what: str, detail: str = "", remedy: str = "a lower optim.lr"):
        raise NonFiniteLossError(f"{what} at step {step}{detail}; training stopped; {what_to_resume(run, remedy)}")

    def objective_loss(images: torch.Tensor) -> ObjectiveOutput:
        out = run.objective.loss(images, batch.class_ids, batch.view_seeds.to(images.device))
        if not torch.isfinite(out.loss.detach()).item():
            stop(f"loss is {out.loss.item()}")
        return out

    out, total = run.mode.losses(batch, objective_loss, stop)
    run.accelerator.backward(total)
    return out


def weights_finite(run: Run) -> bool:
    """Whether every parameter of the objective's networks and of the renderer is finite (this process's)."""
    modules = [*run.objective.modules(), run.renderer]
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


REMEDIES = ("a larger optim.warmup_steps, optim.clip_grad > 0, or train.mixed_precision=no/bf16 (the schedule "
            "follows the config on resume)")


def what_to_resume(run: Run, remedy: str = "a lower optim.lr") -> str:
    """Advice after a non-finite value at step ``run.state.step + 1``, naming only a checkpoint that can help.

    A good checkpoint holds finite weights whose loss was finite: ``save_checkpoint`` writes no other, and resume
    refuses non-finite weights. But when no step has run since ``run.state.last_checkpoint`` was saved or resumed and
    the weights are finite, they are that checkpoint's and gave this value: resuming it (bit-exactly, the same
    batch) would fail at once, whatever the lr, so it is not named as good.
    """
    last = run.state.last_checkpoint
    if last is None:
        return f"no checkpoint yet: start the run again with {remedy}, {REMEDIES}"
    if run.state.step == checkpoint.step_of(last) and weights_finite(run):
        return (f"these are the weights of checkpoint '{last}' (no step since it), so it is no good checkpoint: "
                f"move it out of checkpoints/ and --resume latest (the checkpoint before it) with {remedy}, or start "
                f"the run again with {remedy}, {REMEDIES}")
    return f"last good checkpoint: {last}; resume it with --resume {last} and {remedy}, {REMEDIES}"


def optimizer_step(run: Run) -> dict[str, torch.Tensor]:
    """Steps every optimiser (Accelerate skips the step inside an accumulation); at a real step, first averages
    the renderer's sparse gradients across processes and clips. Returns gradient norms to log."""
    accelerator = run.accelerator
    norms: dict[str, torch.Tensor] = {}
    if accelerator.sync_gradients:
        if run.renderer_optimizer is not None:
            rows = average_row_gradients(run.renderer.parameters(), accelerator)
            norms["perf/renderer_rows_synced"] = torch.tensor(float(rows))
        accelerator.unscale_gradients()  # once for all optimisers (fp16); no-op otherwise
        clip = run.cfg.optim.clip_grad or math.inf
        norms.update(run.objective.clip_gradients(clip))
        if run.renderer_optimizer is not None:
            norms["grad_norm/renderer"] = clip_sparse_grad_norm_(run.renderer.parameters(), clip)
    changed = run.renderer.changed_rows() if run.renderer_optimizer is not None else None
    for opt in (*run.objective.optimizers(), run.renderer_optimizer):
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
    if run.renderer_optimizer is not None:
        run.renderer.project_(changed)  # the rows the step moved, back into their bounds
    return norms


def set_learning_rates(run: Run) -> None:
    """The schedules' values at ``run.state.step`` (from the current config: also right after a resume)."""
    for scheduler in run.schedulers:
        scheduler.step_update(run.state.step)


def train_step(run: Run) -> dict:
    """One micro-batch; an optimiser step when it completes an accumulation. Returns detached metrics and the
    seconds spent (``seconds``, of which ``render_seconds`` producing the batch)."""
    accelerator = run.accelerator
    # Synchronising CUDA splits render time from the rest; only on steps that are logged (it stalls the queue).
    timed = accelerator.device.type == "cuda" and (run.state.step + 1) % run.cfg.train.log_every == 0
    start = time.perf_counter()
    with accelerator.accumulate(*run.objective.modules()):
        batch = render_batch(run)
        if timed:
            torch.cuda.synchronize()
        render_seconds = time.perf_counter() - start
        out = forward_backward(run, batch)
        norms = optimizer_step(run)
    if accelerator.sync_gradients:
        run.state.step += 1
        set_learning_rates(run)
    if timed:
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "render_seconds": render_seconds, **out.metrics,
            **{k: v.detach() for k, v in norms.items()}}
