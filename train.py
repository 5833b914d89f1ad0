"""Pre-train on formula-generated images rendered in the training step.

    accelerate launch train.py --config configs/quickstart.yaml [train.max_steps=100 renderer.mode=joint ...]
    accelerate launch train.py --config configs/quickstart.yaml --resume latest

Watch it with:  tensorboard --logdir runs/   (output_dir/log.txt has the same progress as plain text)

Keys: every key is a field of the dataclasses in dr_fdsl/config.py (type, default and meaning); --print-config
shows the resolved config with each key's type, default and comment (only the sections this run uses; one section
with --print-config SECTION, e.g. train or bank.ifs3d). --dry-run checks everything and builds nothing.

Exit codes: 0 done; 2 an error the message says how to fix (a config key, a file, a folder in use by another
run, a write that failed: disk full, read-only, file too large); 130 Ctrl-C; 143 SIGTERM (both stop at the next
step; the line says where and which checkpoint to resume).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import sys

from dr_fdsl import run_lock
from dr_fdsl.cli import USER_ERROR, ThreadWriteFaults, report, write_fault
from dr_fdsl.config import add_config_args, load_config
from dr_fdsl.engine import build_run, fit, resume
from dr_fdsl.engine.loop import release
from dr_fdsl.errors import DrFdslError
from dr_fdsl.signals import say_interrupted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder of this run")
    parser.add_argument("--allow-inexact-resume", action="store_true",
                        help="resume even when the random stream cannot be restored exactly (says why)")
    parser.add_argument("--print-config", nargs="?", const="", default=None, metavar="SECTION",
                        help="print the resolved config (or one section) with each key's type, default and comment, "
                             "and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="load and check everything, print where the run would write and what it would "
                             "allocate, and exit without building the bank or writing anything")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on either side of options
    if args.print_config and "=" in args.print_config:  # an override after a bare --print-config, not a section
        args.overrides, args.print_config = [args.print_config, *args.overrides], ""
    if args.print_config is not None or args.dry_run:
        return inspect_config(args)
    run = None
    with ThreadWriteFaults() as thread_faults:
        try:
            cfg = load_config(args.config, args.overrides)  # every check of a value, before any work
            run = build_run(cfg, resume=args.resume)
            if args.resume:
                resume(run, args.resume, allow_inexact=args.allow_inexact_resume)
            summary = fit(run)
            if thread_faults.first is not None:  # a write that failed in a thread and was not raised again
                raise thread_faults.first
        except DrFdslError as err:
            return report(err)
        except KeyboardInterrupt as err:
            # Checkpoints are written then renamed, so the newest one is whole whatever was interrupted.
            where = (f"at step {run.state.step}; last checkpoint: {run.state.last_checkpoint or 'none yet'}. "
                     "Continue with --resume latest" if run else "during set-up")
            return say_interrupted(err, where)
        except (OSError, RuntimeError) as err:  # disk full, read-only, over a size limit: whatever was writing
            fault = write_fault(err, run and run.state.last_checkpoint, run.output_dir if run else None)
            if fault is None:
                raise  # a bug: its traceback is what to read
            print(fault, file=sys.stderr)
            return USER_ERROR
        finally:
            if run is not None:
                close(run)
    if run.accelerator.is_main_process:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith(("val/", "probe/")))
        print(f"done: {summary['step']} steps, {metrics}; logs and checkpoints in {run.cfg.output_dir}")
    return 0


def inspect_config(args) -> int:
    """--print-config and --dry-run: the config loaded and checked as a run would, then printed or tried."""
    from dr_fdsl.config import used_settings
    from dr_fdsl.config_doc import commented_config
    from dr_fdsl.engine.dry_run import dry_run

    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config is not None:
            print(commented_config(cfg, used_settings(cfg), args.print_config or None), end="")
        if args.dry_run:
            print("\n".join(dry_run(cfg, args.resume)))
    except DrFdslError as err:
        return report(err)
    return 0


def close(run) -> None:
    """Whatever way the run ended: DDP's wrappers are dropped (left to the interpreter's exit, they can deadlock in
    gloo: ``loop.release``), trackers closed, the process group destroyed (the entry script's job), the output
    folder's lock released."""
    release(run)
    if run.log is not None:
        run.log.close()
    for tracker in run.accelerator.trackers:  # already closed when fit() ended; after a fault or a stop, not
        try:
            tracker.finish()
        except (OSError, RuntimeError) as err:  # the writer's own fault again, already reported
            if write_fault(err, None) is None:
                raise
    run.accelerator.state.destroy_process_group()
    run_lock.release(run.output_dir)  # the process's exit would too; main() may be called again in one process


if __name__ == "__main__":
    sys.exit(entry(main))
