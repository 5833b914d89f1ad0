"""Benchmark: time to generate a fractal bank (no cache), e.g. the 1,000 x 10,000 target of < 60 s.

    python tools/bench_bank.py --classes 1000 --points 10000 [--sampler uniform] [--json out.json]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from dr_fdsl.bank import generate_bank
from dr_fdsl.config import BankConfig, IFS3DConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--sampler", default="uniform", choices=["uniform", "svd"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    cfg = BankConfig(num_classes=args.classes, num_points=args.points, seed=args.seed,
                     ifs3d=IFS3DConfig(sampler=args.sampler))
    start = time.perf_counter()
    bank = generate_bank(cfg, progress=True)
    seconds = time.perf_counter() - start
    result = {
        "classes": args.classes, "points": args.points, "sampler": args.sampler, "seconds": round(seconds, 2),
        "draws": bank.draws, "kept_per_draw": round(args.classes / bank.draws, 5),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{args.classes} classes x {args.points} points ({args.sampler}): {seconds:.1f} s, "
          f"{bank.draws} draws (1 kept in {bank.draws / args.classes:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
