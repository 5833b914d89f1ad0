"""The GPU figures of issue 27 in one call (at most 10 minutes): CUDA tests, ``tools/bench.py --gpu-preset`` for
both raster backends, 200 steps of the 3D-OFDB-1k joint config; one JSON of figures.

    bash tools/gpu_check.sh                       # on a lent GPU machine (see its header)
    python tools/gpu_check.py --dry-run --out /tmp/gpu_check.json   # the same plumbing at CPU sizes, anywhere

Each part runs as its own process under its own time limit (``PARTS``), so one that hangs or fails leaves the
others' figures; the JSON says for each part its command, exit code, seconds and figures (or the tail of its
output). Nothing here has run on a GPU yet: until it has, GPU speed is unmeasured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def parts(out: Path, dry: bool) -> list[tuple[str, list[str], int]]:
    """(name, command, seconds allowed). The limits add up to 9 min 30 s: gpu_check.sh stops it at 9 min 20 s."""
    preset = ["--batch", "4", "--size", "32", "--points", "300", "--classes", "4", "--steps", "1", "--warmup", "0"] \
        if dry else ["--gpu-preset", "--steps", "10", "--warmup", "3"]
    train_scale = ["bank.num_classes=4", "bank.num_points=300", "renderer.image_size=32", "model.name=test_vit",
                   "train.batch_size=8", "train.max_steps=4", "train.log_every=2"] if dry else \
        ["train.max_steps=200", "train.log_every=50"]
    tests = ["tests/test_render.py", "tests/test_sizes.py", "tests/test_tool_inputs.py"]
    return [
        ("cuda_tests", [PY, "-m", "pytest", "-q", "-rs", *tests, "-k", "draw_fragments" if dry else
                        "cuda or binned or gpu or sort_backend or draw_fragments"], 150),
        *((f"bench_{backend}", [PY, "tools/bench.py", *preset, "--backend", backend, "--json",
                                str(out / f"bench_{backend}.json")], 120) for backend in ("pytorch3d", "sort")),
        ("train_joint_200", [PY, "train.py", "--config", "configs/ofdb1k_vit_tiny_joint.yaml",
                             f"output_dir={out / 'train_joint'}", "train.eval_every=1000000",
                             "train.image_every=1000000", "train.ckpt_every=1000000", "train.probe=false",
                             "train.progress=false", *train_scale], 200),
    ]


def run_part(name: str, command: list[str], limit: int, out: Path) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code = "timeout"
        text = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (err.stdout, err.stderr))
    seconds = round(time.perf_counter() - start, 1)
    (out / f"{name}.log").write_text(text)
    result = {"command": " ".join(command), "exit": code, "seconds": seconds, "limit_s": limit}
    if name.startswith("bench_") and (out / f"{name}.json").exists():
        result["figures"] = json.loads((out / f"{name}.json").read_text())
    elif name == "cuda_tests":
        result["summary"] = (re.findall(r"^=* ?(\d+ passed.*|\d+ failed.*)$", text, re.M) or [text[-300:]])[-1]
    elif name.startswith("train_"):
        # seconds per step from start to end, bank building and model set-up included: an upper bound
        result["tail"] = text[-1500:]
    if code != 0:
        result["tail"] = text[-3000:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/gpu_check.json", help="the JSON of figures (logs beside it)")
    parser.add_argument("--dry-run", action="store_true", help="CPU sizes: checks the plumbing, measures nothing")
    args = parser.parse_args()
    out_json = Path(args.out).resolve()
    out = out_json.parent
    out.mkdir(parents=True, exist_ok=True)
    import torch  # after argparse: --help is instant

    figures = {"dry_run": args.dry_run, "cuda": torch.cuda.is_available(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "parts": {}}
    if not args.dry_run and not figures["cuda"]:
        print("error: no CUDA device; use --dry-run to check the plumbing on a CPU", file=sys.stderr)
        return 2
    for name, command, limit in parts(out, args.dry_run):
        print(f"{name}: {' '.join(command)}", flush=True)
        figures["parts"][name] = result = run_part(name, command, limit, out)
        print(f"  exit {result['exit']} after {result['seconds']} s", flush=True)
        out_json.write_text(json.dumps(figures, indent=2))  # after every part: a later timeout keeps these
    failed = [n for n, r in figures["parts"].items() if r["exit"] != 0]
    print(f"wrote {out_json}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
