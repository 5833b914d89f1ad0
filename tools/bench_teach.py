"""Per-step cost of ``renderer.mode=teach`` (and of ``adversarial``) relative to ``frozen``, in one process.

Builds one run per mode from a config (default the quickstart), warms each up, then times ``train_step`` round by
round, the modes interleaved so that a change in the machine's load hits them alike; prints the median CPU seconds
per step of each mode (process time: on a shared machine, less load-dependent than wall time) and its ratio to
frozen. ``teach`` is timed over whole ``teach.interval`` cycles (one renderer
step and ``interval - 1`` plain ones), and its two kinds of step apart.

    .venv/bin/python tools/bench_teach.py --rounds 5 [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dr_fdsl.config import load_config
from dr_fdsl.engine import build_run, train_step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["frozen", "adversarial", "teach"])
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every mode")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if any(o.startswith("renderer.mode=") for o in args.overrides):
        parser.error("renderer.mode is what the benchmark sets: use --modes")
    scratch = Path(tempfile.mkdtemp(prefix="bench_teach_"))
    runs = {}
    for mode in args.modes:
        cfg = load_config(args.config, [f"output_dir={scratch / mode}", f"renderer.mode={mode}",
                                        "train.progress=false", *args.overrides])
        runs[mode] = build_run(cfg)
    interval = runs["teach"].cfg.teach.interval if "teach" in runs else 1
    for run in runs.values():  # warm-up: first steps allocate and compile kernels
        for _ in range(interval):
            train_step(run)
    per_step = {mode: [] for mode in runs}
    teach_kinds = {"renderer step": [], "plain step": []}
    for _ in range(args.rounds):
        for mode, run in runs.items():
            start = time.process_time()
            for _ in range(interval):
                t0 = time.process_time()
                train_step(run)
                if mode == "teach":
                    teach_kinds["renderer step" if run.mode.micro_batches % interval == 1 or interval == 1
                                else "plain step"].append(time.process_time() - t0)
            per_step[mode].append((time.process_time() - start) / interval)
    base = statistics.median(per_step["frozen"]) if "frozen" in per_step else None
    for mode, times in per_step.items():
        med = statistics.median(times)
        ratio = f", {med / base:.2f} x frozen" if base else ""
        print(f"{mode:12s} {med * 1000:8.1f} CPU ms/step (median of {len(times)} rounds of {interval}){ratio}")
    for kind, times in teach_kinds.items():
        if times and base:
            med = statistics.median(times)
            print(f"  teach {kind}: {med * 1000:.1f} CPU ms ({med / base:.2f} x frozen)")
    return 0


if __name__ == "__main__":
    import sys

    from dr_fdsl.cli import report
    from dr_fdsl.errors import DrFdslError

    try:
        sys.exit(main())
    except DrFdslError as err:
        sys.exit(report(err))
