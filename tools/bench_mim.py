"""Benchmark: the masked-image objective for each mask patch size and ratio, in the seed's table layout (rows:
patch size in pixels, columns: masking ratio; Terentiev & Ivanenko's best: 4 x 4 px at 20%).

The seed's table reports downstream classification after masked pre-training on the target data; this runs the
same grid at CPU scale through the project's own code, one training per cell, and prints per cell:

* ``--source target`` (default, the seed's setting): masked pre-training on the fine-tuning dataset's training
  images (``finetune`` with ``target_mim``, dr_fdsl/target_mim.py), then the backbone judged by ``--protocol``
  (k-NN on frozen features by default, the cheapest); tables of the final L1 over all pixels (the published loss),
  L1 over the masked pixels, the identity baseline (the masked image itself) and downstream top-1.
* ``--source rendered``: the objective ``mim`` on the rendered stream (``train.py``'s engine on
  ``configs/mim_seed_quickstart.yaml`` unless ``--config``); the held-out views' final L1 over all pixels and over
  the masked pixels, and the identity baseline.

    python tools/bench_mim.py --out runs/bench_mim                      # ~10 minutes on an idle 2-core CPU
    python tools/bench_mim.py --source rendered --steps 150 --out runs/bench_mim_rendered

L1 over all pixels grows with the ratio by construction (more pixels to predict); the masked-pixel L1 compares the
difficulty per masked pixel; only downstream accuracy answers the seed's question (which mask helps).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATCHES, RATIOS = (2, 4, 8), (0.2, 0.4, 0.6)


def cell_target(args, patch: int, ratio: float, out: Path) -> dict:
    from dr_fdsl.finetune import FinetuneSettings, finetune
    from dr_fdsl.target_mim import TargetMIMSettings

    e = args.epochs
    masked = TargetMIMSettings(epochs=e, batch_size=args.batch, patch=patch, ratio=ratio, lr=args.lr,
                               final_lr=args.lr / 2, warmup_epochs=round(e / 10), final_epochs=round(0.3 * e))
    result = finetune(FinetuneSettings(dataset=args.dataset, data_root=args.data_root, model=args.model,
                                       image_size=args.image_size, per_class=args.per_class, max_test=args.max_test,
                                       protocol=args.protocol, epochs=args.ft_epochs, batch_size=args.batch,
                                       seed=args.seed, output_dir=str(out), progress=False, target_mim=masked))
    t = result["target_mim"]
    return {"loss_all": t["loss"][-1], "loss_masked": t["masked_loss"][-1], "identity": t["identity_loss"][-1],
            "top1": result["final_top1"], "seconds": t["seconds"]}


def cell_rendered(args, patch: int, ratio: float, out: Path) -> dict:
    import torch

    from dr_fdsl.config import load_config
    from dr_fdsl.engine import build_run, fit
    from dr_fdsl.engine.loop import render_eval
    from dr_fdsl.objectives.mim import mean_l1

    cfg = load_config(args.config, [f"output_dir={out}", f"seed={args.seed}", f"mim.patch={patch}",
                                    f"mim.ratio={ratio}", f"train.max_steps={args.steps}",
                                    f"train.eval_every={args.steps}", f"train.ckpt_every={args.steps}",
                                    f"train.image_every={args.steps}", "train.progress=false", *args.overrides])
    start = time.perf_counter()
    run = build_run(cfg)
    summary = fit(run)
    ids, seeds = run.eval_views
    masked = []
    with torch.no_grad():  # the held-out views again, L1 over the masked pixels (the objective's own pieces)
        for i in range(0, len(ids), cfg.train.batch_size):
            batch = ids[i:i + cfg.train.batch_size], seeds[i:i + cfg.train.batch_size]
            errors, _, mask = run.objective._errors(render_eval(run, *batch), *batch)
            masked.append(mean_l1(errors, mask, "masked"))
    return {"loss_all" if cfg.mim.loss_on == "all" else "loss_trained": summary["val/loss"],
            "loss_masked": float(torch.cat(masked).mean()), "identity": summary["val/identity_loss"],
            "seconds": time.perf_counter() - start}


def table(cells: dict, key: str, fmt: str) -> str:
    lines = ["| patch \\ ratio | " + " | ".join(f"{r:.0%}" for r in RATIOS) + " |",
             "|---|" + "---|" * len(RATIOS)]
    for p in PATCHES:
        lines.append(f"| {p}x{p} px | " + " | ".join(format(cells[f"{p}/{r}"][key], fmt) for r in RATIOS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["target", "rendered"], default="target")
    parser.add_argument("--out", default="runs/bench_mim")
    parser.add_argument("--seed", type=int, default=0)
    # target
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30, help="masked pre-training epochs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr (the seed's 1e-4 barely moves at this scale)")
    parser.add_argument("--protocol", choices=["knn", "linear", "finetune"], default="knn")
    parser.add_argument("--ft-epochs", type=int, default=10, help="linear/finetune protocol epochs")
    # rendered
    parser.add_argument("--config", default=str(ROOT / "configs/mim_seed_quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("overrides", nargs="*", help="rendered: config overrides (not mim.patch / mim.ratio)")
    args = parser.parse_args(argv)
    if any(o.startswith(("mim.patch=", "mim.ratio=")) for o in args.overrides):
        parser.error("mim.patch and mim.ratio are what the benchmark varies")
    out = Path(args.out)
    if (out / "bench_mim.json").exists():
        parser.error(f"'{out}' holds an earlier benchmark; choose another --out")
    cells = {}
    for p in PATCHES:
        for r in RATIOS:
            cell = (cell_target if args.source == "target" else cell_rendered)(args, p, r, out / f"p{p}_r{r}")
            cells[f"{p}/{r}"] = cell
            print(f"patch {p} ratio {r}: " + ", ".join(f"{k} {v:.4f}" for k, v in cell.items()), flush=True)
    keys = [("loss_all", "L1 over all pixels (the published loss)", ".4f"),
            ("loss_masked", "L1 over the masked pixels", ".4f"),
            ("identity", "identity baseline (the masked image itself), as the trained loss", ".4f"),
            ("top1", f"downstream top-1 ({args.protocol})", ".3f")]
    text = [f"# Masked objective by patch size and ratio ({args.source}; {' '.join(sys.argv[1:])})", ""]
    for key, title, fmt in keys:
        if all(key in c for c in cells.values()):
            text += [f"## {title}", "", table(cells, key, fmt), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_mim.json").write_text(json.dumps({"args": vars(args), "cells": cells}, indent=2))
    (out / "bench_mim.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    from accelerate import PartialState

    from dr_fdsl.cli import report
    from dr_fdsl.errors import DrFdslError

    def reported() -> int:
        try:
            return main()
        except DrFdslError as err:
            return report(err)
        finally:
            PartialState().destroy_process_group()

    sys.exit(entry(reported))
