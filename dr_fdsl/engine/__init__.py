"""Training under Accelerate: ``build_run`` (config -> objects), the step's parts (``step``), ``fit`` (loop)."""

from dr_fdsl.engine.build import Run, build_run
from dr_fdsl.engine.loop import evaluate, fit, resume, save_checkpoint
from dr_fdsl.engine.step import Batch, forward_backward, optimizer_step, render_batch, train_step

__all__ = ["Batch", "Run", "build_run", "evaluate", "fit", "forward_backward", "optimizer_step", "render_batch",
           "resume", "save_checkpoint", "train_step"]
