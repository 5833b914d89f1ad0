"""``build_run``: a :class:`Config` becomes the run's objects, checked before any work, under Accelerate."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, parse_flag_from_env, set_seed
from timm.scheduler.scheduler import Scheduler

from dr_fdsl import checkpoint, run_lock
from dr_fdsl.bank import bank_from_config
from dr_fdsl.config import Config, config_text, save_config, validate_config, validate_device
from dr_fdsl.errors import ConfigError, DrFdslError
from dr_fdsl.modes import MODES
from dr_fdsl.modes.base import RendererMode
from dr_fdsl.objectives import OBJECTIVES
from dr_fdsl.objectives.base import Objective
from dr_fdsl.optim import create_scheduler
from dr_fdsl.render import PointRenderer
from dr_fdsl.static import StaticViews, static_loader
from dr_fdsl.tables import build_renderer, tables_digest
from dr_fdsl.textlog import TextLog
from dr_fdsl.view_order import ViewOrder, held_out_views

# TensorBoard's events go into output_dir itself, so that `tensorboard --logdir runs` names each run after its folder
# (runs/quickstart -> "quickstart"); a resumed run's events join them there, as one run.
TB_DIR = "."


@dataclass
class TrainState:
    """What changes as a run trains (a checkpoint keeps it; ``resume`` restores it). The positions of the view
    stream and of a mode's own streams are their counters (``Run.order.index``, ``RendererMode.positions``)."""

    run_id: str  # the run's id, the same on every process (checkpoint pruning keeps to the run's own)
    step: int = 0  # optimiser steps done
    last_checkpoint: Path | None = None  # the newest checkpoint this run wrote or resumed from
    # Static source: the loader's iterator, opened at the view order's position (``open_batches``); None in-loop.
    batches: Iterator | None = field(default=None, repr=False)


@dataclass
class Run:
    """A run's objects, built once by ``build_run``, and its mutable :class:`TrainState` (``state``)."""

    cfg: Config
    accelerator: Accelerator
    renderer: PointRenderer
    objective: Objective
    mode: RendererMode  # renderer.mode: which gradient reaches the renderer, its optimiser, anchors and logs
    renderer_optimizer: torch.optim.Optimizer | None  # the mode's (SparseAdam on the rendering tables; None: frozen)
    schedulers: list[Scheduler]  # objective's, then renderer's (both from optim)
    order: ViewOrder
    static: StaticViews | None
    eval_views: tuple[torch.Tensor, torch.Tensor]  # this process's held-out (class ids, view seeds)
    grid_views: tuple[torch.Tensor, torch.Tensor]  # the (class ids, view seeds) of the TensorBoard image grid
    writer: Any  # TensorBoard SummaryWriter on the main process once fit() starts (start_tensorboard), else None
    lr: float
    total_batch: int
    state: TrainState
    log: TextLog | None = None  # output_dir/log.txt on the main process (closed by fit's end or the entry script)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def num_classes(self) -> int:
        return self.renderer.num_classes


def start_tensorboard(run: Run) -> None:
    """Opens the run's TensorBoard events (``fit`` does, once the run has started: a start that fails, a resume
    refused, leaves no empty run behind)."""
    if run.writer is None:
        run.accelerator.init_trackers(TB_DIR)
        run.writer = run.accelerator.get_tracker("tensorboard", unwrap=True) if run.accelerator.is_main_process \
            else None


def open_batches(run: Run) -> None:
    """Static source: (re)opens ``run.state.batches`` at the view order's position (at build, and after a resume
    has moved the stream); nothing in-loop. The loader has its own generator: opening it draws on no global one."""
    if run.static is not None:
        run.state.batches = iter(static_loader(run.static, run.order, run.cfg.train.batch_size, run.order.index,
                                               run.cfg.data.workers))


def process_state() -> PartialState:
    """Accelerate's process state, set up as the run's ``Accelerator`` will (CPU mode from ACCELERATE_USE_CPU, so
    that torchrun on CPU gives one gloo group, not independent processes that all think they are main)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _unwritable(folder: str, err: OSError) -> ConfigError:
    return ConfigError(f"config key 'output_dir': '{folder}' cannot be written ({err.strerror or err}); choose "
                       "another folder")


def writable(folder: str) -> None:
    """Creates ``folder`` and writes a file into it, or fails naming ``output_dir`` (before any work)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise _unwritable(folder, err) from err


# How long a run waits for the folder it asked for: another new run may hold it for the instant it takes to see
# that a finished run used it and move on to a numbered one (a live run holds it for good, and is then named).
LOCK_WAIT_S = 2.0


def _lock(folder: str, wait: float = 0.0) -> bool:
    """Takes ``folder``'s run lock; whether this process newly took it (False: it held it already)."""
    held = run_lock.holds(folder)
    try:
        run_lock.lock(folder, wait=wait)
    except OSError as err:
        raise _unwritable(folder, err) from err
    return not held


def lock_free_folder(output_dir: str) -> str:
    """Locks and returns ``output_dir``, or, when a finished run has used it, the first of ``output_dir-2``, ``-3``,
    ... that no run has used (``checkpoint.free_output_dir``'s rule).

    Each folder is locked *before* it is judged free, so two runs starting at the same moment never both take one:
    the folder asked for, when a live run holds it, is refused (:class:`run_lock.FolderLockedError`, naming its
    pid); a numbered folder that another new run has just locked is passed over for the next number.
    """
    folder, number = output_dir, 1
    while True:
        try:
            newly = _lock(folder, wait=LOCK_WAIT_S if folder == output_dir else 0.0)
        except run_lock.FolderLockedError:
            if folder == output_dir:
                raise
            newly = None  # a numbered folder that another new run has just taken
        if newly is not None:
            if checkpoint.free_output_dir(folder) == folder:  # no checkpoints or config of another run there
                return folder
            if newly:
                run_lock.release(folder)
        number += 1
        folder = str(Path(output_dir).parent / f"{Path(output_dir).name}-{number}")


def claim_output_dir(output_dir: str, renumber: bool) -> str:
    """The run's folder, locked by the main process for the rest of its life (``dr_fdsl.run_lock``); a collective:
    every process gets the main process's folder or its refusal (raised on every process). With ``renumber`` (a
    new training run) :func:`lock_free_folder`; without (a resumed run, a fine-tuning) ``output_dir`` itself,
    refused while another live run holds it."""
    state = process_state()  # set up before the collective below
    chosen, problem = None, None
    if state.is_main_process:
        try:
            chosen = lock_free_folder(output_dir) if renumber else output_dir
            if not renumber:
                _lock(output_dir, wait=LOCK_WAIT_S)
        except DrFdslError as err:
            problem = err
        except Exception as err:  # e.g. an unreadable checkpoints/ folder: every process must get past the broadcast
            problem = ConfigError(f"config key 'output_dir': '{output_dir}' cannot be used ({type(err).__name__}: "
                                  f"{err})")
    chosen, problem = broadcast_object_list([chosen, problem])
    if problem is not None:
        problem.on_every_process = True  # the same refusal everywhere: the main process's line is enough
        raise problem
    return chosen


def build_run(cfg: Config, resume: str | None = None) -> Run:
    """Builds a run from a checked config (``load_config`` ran every check of a value).

    Order matters for reproducibility: the shared seed is set, then the objective's networks are initialised
    (identical on every process), then the per-process seed for image augmentations. Inputs that can fail
    (output folder, static dataset, model name and size) are checked before the bank is built.
    """
    validate_config(cfg)  # again: a config may have been changed in Python since it was loaded
    t = cfg.train
    # A new run never writes where another run's checkpoints are (it takes a numbered folder), and no run writes
    # where a live one does (refused): the lock is taken before the folder is judged free.
    chosen = claim_output_dir(cfg.output_dir, renumber=resume is None)
    if chosen != cfg.output_dir:
        process_state().print(f"output_dir '{cfg.output_dir}' holds another run's checkpoints; this run writes "
                              f"to '{chosen}' (continue the other with --resume latest)")
        cfg = dataclasses.replace(cfg, output_dir=chosen)
    writable(cfg.output_dir)
    # Every line of the start (the bank's progress included) goes to log.txt; on the console only when no bar is.
    log = TextLog(cfg.output_dir, console=not t.progress) if process_state().is_main_process else None
    try:
        return _build(cfg, resume, log)
    except BaseException:
        if log is not None:
            log.close()
        raise


def _build(cfg: Config, resume: str | None, log: TextLog | None) -> Run:
    """``build_run`` once the output folder is claimed and its log open."""
    t = cfg.train
    try:
        accelerator = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum,
                          log_with="tensorboard", project_dir=cfg.output_dir, step_scheduler_with_optimizer=False)
    except ValueError as err:  # e.g. fp16 without a GPU
        raise ConfigError(f"config key 'train.mixed_precision': {t.mixed_precision!r} cannot run here ({err})") \
            from err
    # fp16 that would run in float32; sizes past the GPU's memory
    validate_device(cfg, accelerator.device, accelerator.native_amp)
    checkpoint.refuse_to_overwrite(cfg.output_dir, resume)
    if log is not None:
        log.say(f"{'resuming' if resume else 'starting'} a run in {cfg.output_dir} ({accelerator.num_processes} "
                f"process(es), {accelerator.device}); its settings:\n{config_text(cfg)}")
    if cfg.renderer.tables:  # a missing or damaged checkpoint fails before the bank is built
        tables_digest(cfg.renderer.tables)
    static, views = None, cfg.data.views_per_class
    if cfg.data.source == "static":  # a missing, foreign or damaged dataset fails here
        with accelerator.main_process_first():  # every PNG header is read once, by the main process
            static = StaticViews(cfg.data.path, verify=accelerator.is_main_process)
        views = static.check_matches(cfg)  # the views the stream draws from; refuses what the dataset cannot serve
        if static.unchecked_warning():
            accelerator.print(static.unchecked_warning())
    num_classes = cfg.bank.num_classes
    total_batch = t.batch_size * t.grad_accum * accelerator.num_processes
    lr = cfg.optim.lr * total_batch / 512

    set_seed(cfg.seed)  # shared: the networks start identical on every process (renderer tables: init_seed)
    objective = OBJECTIVES.get(t.objective)(cfg, num_classes, lr, accelerator.device)
    # Before the bank is built: mode match reads its target images here (a missing dataset fails first); no mode
    # draws on a global generator.
    mode = MODES.get(cfg.renderer.mode)(cfg, objective, accelerator)
    with accelerator.main_process_first():  # the main process builds and caches the bank, the others read it
        bank = bank_from_config(cfg.bank, progress=accelerator.is_main_process and t.progress)
    renderer = build_renderer(cfg, bank).to(accelerator.device)  # renderer.tables: a trained run's, loaded

    # Prepare what trains, the objective's backbone first (Accelerate saves it as model.safetensors). The renderer
    # stays outside DDP: its row-sparse gradients are averaged row by row (sparse_sync); its SparseAdam goes
    # through prepare like any optimiser.
    objective.prepare(accelerator)
    # after the objective's: Accelerate numbers optimisers in order
    renderer_optimizer = mode.prepare(renderer, accelerator)
    schedulers = [create_scheduler(objective.optimizer, cfg.optim, t.max_steps)]
    if renderer_optimizer is not None:
        schedulers.append(create_scheduler(renderer_optimizer, cfg.optim, t.max_steps))
    set_seed(cfg.seed, device_specific=True)  # per process: image augmentations draw from the global generators

    rows = min(8, num_classes)
    grid = (torch.arange(rows).repeat_interleave(4), -(10**9) - torch.arange(4).repeat(rows))  # held out
    if accelerator.is_main_process and resume is None:  # a resumed run writes it once the checkpoint is accepted
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    run = Run(cfg=cfg, accelerator=accelerator, renderer=renderer, objective=objective, mode=mode,
              renderer_optimizer=renderer_optimizer, schedulers=schedulers,
              order=ViewOrder(cfg.seed, accelerator.process_index, num_classes, views, cfg.data.views_per_category,
                                cfg.data.repeated_aug), static=static,
              eval_views=held_out_views(t.eval_images, num_classes, accelerator.process_index,
                                        accelerator.num_processes),
              grid_views=grid, writer=None, lr=lr, total_batch=total_batch,
              state=TrainState(run_id=broadcast_object_list([checkpoint.new_run_id()])[0]),  # the main process's
              log=log)
    open_batches(run)
    return run
