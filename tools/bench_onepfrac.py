"""1p-frac's learnt perturbation against the frozen delta, A/B in one process (issue 25): the per-class replay
(OnePFracReplay's forward, and forward + backward to the size) and training steps of the onepfrac-cpu preset's arms
delta_0.1 and learnt, interleaved. Usage: ``python tools/bench_onepfrac.py [--steps 10] [--preset onepfrac-cpu]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from dr_fdsl.engine import build_run, train_step
    from tools.compare import PRESETS, arms_of, pretrain_config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--preset", default="onepfrac-cpu")
    args = parser.parse_args()
    preset, arms = PRESETS[args.preset], arms_of(PRESETS[args.preset])
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("delta_0.1", "learnt"):
            arm = arms[name]
            runs[name] = build_run(pretrain_config(preset, arm.pretrain, 0, Path(tmp) / name, arm.config))
        batch = preset["batch"]
        ids = torch.arange(batch) % runs["learnt"].cfg.bank.num_classes
        replay = {n: r.renderer.instances for n, r in runs.items()}
        for name, drawer in replay.items():  # per-class replay of one batch
            start = time.perf_counter()
            for _ in range(3):
                if name == "learnt":
                    drawer.continuous_points(ids, drawer.magnitude()).sum().backward()
                else:
                    drawer.points(ids)
            print(f"replay {name}: {(time.perf_counter() - start) / 3 / batch * 1e3:.2f} ms per class "
                  f"({'forward + backward' if name == 'learnt' else 'forward'}, batch {batch})")
        seconds = {n: 0.0 for n in runs}
        for _ in range(args.steps):  # interleaved A/B
            for name, run in runs.items():
                start = time.perf_counter()
                train_step(run)
                seconds[name] += time.perf_counter() - start
        for name, s in seconds.items():
            print(f"{name}: {s / args.steps:.3f} s per step, {batch * args.steps / s:.1f} images/s; "
                  f"{preset['steps']} steps ~ {s / args.steps * preset['steps'] / 60:.1f} min of pre-training")
        print("learnt size after", args.steps, "steps:",
              runs["learnt"].renderer.table_statistics()["renderer/perturbation"])


if __name__ == "__main__":
    main()
