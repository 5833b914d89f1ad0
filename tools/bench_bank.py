"""Benchmark: time to generate a bank (no cache), e.g. the 1,000 x 10,000 target of < 60 s.

    python tools/bench_bank.py --classes 1000 --points 10000 [bank.ifs3d.sampler=svd] [--json out.json]
    python tools/bench_bank.py --classes 1000 --points 9999 bank.family=ofdb bank.seed=42

Trailing ``key=value`` overrides set any ``bank.*`` key (family, seed, the family's section).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import os
import platform
import sys
import time

import torch

from dr_fdsl.bank import generate_bank
from dr_fdsl.cli import report
from dr_fdsl.config import load_config
from dr_fdsl.errors import DrFdslError
from dr_fdsl.timing import check_bench_args, save_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--json", type=str, default=None)
    parser.add_argument("overrides", nargs="*", default=[], help="bank.* overrides, e.g. bank.family=ofdb")
    args = parser.parse_args()
    check_bench_args(parser, args, positive=("classes", "points"), json_path=args.json)
    bank_cfg = load_config(None, [f"bank.num_classes={args.classes}", f"bank.num_points={args.points}",
                                  *args.overrides]).bank
    start = time.perf_counter()
    bank = generate_bank(bank_cfg, progress=True)
    seconds = time.perf_counter() - start
    result = {
        "family": bank_cfg.family, "classes": args.classes, "points": args.points, "overrides": args.overrides,
        "seconds": round(seconds, 2), "draws": bank.draws,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
    }
    kept = f" (1 kept in {bank.draws / args.classes:.0f})" if bank.draws else ""
    print(f"{args.classes} classes x {args.points} points ({bank_cfg.family} {' '.join(args.overrides)}): "
          f"{seconds:.1f} s, {bank.draws} draws{kept}")
    return save_json(args.json, result) if args.json else 0


if __name__ == "__main__":
    def reported() -> int:
        try:
            return main()
        except DrFdslError as err:  # an override the config refuses: one line naming the key
            return report(err)

    sys.exit(entry(reported))
