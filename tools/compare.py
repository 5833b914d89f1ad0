"""Did learnable rendering help? Pre-trains in each renderer mode (frozen, joint, adversarial) plus a
no-pre-training baseline, with identical seeds and budgets, judges each on real data (fine-tuning, a linear
probe or k-NN on frozen features: --protocol), repeats over seeds, and writes results.csv, results.md (per arm
the mean and its 95% interval; for every pair of arms the paired difference over seeds and its interval) and
curves.png (evaluation and pre-training curves). Every arm uses the same seeds, so per seed the classifier
starts from the same initialisation and sees the same data order in every arm.

    python tools/compare.py --preset cpu --out runs/compare_cpu        # minutes on a 2-core CPU
    accelerate launch tools/compare.py --preset gpu --out runs/compare_gpu

The presets families-cpu and families-gpu compare formula families instead of renderer modes: every family
(ifs3d, ofdb, fractaldb, visualatom, svd2d and multi-instance svd2d with the multilabel objective) pre-trains
under a frozen renderer and is fine-tuned the same way (families-cpu: toy scale, about 15 minutes on a 2-core CPU;
families-gpu: the published scale, 1,000 categories and 90 epochs of 1M images at batch 256, on DeiT-S/16).

Budgets can be overridden: --steps, --epochs, --per-class, --max-test, --seeds, --dataset, --ft-batch.
Every arm is judged by the same protocol; under linear or knn the no-pre-training arm is the randomly initialised
backbone's frozen features, the usual baseline of those protocols.
"""

import argparse
import csv
import itertools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the shipped configs
MODES = ("frozen", "joint", "adversarial")
PRESETS = {
    # 10 categories at 32 px with timm's test_vit; Fashion-MNIST with 20 images per class.
    "cpu": dict(config="configs/quickstart.yaml", steps=150, batch=32, eval_every=50, dataset="fashion_mnist",
                per_class=20, epochs=4, ft_batch=32, ft_lr=5e-4, max_test=1000, seeds=[0, 1],
                model="test_vit", image_size=32),
    # The 3D-OFDB-1k recipe (ViT-Tiny, 224 px) for 20k steps; CIFAR-10 with 100 images per class.
    "gpu": dict(config="configs/ofdb1k_vit_tiny_{mode}.yaml", steps=20000, batch=256, eval_every=2000,
                dataset="cifar10", per_class=100, epochs=30, ft_batch=64, ft_lr=5e-4, max_test=0, seeds=[0, 1, 2],
                model="vit_tiny_patch16_224", image_size=224),
}
# Flat 2D families seen whole through a fixed orthographic camera (their points are placed in NDC).
_FLAT = ["renderer.view.rotation=none", "renderer.view.projection=orthographic", "renderer.view.ortho_scale=[1, 1]"]
_MULTI = ["renderer.objects.max=5", "train.objective=multilabel", "image_aug.mixup=0", "image_aug.cutmix=0",
          "image_aug.label_smoothing=0"]
# Arms that are formula families: each a config file and overrides; every arm renders frozen.
FAMILY_ARMS = {
    "cpu": {  # the quickstart's scale: 10 categories x 2,000 points at 32 px
        "ifs3d": ("configs/quickstart.yaml", []),
        "ofdb": ("configs/quickstart.yaml", ["bank.family=ofdb"]),
        "fractaldb": ("configs/quickstart.yaml", ["bank.family=fractaldb", "bank.seed=1", *_FLAT]),
        "visualatom": ("configs/quickstart.yaml", ["bank.family=visualatom", "renderer.color_init=bank",
                                                   "renderer.raster_backend=sort", *_FLAT]),
        "svd2d": ("configs/quickstart.yaml", ["bank.family=svd2d", "renderer.color_init=bank", *_FLAT,
                                              "renderer.augment.window_scale=[0.5, 2.0]",
                                              "renderer.augment.window_shift=0.2", "renderer.augment.dihedral=true",
                                              "renderer.augment.map_jitter=[0.8, 1.1]",
                                              "renderer.augment.scale=[1, 1]", "renderer.augment.shift=0"]),
        "multi": ("configs/quickstart.yaml", ["bank.family=svd2d", "renderer.color_init=bank", *_FLAT,
                                              "renderer.augment.dihedral=true", "renderer.augment.scale=[1, 1]",
                                              "renderer.augment.shift=0", *_MULTI]),
    },
    "gpu": {  # the published categories and recipes, every arm on DeiT-S/16 with AdamW
        "ifs3d": ("configs/ofdb1k_vit_tiny_frozen.yaml", []),
        "ofdb": ("configs/ofdb1k_published_vit_tiny.yaml", []),
        "fractaldb": ("configs/fractaldb1k_deit_small.yaml", []),
        "visualatom": ("configs/visualatom1k_vit_tiny.yaml", []),
        "svd2d": ("configs/svd2d1k_deit_small.yaml", []),
        "multi": ("configs/multi1k_deit_small.yaml", []),
    },
}
_DEIT = ["model.name=deit_small_patch16_224", "model.drop_path=0.1", "optim.name=adamw", "optim.lr=5.0e-4",
         "optim.weight_decay=0.05", "optim.min_lr=1.0e-5"]
# The sort rasteriser gives PyTorch3D's fragments bit for bit and is the faster one on CPU (multi-instance images
# hold five objects' points).
PRESETS["families-cpu"] = dict(PRESETS["cpu"], arms="cpu", common=["renderer.mode=frozen",
                                                                   "renderer.raster_backend=sort"])
PRESETS["families-gpu"] = dict(PRESETS["gpu"], arms="gpu", common=["renderer.mode=frozen", *_DEIT],
                               steps=351563, eval_every=5000, model="deit_small_patch16_224", seeds=[0])


def arms(preset: dict) -> dict[str, tuple[str, list[str]]]:
    """The preset's arms, name -> (config file, overrides): renderer modes, or formula families."""
    if "arms" in preset:
        return {name: (config, [*preset["common"], *extra])
                for name, (config, extra) in FAMILY_ARMS[preset["arms"]].items()}
    return {mode: (preset["config"].format(mode=mode), [f"renderer.mode={mode}"]) for mode in MODES}


def pretrain(preset: dict, arm: str, seed: int, out: Path) -> dict:
    from dr_fdsl.config import load_config
    from dr_fdsl.engine import build_run, fit

    config, overrides = arms(preset)[arm]
    cfg = load_config(ROOT / config, [*overrides, f"output_dir={out}", f"seed={seed}",
                               f"train.max_steps={preset['steps']}", f"train.batch_size={preset['batch']}",
                               f"train.eval_every={preset['eval_every']}", f"train.image_every={preset['steps']}",
                               f"train.ckpt_every={preset['steps']}", "train.progress=false"])
    return fit(build_run(cfg))  # the process group stays up for the next run of this launch


def pretrain_curve(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("val/top1")] if "val/top1" in events.Tags()["scalars"] else []


def summarize(rows: list[dict]) -> str:
    """Markdown: per arm the mean and 95% interval over seeds; per pair of arms the paired difference."""
    from dr_fdsl.stats import mean_interval, paired_difference

    arms = list(dict.fromkeys(r["mode"] for r in rows))  # in the order they ran: none first
    lines = ["| pre-training | seeds | top-1 (%) | cumulative error (2nd half) | pre-train val top-1 | leakage probe |",
             "|---|---|---|---|---|---|"]

    def interval(values: list[float], scale: float = 1.0) -> str:
        return str(mean_interval([scale * v for v in values])) if values else "-"

    for mode in arms:
        mine = [r for r in rows if r["mode"] == mode]
        pre = [r["pretrain_top1"] for r in mine if r["pretrain_top1"] != ""]
        probe = [r["probe_top1"] for r in mine if r["probe_top1"] != ""]
        lines.append(f"| {mode} | {len(mine)} | {interval([r['final_top1'] for r in mine], 100)} | "
                     f"{interval([r['cumulative_error'] for r in mine])} | {interval(pre, 100)} | "
                     f"{interval(probe, 100)} |")
    lines += ["", "| A - B (paired over seeds) | seeds | top-1 difference (points) | interval excludes 0 |",
              "|---|---|---|---|"]
    top1 = {m: {r["seed"]: 100 * r["final_top1"] for r in rows if r["mode"] == m} for m in arms}
    for a, b in itertools.combinations(arms, 2):
        diff = paired_difference(top1[a], top1[b])
        lines.append(f"| {a} - {b} | {diff.n} | {diff} | {'yes' if diff.excludes_zero else 'no'} |")
    return "\n".join(lines)


def plot(rows: list[dict], curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        runs = [r["top1_curve"] for r in rows if r["mode"] == mode]
        if runs:
            mean = [100 * statistics.mean(c[i] for c in runs) for i in range(len(runs[0]))]
            left.plot(range(1, len(mean) + 1), mean, marker="o", label=mode)
        for seed, curve in curves.get(mode, {}).items():
            if curve:
                right.plot(*zip(*curve), marker=".", label=f"{mode} s{seed}", alpha=0.8)
    left.set(xlabel="fine-tuning epoch", ylabel="test top-1 (%)", title="fine-tuning (mean over seeds)")
    right.set(xlabel="pre-training step", ylabel="held-out view top-1", title="pre-training")
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from accelerate import PartialState

    from dr_fdsl.engine.build import process_state
    from dr_fdsl.finetune import FinetuneSettings, finetune

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", default=None, help="results folder (default runs/compare_<preset>)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--per-class", type=int)
    parser.add_argument("--max-test", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--dataset")
    parser.add_argument("--ft-batch", type=int, help="fine-tuning batch per process")
    parser.add_argument("--protocol", choices=["finetune", "linear", "knn"], default="finetune",
                        help="how pre-training is judged: fine-tuning, or a linear probe / k-NN on frozen features")
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    for key in ("steps", "epochs", "per_class", "max_test", "seeds", "dataset", "ft_batch"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    preset["eval_every"] = min(preset["eval_every"], preset["steps"])
    out = Path(args.out or f"runs/compare_{args.preset}")
    state = process_state()  # as the trainings' Accelerator sets the processes up
    is_main = state.is_main_process
    earlier = (out / "preset.json").exists()  # its runs' checkpoints would be refused minutes later, one by one
    state.wait_for_everyone()  # every process has looked before the main one writes
    if earlier:
        print(f"error: '{out}' holds an earlier comparison; choose another --out (nothing is overwritten)",
              file=sys.stderr)
        return 2
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "preset.json").write_text(json.dumps(preset, indent=2))
    rows, curves = [], {}
    for seed in preset["seeds"]:
        for mode in ("none", *arms(preset)):
            run = out / "pretrain" / f"{mode}_s{seed}"
            summary = pretrain(preset, mode, seed, run) if mode != "none" else {}
            run = Path(summary.get("output_dir", run))  # where the run really wrote (a numbered folder if taken)
            if mode != "none":
                curves.setdefault(mode, {})[seed] = pretrain_curve(run)
            result = finetune(FinetuneSettings(
                dataset=preset["dataset"], data_root=args.data_root, pretrained=str(run) if summary else None,
                model=None if summary else preset["model"], image_size=preset["image_size"], epochs=preset["epochs"],
                batch_size=preset["ft_batch"], lr=preset["ft_lr"], per_class=preset["per_class"],
                max_test=preset["max_test"], seed=seed, output_dir=str(out / "finetune" / f"{mode}_s{seed}"),
                protocol=args.protocol, progress=False))
            rows.append({"seed": seed, "mode": mode, "pretrain_top1": summary.get("val/top1", ""),
                         "probe_top1": summary.get("probe/val_acc", ""), "final_top1": result["final_top1"],
                         "cumulative_error": result["cumulative_error"], "top1_curve": result["top1"]})
            if is_main:
                print(f"seed {seed} {mode:>11}: fine-tune top-1 {100 * result['final_top1']:.2f}%, "
                      f"cumulative error {result['cumulative_error']:.1f}", flush=True)

    if not is_main:  # under `accelerate launch`, every process ran the same runs; one writes the results
        PartialState().destroy_process_group()
        return 0

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "top1_curve": " ".join(f"{a:.4f}" for a in r["top1_curve"])} for r in rows)
    table = summarize(rows)
    (out / "results.md").write_text(
        f"# {'Formula families' if 'arms' in preset else 'Renderer modes'} compared ({args.preset} preset, protocol "
        f"{args.protocol})\n\n{table}\n\n"
        f"Budget: {json.dumps(preset)}\n\nMean ± half-width of the 95% Student-t interval over seeds; the paired "
        "differences are per seed (same initialisation and data order in every arm), each pair's interval at 95% "
        "on its own (no correction for comparing several pairs). Cumulative error: sum of "
        "(100 - top-1 %) over the second half of the evaluation epochs; lower is better.\n")
    plot(rows, curves, out / "curves.png")
    print(table)
    print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'curves.png'}")
    PartialState().destroy_process_group()  # one launch, several trainings: the process group goes down once, here
    return 0


if __name__ == "__main__":
    from dr_fdsl.cli import report
    from dr_fdsl.errors import DrFdslError

    try:
        sys.exit(main())
    except DrFdslError as err:
        sys.exit(report(err))
