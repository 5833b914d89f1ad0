"""``fit``: the step-based loop, with evaluation, TensorBoard logging and checkpoints as calls."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from dr_fdsl import checkpoint
from dr_fdsl.config import save_config
from dr_fdsl.engine.build import Run, open_batches, start_tensorboard
from dr_fdsl.engine.interrupt import StopRequest
from dr_fdsl.engine.step import set_learning_rates, train_step, weights_finite, what_to_resume
from dr_fdsl.errors import CheckpointError, IntegrityError, NonFiniteLossError, is_write_fault
from dr_fdsl.render import image_grid
from dr_fdsl.static import quantize
from dr_fdsl.textlog import Progress, add_hparams


def fit(run: Run) -> dict:
    """Trains to ``train.max_steps`` optimiser steps; returns the final summary (also ``summary.json``)."""
    accelerator, t = run.accelerator, run.cfg.train
    start_tensorboard(run)
    bar = tqdm(total=t.max_steps, initial=run.state.step, desc=f"train ({run.mode.name})", unit="step",
               dynamic_ncols=True, disable=not (accelerator.is_main_process and t.progress))
    images_per_micro_batch = t.batch_size * accelerator.num_processes
    window = {"seconds": 0.0, "render_seconds": 0.0, "images": 0}  # since the last log line
    total = {"seconds": 0.0, "images": 0}  # the whole run, for summary.json
    last_eval: dict[str, float] = {}
    progress = Progress(f"train ({run.mode.name})", t.max_steps, run.state.step)
    if run.state.step == 0:
        log_images(run)
    with StopRequest() as stop:
        while run.state.step < t.max_steps:
            stop.check(accelerator)  # Ctrl-C lands here, between micro-steps (dr_fdsl/engine/interrupt.py)
            before = run.state.step
            out = train_step(run)
            for meter in (window, total):
                meter["seconds"] += out["seconds"]
                meter["images"] += images_per_micro_batch
            window["render_seconds"] += out["render_seconds"]
            if run.state.step == before:
                continue  # inside an accumulation
            bar.update(1)
            last = run.state.step == t.max_steps
            if run.state.step % t.log_every == 0 or last:
                scalars = log_scalars(run, out, window)
                bar.set_postfix(loss=f"{scalars['train/loss']:.3f}", img_s=f"{scalars['perf/images_per_s']:.0f}")
                say(run, progress.line(run.state.step, **_shown(scalars)))
                window = {"seconds": 0.0, "render_seconds": 0.0, "images": 0}
            if run.state.step % t.eval_every == 0 or last:
                last_eval = evaluate(run)
                accelerator.log(last_eval, step=run.state.step)
                say(run, f"evaluation at step {run.state.step}: "
                    + ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items()))
            if run.state.step % t.image_every == 0 or last:
                log_images(run)
            if run.state.step % t.ckpt_every == 0 or last:
                say(run, f"checkpoint {save_checkpoint(run)}")
    bar.close()
    return finish(run, last_eval, total)


def say(run: Run, line: str) -> None:
    """A line in ``output_dir/log.txt`` (main process; on the console too when no progress bar is drawn)."""
    if run.log is not None:
        run.log.say(line)


def _shown(scalars: dict[str, float]) -> dict[str, float]:
    """The scalars of a progress line: losses, throughput and learning rates (the rest is in TensorBoard)."""
    return {k.split("/", 1)[-1] if k.startswith("train/") else k: v for k, v in scalars.items()
            if k.startswith(("train/", "lr/")) or k == "perf/images_per_s"}


def log_scalars(run: Run, out: dict, window: dict) -> dict[str, float]:
    """Averages the step's metrics over processes and logs them with throughput and learning rates."""
    accelerator = run.accelerator
    metrics = {k: v for k, v in out.items() if k not in ("seconds", "render_seconds")}
    scalars = {k: float(accelerator.reduce(v.to(accelerator.device).float(), "mean")) for k, v in metrics.items()}
    scalars["perf/images_per_s"] = window["images"] / max(window["seconds"], 1e-9)
    scalars["perf/render_share"] = window["render_seconds"] / max(window["seconds"], 1e-9)
    scalars["lr/backbone"] = run.objective.optimizer.param_groups[0]["lr"]
    scalars.update(run.mode.scalars())  # lr/renderer when the tables train
    scalars.update(run.renderer.table_statistics())  # drift and label-code spread of colours and radii (the same on
    # every process: the tables are)
    accelerator.log(scalars, step=run.state.step)
    return scalars


def render_eval(run: Run, ids: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Held-out views, through the same 8-bit rounding as the training images when those are 8-bit."""
    return as_training_images(run, run.renderer(ids, seeds))


def as_training_images(run: Run, images: torch.Tensor) -> torch.Tensor:
    """``images`` rounded to 8 bits when the training images are (a static dataset or ``data.quantize``)."""
    if run.cfg.data.quantize or run.static is not None:
        images = quantize(images).float() / 255
    return images


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """The objective's metrics on the held-out views, averaged over all processes."""
    accelerator, b = run.accelerator, run.cfg.train.batch_size
    ids, seeds = run.eval_views
    run.objective.train(False)
    rows, mode_rows = [], []
    for i in range(0, len(ids), b):
        batch_ids, batch_seeds = ids[i:i + b].to(accelerator.device), seeds[i:i + b].to(accelerator.device)
        images = render_eval(run, batch_ids, batch_seeds)
        rows.append(run.objective.evaluate(images, batch_ids, batch_seeds))
        mode_rows.append(run.mode.evaluate(images, batch_ids))
    values = run.objective.summarize(accelerator.gather_for_metrics(torch.cat(rows)))
    if run.mode.eval_names:  # the mode's own (teach: its teacher's top-1)
        values.update(zip(run.mode.eval_names, accelerator.gather_for_metrics(torch.cat(mode_rows)).mean(0).tolist()))
    run.objective.train(True)
    return values


def log_images(run: Run) -> None:
    """A grid of held-out renders, the objective's own grids of them (``Objective.image_grids``) and histograms of
    the rendering parameters (main process)."""
    if run.writer is None:
        return
    ids, seeds = (t.to(run.accelerator.device) for t in run.grid_views)
    with torch.no_grad():
        images = run.renderer(ids, seeds)  # rendered once for every grid below
    grid = image_grid(images, nrow=4)
    run.writer.add_image("renders", grid, run.state.step)
    run.mode.log_images(run.writer, grid, len(ids), 4, run.state.step)  # the mode's own (match: beside the targets)
    with torch.no_grad():
        grids = run.objective.image_grids(as_training_images(run, images), ids, seeds)
    for name, grid in grids.items():  # the objective's own (e.g. corrupted / reconstructed / clean)
        run.writer.add_image(name, grid, run.state.step)
    with torch.no_grad():
        run.writer.add_histogram("renderer/radii", run.renderer.radii().float().cpu(), run.state.step)
        run.writer.add_histogram("renderer/colors", run.renderer.colors().float().cpu(), run.state.step)


def renderer_checksums(run: Run) -> list[float]:
    """A float64 checksum of the rendering parameters from every process (they must agree)."""
    with torch.no_grad():
        local = sum(p.double().sum() * (i + 1) for i, p in enumerate(run.renderer.parameters()))
        mine = torch.as_tensor(local, dtype=torch.float64, device=run.accelerator.device).reshape(1)
    sums = run.accelerator.gather(mine).tolist()
    if len(set(sums)) > 1:
        raise RuntimeError(f"rendering parameters differ across processes at step {run.state.step}: {sums}")
    return sums


def _why_not_good(run: Run) -> str | None:
    """None when every process's weights are good, that is finite and with a finite loss on held-out views (1e28
    weights are finite, yet overflow to NaN in the first normalisation); else what is wrong. A collective."""
    if not _all_ok(run, weights_finite(run)):
        return "weights are not finite"
    if not _all_ok(run, _held_out_loss_finite(run)):
        return "weights give a non-finite loss on held-out views"
    return None


PROBE_VIEWS = 2


@torch.no_grad()
def _held_out_loss_finite(run: Run) -> bool:
    """The objective's evaluation values on this process's first ``PROBE_VIEWS`` held-out views are finite (weights
    that overflow do so on any image; a few cost a fraction of a step). The leakage probe's columns (``probe/...``)
    are left out: the probe is a diagnostic whose divergence is reported as such (NaN accuracy, ``probe/diverged``)
    and never stops training.

    Evaluation mode, as ``evaluate`` (no dropout, no batch-norm update), and on a copy of the global random
    streams, so that the check changes no training step (resume stays bit-exact)."""
    accelerator = run.accelerator
    ids, seeds = (t[:PROBE_VIEWS].to(accelerator.device) for t in run.eval_views)
    if len(ids) == 0:
        return True
    run.objective.train(False)
    try:
        with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
            values = run.objective.evaluate(render_eval(run, ids, seeds), ids, seeds)
    finally:
        run.objective.train(True)
    names = run.objective.eval_names  # columns past them (multilabel's scores) are the model's
    model = [i for i in range(values.shape[1]) if i >= len(names) or not names[i].startswith("probe/")]
    return bool(torch.isfinite(values[:, model]).all())


def _newest_complete(run: Run) -> str:
    found = checkpoint.list_checkpoints(run.output_dir)
    newest = run.state.last_checkpoint or (found[-1] if found else None)
    return f"the newest complete checkpoint is {newest}" if newest else "no complete checkpoint was written yet"


def _all_ok(run: Run, ok: bool) -> bool:
    """Whether every process succeeded (a collective: each process must call it at the same point)."""
    flags = run.accelerator.gather(torch.tensor([ok], device=run.accelerator.device))
    return bool(flags.all())


def save_checkpoint(run: Run) -> Path:
    """``save_state`` plus the renderer, the trainer state and, last, the manifest into a temporary folder, then
    a rename.

    Only good weights are saved: finite, with a finite loss on held-out views (every process's). Processes agree
    on success before going on, so a failure on one (disk full, folder not writable) is an error on all, not a
    wait at the next barrier; a storage failure is one ``CheckpointError`` line naming the newest complete
    checkpoint.
    """
    accelerator = run.accelerator
    renderer_checksums(run)
    run.objective.before_checkpoint()  # e.g. a diverged leakage probe restarts: diagnostics never stop training
    why = _why_not_good(run)  # a checkpoint named as "good" must be good
    if why:
        raise NonFiniteLossError(f"{why} at step {run.state.step}; not saved; {what_to_resume(run)}")
    tmp = checkpoint.temporary_path(run.output_dir, run.state.step)
    path, problem = checkpoint.step_path(run.output_dir, run.state.step), None
    if accelerator.is_main_process and tmp.exists():  # left by an interrupted save: none of its files may slip in
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process and run.renderer_optimizer is not None:
            save_file({k: v.contiguous().cpu() for k, v in run.renderer.state_dict().items()},
                      str(tmp / checkpoint.RENDERER_FILE))
        # identical on every process (teach: teacher, replay)
        if accelerator.is_main_process and run.mode.state_tensors():
            save_file({k: v.contiguous().cpu() for k, v in run.mode.state_tensors().items()},
                      str(tmp / checkpoint.MODE_FILE))
    except Exception as err:  # storage failures arrive as several types (errors.is_write_fault); others go on
        if not is_write_fault(err):
            raise
        problem = err
    if _all_ok(run, problem is None) and accelerator.is_main_process:
        state = {"step": run.state.step, "stream_index": run.order.index,
                 "fingerprint": checkpoint.fingerprint(run.cfg, accelerator.num_processes), **run.mode.positions()}
        if run.objective.trainer_state():
            state["objective"] = run.objective.trainer_state()
        try:
            path = checkpoint.finalize(tmp, state, run.cfg.train.keep_checkpoints, run.state.run_id)
        except (OSError, CheckpointError, IntegrityError) as err:  # every process must reach the vote below
            problem = err
    if not _all_ok(run, problem is None):  # the previous checkpoints are untouched
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        cause = f"{type(problem).__name__}: {str(problem).strip().splitlines()[-1][:300]}" if problem else \
            "failed on another process"
        raise CheckpointError(f"could not write checkpoint '{path}' ({cause}); {_newest_complete(run)}: free space "
                              "or choose another output_dir, then --resume latest") from problem
    run.state.last_checkpoint = path
    return path


def _weight_files(run: Run) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint's safetensors files and the state dicts they load into, as Accelerate names and fills them
    (``model.safetensors``, ``model_1.safetensors``, ... for the prepared models in order, shared tensors removed),
    plus the renderer's tables when they train."""
    from accelerate.utils import clean_state_dict_for_safetensors

    accelerator = run.accelerator
    files = {}
    for i, model in enumerate(accelerator._models):  # what save_state and load_state iterate over, in their order
        name = checkpoint.MODEL_FILE if i == 0 else checkpoint.MODEL_FILE.replace(".", f"_{i}.")
        files[name] = clean_state_dict_for_safetensors(accelerator.get_state_dict(model, unwrap=False))
    if run.renderer_optimizer is not None:
        files[checkpoint.RENDERER_FILE] = run.renderer.state_dict()
    if run.mode.state_tensors():
        files[checkpoint.MODE_FILE] = run.mode.state_tensors()
    return files


def resume(run: Run, where: str, allow_inexact: bool = False) -> None:
    """Restores a checkpoint (``"latest"`` or a folder) made by a run with the same settings.

    Restored: weights, optimiser moments, every process's random state, the view order, the step. From the
    current config: the learning-rate schedules and every optimiser hyper-parameter (weight decay, betas, the
    probe's lr), so ``train.max_steps``, ``optim.lr`` or ``optim.weight_decay`` may change on resume. The resumed
    run's config is written to ``output_dir/config.yaml`` once the checkpoint is accepted.

    Nothing is trusted unchecked: every file against the manifest (``checkpoint.read_state``), every safetensors
    header against the state dict it loads into (names, dtypes, shapes, a layout that tiles the data), and the
    loaded weights for finiteness; each refusal is one ``IntegrityError`` naming the file.
    """
    accelerator = run.accelerator
    path = checkpoint.resolve(run.output_dir, where)
    state = checkpoint.read_state(path, run.cfg, accelerator.num_processes, allow_inexact)
    run.mode.restore_positions(state)  # first: it sizes the mode's tensors that the checkpoint fills
    checkpoint.check_weight_headers(path, _weight_files(run), digests=state["unchecked"] is None)
    optimizers = [o for o in (*run.objective.optimizers(), run.renderer_optimizer) if o is not None]
    configured = [[{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for o in optimizers]
    try:
        accelerator.load_state(str(path))
        if run.renderer_optimizer is not None:
            run.renderer.load_state_dict(load_file(str(path / checkpoint.RENDERER_FILE), device="cpu"))
        if run.mode.state_tensors():
            run.mode.load_state_tensors(load_file(str(path / checkpoint.MODE_FILE), device=str(accelerator.device)))
    except Exception as err:  # truncated or foreign files surface as many exception types
        raise CheckpointError(
            f"checkpoint '{path}' could not be loaded ({type(err).__name__}: {str(err)[:300]}); resume from "
            "another checkpoint or start afresh") from err
    checkpoint.refuse_non_finite(path, _weight_files(run))
    for optimizer, groups in zip(optimizers, configured):  # the moments are the checkpoint's, the settings ours
        for group, settings in zip(optimizer.param_groups, groups):
            group.update(settings)
    run.state.step, run.order.index, run.state.last_checkpoint = int(state["step"]), int(state["stream_index"]), path
    open_batches(run)  # the static loader, from the restored position
    run.state.run_id = state.get("run_id") or run.state.run_id  # pruning goes on over the run's own checkpoints
    run.objective.load_trainer_state(state.get("objective", {}))
    set_learning_rates(run)
    if accelerator.is_main_process:
        save_config(run.cfg, run.output_dir / "config.yaml")
    if state["unchecked"]:
        accelerator.print(f"warning: {state['unchecked']}")
    for problem in state["inexact"]:
        accelerator.print(f"warning: resuming inexactly: {problem}")
    accelerator.print(f"resumed from {path} at step {run.state.step}")
    if run.log is not None:
        run.log.say(f"resumed from {path} at step {run.state.step}", file_only=True)


def finish(run: Run, last_eval: dict, total: dict) -> dict:
    """Writes ``summary.json`` and the hyper-parameters; releases the DDP wrappers (not the process group)."""
    accelerator = run.accelerator
    seeds = run.order.batch(0, run.cfg.train.batch_size)[1][:4]  # this process's first, from its stream
    summary = {"output_dir": str(run.output_dir), "step": run.state.step, "num_processes": accelerator.num_processes,
               "total_batch": run.total_batch, "lr": run.lr, "mode": run.mode.name,
               "objective": run.cfg.train.objective, "source": run.cfg.data.source,
               "images_per_s": total["images"] / max(total["seconds"], 1e-9), **last_eval,
               **run.renderer.table_statistics(),
               "renderer_checksums": renderer_checksums(run),
               "first_view_seeds": accelerator.gather(seeds.to(accelerator.device)).view(accelerator.num_processes,
                                                                                        -1).tolist(),
               "last_checkpoint": str(run.state.last_checkpoint)}
    if accelerator.is_main_process:
        (run.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        say(run, f"done: {run.state.step} steps, {summary['images_per_s']:.1f} images/s; summary.json written")
        r = run.cfg.renderer
        hparams = {"mode": run.mode.name, "objective": run.cfg.train.objective, "family": run.cfg.bank.family,
                   "seed": run.cfg.seed, "raster_backend": r.raster_backend, "model": run.cfg.model.name,
                   "classes": run.num_classes, "image_size": r.image_size, "total_batch": run.total_batch,
                   "lr": run.lr, "steps": run.state.step, "renderer_lr": r.lr}
        if run.writer is not None and last_eval:  # the metrics: the evaluation's own tags, last logged just now
            add_hparams(run.writer, hparams, list(last_eval))
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # flush and close TensorBoard; the process group stays up (the launcher's)
        tracker.finish()
    if run.log is not None:
        run.log.close()
    release(run)
    return summary


def release(run: Run) -> None:
    """Drops the DDP wrappers (keeping the plain modules) while the process group is still registered.

    Left to interpreter exit, freeing DDP's reducer drops the last reference to the gloo process group, whose
    destructor joins a worker thread that may itself wait for the GIL the exiting thread holds: a hang observed
    in 2-process CPU runs (py-spy: ~ProcessGroupGloo -> thread::join vs ~AsyncAllgatherWork -> gil_scoped_acquire).
    The process group itself is the entry script's to destroy (``accelerator.end_training()``), so that one launch
    can run several trainings.
    """
    run.objective.unwrap(run.accelerator)
    run.accelerator.free_memory()  # Accelerate's own references to the wrapped modules
    gc.collect()
