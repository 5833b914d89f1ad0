"""Exports the frozen renderer's images as a static image-folder dataset (PNG, one folder per category).

    python tools/render_dataset.py --config configs/ofdb1k_vit_tiny_frozen.yaml --out data/ofdb1k --views 1000

Takes the same --config and dotted overrides as train.py. Renders view seeds 0..views-1 of every category in
batches (on the GPU when there is one), writes dataset.json (settings), the PNGs (write-then-rename) and
manifest.csv (path,category,view_seed,sha256) last. Run it again to resume an interrupted export, or to check a
finished one: every file already there is checked (against its recorded SHA-256, or by decoding it when none is
recorded) and a damaged one is rendered again and named; a folder made with other settings is refused. Train from
it with data.source=static data.path=DIR.

    python tools/render_dataset.py --run runs/joint --out data/joint_learnt --views 100

--run RUN (instead of --config) exports what a trained run's renderer draws: the run's own config with the learnt
colour and radius tables of its newest checkpoint (or of the checkpoint folder given), checked against its
manifest; a frozen run's tables are its config's. dataset.json records the tables' SHA-256, and the line printed at
the end names the overrides that train from the dataset (renderer.mode=frozen, the tables' parameterisations,
renderer.tables=CHECKPOINT): a training whose tables differ refuses it.
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
from dr_fdsl.static import export
from dr_fdsl.tables import build_renderer, frozen_overrides, run_config, tables_digest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", required=True, help="dataset folder")
    parser.add_argument("--views", type=int, required=True, help="views per category (view seeds 0..N-1)")
    parser.add_argument("--batch", type=int, default=64, help="images rendered together")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--run", default=None, help="a pre-training output_dir or checkpoint folder: export with its "
                        "config and learnt rendering tables (instead of --config)")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on either side of options
    try:
        if Path(args.out).exists() and not Path(args.out).is_dir():  # before minutes of bank building
            raise ConfigError(f"--out '{args.out}' is a file, not a folder; choose another --out")
        if args.views < 1 or args.batch < 1:
            raise ConfigError(f"--views and --batch must be positive, got {args.views} and {args.batch}")
        try:
            torch.device(args.device)
        except RuntimeError:
            raise ConfigError(f"--device {args.device!r} is not a torch device; use cpu or cuda (cuda:N)") from None
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: no CUDA device here; use --device cpu")
        if args.run and args.config:
            raise ConfigError("--run brings its own config; give --run or --config, not both")
        if args.run:
            cfg, folder = run_config(args.run, args.overrides)
        else:
            cfg = load_config(args.config, args.overrides)
        if cfg.renderer.tables:  # a missing or damaged checkpoint fails before the bank is built
            tables_digest(cfg.renderer.tables)
        bank = bank_from_config(cfg.bank, progress=True)
        renderer = build_renderer(cfg, bank).to(args.device).requires_grad_(False)
        counts = export(renderer, cfg, args.out, args.views, batch_size=args.batch)
    except DrFdslError as err:
        return report(err)
    except OSError as err:
        return report(err, writing=args.out)
    rate = counts["written"] / max(counts["seconds"], 1e-9)
    print(f"dataset: {args.out} ({bank.num_classes} categories x {args.views} views); wrote {counts['written']} "
          f"images in {counts['seconds']:.1f} s ({rate:.0f} images/s on {args.device}), "
          f"{counts['skipped']} already there and intact")
    if counts["damaged"]:
        shown = ", ".join(counts["damaged"][:5]) + (", ..." if len(counts["damaged"]) > 5 else "")
        print(f"re-rendered {len(counts['damaged'])} damaged or replaced images: {shown}")
    if args.run:
        saved = folder.parent.parent / "config.yaml"
        train_from = [*args.overrides, *frozen_overrides(load_config(saved, args.overrides), cfg)]
        print(f"rendering tables of {folder}; train from it: train.py --config {saved} data.source=static "
              f"data.path={args.out} {' '.join(train_from)}")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
