"""Pre-train a classifier on fractals rendered in the training step.

    accelerate launch train.py --config configs/quickstart.yaml [train.max_steps=100 renderer.mode=joint ...]
    accelerate launch train.py --config configs/quickstart.yaml --resume latest

Watch it with:  tensorboard --logdir runs/
"""

import argparse
import sys

from dr_fdsl.checkpoint import CheckpointError
from dr_fdsl.config import ConfigError, add_config_args, load_config
from dr_fdsl.engine import NonFiniteLossError, Trainer
from dr_fdsl.fractals import BankCacheError, BankError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder of this run")
    args = parser.parse_args(argv)
    trainer = None
    try:
        cfg = load_config(args.config, args.overrides)
        trainer = Trainer(cfg)
        if args.resume:
            trainer.resume(args.resume)
        summary = trainer.fit()
    except (ConfigError, BankError, BankCacheError, CheckpointError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Checkpoints are written then renamed, so the newest one is whole whatever was interrupted.
        where = f"at step {trainer.step}; last checkpoint: {trainer.last_checkpoint}" if trainer else "during set-up"
        print(f"interrupted {where}. Continue with --resume latest", file=sys.stderr)
        return 130
    if trainer.accelerator.is_main_process:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith(("val/", "probe/")))
        print(f"done: {summary['step']} steps, {metrics}; logs and checkpoints in {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
