"""Pre-train on formula-generated images rendered in the training step.

    accelerate launch train.py --config configs/quickstart.yaml [train.max_steps=100 renderer.mode=joint ...]
    accelerate launch train.py --config configs/quickstart.yaml --resume latest

Watch it with:  tensorboard --logdir runs/

Exit codes: 0 done; 2 an error the message says how to fix (a config key, a file, a folder in use by another
run, a write that failed: disk full, read-only, file too large); 130 Ctrl-C; 143 SIGTERM (both stop at the next
step; the line says where and which checkpoint to resume).
"""

import sys

from dr_fdsl.signals import entry, starting

with starting(__name__):  # a Ctrl-C while torch is imported (seconds) ends in one line, not a traceback
    import argparse

    from dr_fdsl.cli import USER_ERROR, report, write_fault
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
    args = parser.parse_args(argv)
    run = None
    try:
        cfg = load_config(args.config, args.overrides)  # every check of a value, before any work
        run = build_run(cfg, resume=args.resume)
        if args.resume:
            resume(run, args.resume, allow_inexact=args.allow_inexact_resume)
        summary = fit(run)
    except DrFdslError as err:
        return report(err)
    except KeyboardInterrupt as err:
        # Checkpoints are written then renamed, so the newest one is whole whatever was interrupted.
        where = (f"at step {run.step}; last checkpoint: {run.last_checkpoint or 'none yet'}. Continue with --resume "
                 "latest" if run else "during set-up")
        return say_interrupted(err, where)
    except (OSError, RuntimeError) as err:
        fault = write_fault(err, run.last_checkpoint if run else None, "none yet")
        if fault is None:
            raise  # a bug: its traceback is what to read
        print(fault, file=sys.stderr)
        return USER_ERROR
    finally:
        if run is not None:
            release(run)  # DDP's wrappers first: freed at exit, they can deadlock in gloo (loop.release)
            run.accelerator.end_training()  # destroys the process group: the entry script's job
    if run.accelerator.is_main_process:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith(("val/", "probe/")))
        print(f"done: {summary['step']} steps, {metrics}; logs and checkpoints in {run.cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
