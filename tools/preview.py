"""Renders a grid of (category, view) images for a config to a PNG: a quick look at what the network sees.

    python tools/preview.py --config configs/quickstart.yaml --out preview.png [--classes 8 --views 6]

    python tools/preview.py --config configs/quickstart.yaml --augmented --out aug.png   # after image_aug
    python tools/preview.py --run runs/quickstart --out learnt.png   # a trained run's learnt colours and radii

Rows are categories, columns are view seeds. --augmented passes the images through the objective's configured
image augmentations (image_aug: pixel pipeline, flips, erasing, Mixup/CutMix; seeded, one draw per image), as the
network sees them. --run draws with a pre-training run's own config and, for a learnable mode (joint, adversarial,
match, teach, lookahead), the rendering tables of its newest checkpoint (or of the checkpoint folder given), as
render_dataset.py --run exports them; overrides apply on top.
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import sys
from pathlib import Path

import torch

from dr_fdsl.bank import bank_from_config
from dr_fdsl.cli import report
from dr_fdsl.config import add_config_args, load_config
from dr_fdsl.errors import ConfigError, DrFdslError
from dr_fdsl.preview import augmented, run_renderer
from dr_fdsl.render import image_grid, save_grid
from dr_fdsl.tables import build_renderer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", default="preview.png", help="the PNG to write (its folder is created)")
    parser.add_argument("--classes", type=int, default=8, help="rows: the first N categories")
    parser.add_argument("--views", type=int, default=6, help="columns: view seeds 0..N-1")
    parser.add_argument("--augmented", action="store_true", help="apply the configured image augmentations")
    parser.add_argument("--run", default=None, help="a pre-training output_dir or checkpoint folder: its config and "
                        "learnt rendering tables (instead of --config)")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on either side of options
    out = Path(args.out)
    try:
        if args.classes < 1 or args.views < 1:
            raise ConfigError(f"--classes and --views must be positive, got {args.classes} and {args.views}")
        if out.suffix.lower() != ".png":  # checked before the bank is built: the grid is only ever a PNG
            raise ConfigError(f"--out '{out}' must name a .png file")
        if out.is_dir():
            raise ConfigError(f"--out '{out}' is a folder; name a .png file (e.g. {out / 'preview.png'})")
        existing = next(p for p in out.absolute().parents if p.exists())  # the folder save_grid would create under
        if not existing.is_dir():
            raise ConfigError(f"--out '{out}': '{existing}' is a file, not a folder; choose another --out")
        if args.run and args.config:
            raise ConfigError("--run brings its own config; give --run or --config, not both")
        if args.run:
            cfg, renderer, folder = run_renderer(args.run, args.overrides)
            print(f"rendering tables of {folder}")
        else:
            cfg = load_config(args.config, args.overrides)
            renderer = build_renderer(cfg, bank_from_config(cfg.bank, progress=True))  # renderer.tables too
        rows = min(args.classes, renderer.num_classes)
        ids = torch.arange(rows).repeat_interleave(args.views)
        seeds = torch.arange(args.views).repeat(rows)
        with torch.no_grad():
            images = renderer(ids, seeds)
        if args.augmented:
            torch.manual_seed(cfg.seed)  # the same grid every time
            images = augmented(images, ids, cfg, renderer.num_classes)
        grid = image_grid(images, nrow=args.views)
    except DrFdslError as err:
        return report(err)
    except OSError as err:  # reading or caching the bank: the message names the file (not --out, not written yet)
        return report(err)
    try:
        print(f"wrote {save_grid(grid, out)}")
    except OSError as err:  # only --out is written here: not a folder, read-only, disk full
        return report(err, writing=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
