"""Renders a grid of (category, view) images for a config to a PNG: a quick look at what the network sees.

    python tools/preview.py --config configs/quickstart.yaml --out preview.png [--classes 8 --views 6]

Rows are categories, columns are view seeds.
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
from dr_fdsl.render import PointRenderer, render_grid, save_grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", default="preview.png", help="the PNG to write (its folder is created)")
    parser.add_argument("--classes", type=int, default=8, help="rows: the first N categories")
    parser.add_argument("--views", type=int, default=6, help="columns: view seeds 0..N-1")
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
        cfg = load_config(args.config, args.overrides)
        bank = bank_from_config(cfg.bank, progress=True)
        renderer = PointRenderer(bank, cfg.renderer)
        rows = min(args.classes, bank.num_classes)
        ids = torch.arange(rows).repeat_interleave(args.views)
        seeds = torch.arange(args.views).repeat(rows)
        grid = render_grid(renderer, ids, seeds, nrow=args.views)
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
