"""Did learnable rendering help? Pre-trains in each renderer mode (frozen, joint, adversarial) plus a
no-pre-training baseline, with identical seeds and budgets, judges each on real data (fine-tuning, a linear
probe or k-NN on frozen features: --protocol), repeats over seeds, and writes results.csv, results.md (per arm
the mean and its 95% interval; for every pair of arms the paired difference over seeds and its interval) and
curves.png (evaluation and pre-training curves). Every arm uses the same seeds, so per seed the classifier
starts from the same initialisation and sees the same data order in every arm.

    python tools/compare.py --preset cpu --out runs/compare_cpu        # minutes on a 2-core CPU
    accelerate launch tools/compare.py --preset gpu --out runs/compare_gpu

Budgets can be overridden: --steps, --epochs, --per-class, --max-test, --seeds, --dataset, --ft-batch.
Every arm is judged by the same protocol; under linear or knn the no-pre-training arm is the randomly initialised
backbone's frozen features, the usual baseline of those protocols.

--study target_mim compares masked pre-training on the target's training images (dr_fdsl/target_mim.py) instead:
arms none, target_mim (masked on the target from scratch), fractal (the preset's pre-training, frozen renderer)
and fractal+target_mim (fractal pre-training, then masked on the target), then fine-tuning; --tm-epochs,
--tm-lr and --tm-batch set the masked phase (the seed's schedule: warm-up over the first tenth of its epochs from
1e-9, the last 30% at half the lr; Adam (0.9, 0.99), L1 over all pixels, 4 px squares at 20%).

    python tools/compare.py --study target_mim --out runs/compare_target_mim
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
TARGET_MIM_ARMS = ("none", "target_mim", "fractal", "fractal+target_mim")  # --study target_mim
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


def pretrain(preset: dict, mode: str, seed: int, out: Path, extra: list[str] = ()) -> dict:
    from dr_fdsl.config import load_config
    from dr_fdsl.engine import build_run, fit

    config = ROOT / preset["config"].format(mode=mode)
    cfg = load_config(config, [f"output_dir={out}", f"seed={seed}", f"renderer.mode={mode}",
                               f"train.max_steps={preset['steps']}", f"train.batch_size={preset['batch']}",
                               f"train.eval_every={preset['eval_every']}", f"train.image_every={preset['steps']}",
                               f"train.ckpt_every={preset['steps']}", "train.progress=false", *extra])
    return fit(build_run(cfg))  # the process group stays up for the next run of this launch


def pretrain_curve(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("val/top1")] if "val/top1" in events.Tags()["scalars"] else []


def summarize(rows: list[dict]) -> str:
    """Markdown: per arm the mean and 95% interval over seeds; per pair of arms the paired difference."""
    from dr_fdsl.stats import mean_interval, paired_difference

    arms = list(dict.fromkeys(r["mode"] for r in rows))  # in the order they ran
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
    from dr_fdsl.target_mim import TargetMIMSettings

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
    parser.add_argument("--pretrain-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of every pre-training that change no pixel (e.g. "
                             "renderer.raster_backend=sort)")
    parser.add_argument("--study", choices=["modes", "target_mim"], default="modes",
                        help="arms: the renderer modes, or masked pre-training on the target (see above)")
    parser.add_argument("--tm-epochs", type=int, default=50, help="target_mim study: epochs of the masked phase")
    parser.add_argument("--tm-lr", type=float, default=1e-4, help="target_mim study: its peak lr (the seed's 1e-4)")
    parser.add_argument("--tm-batch", type=int, default=32, help="target_mim study: its batch per process")
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
    masked = TargetMIMSettings()
    if args.study == "target_mim":
        preset["target_mim"] = {"epochs": args.tm_epochs, "lr": args.tm_lr, "batch": args.tm_batch}
        e = args.tm_epochs
        masked = TargetMIMSettings(epochs=e, batch_size=args.tm_batch, lr=args.tm_lr, final_lr=args.tm_lr / 2,
                                   warmup_epochs=round(e / 10), final_epochs=round(0.3 * e))
        masked.validate()
    rows, curves = [], {}
    for seed in preset["seeds"]:
        summary = {}
        for mode in (("none", *MODES) if args.study == "modes" else TARGET_MIM_ARMS):
            pretrained = mode not in ("none", "target_mim")
            if mode in (*MODES, "fractal"):  # the fractal arms share one pre-training (frozen renderer)
                run = out / "pretrain" / f"{mode}_s{seed}"
                summary = pretrain(preset, "frozen" if mode == "fractal" else mode, seed, run, args.pretrain_set)
                run = Path(summary["output_dir"])  # where the run really wrote (a numbered folder if taken)
                curves.setdefault(mode, {})[seed] = pretrain_curve(run)
            result = finetune(FinetuneSettings(
                dataset=preset["dataset"], data_root=args.data_root, pretrained=str(run) if pretrained else None,
                model=None if pretrained else preset["model"], image_size=preset["image_size"],
                epochs=preset["epochs"], batch_size=preset["ft_batch"], lr=preset["ft_lr"],
                per_class=preset["per_class"], max_test=preset["max_test"], seed=seed,
                output_dir=str(out / "finetune" / f"{mode}_s{seed}"), protocol=args.protocol, progress=False,
                target_mim=masked if mode.endswith("target_mim") else TargetMIMSettings()))
            if not pretrained:
                summary = {}
            rows.append({"seed": seed, "mode": mode, "pretrain_top1": summary.get("val/top1", ""),
                         "probe_top1": summary.get("probe/val_acc", ""), "final_top1": result["final_top1"],
                         "cumulative_error": result["cumulative_error"], "top1_curve": result["top1"],
                         "target_mim_loss": result["target_mim"]["loss"][-1] if "target_mim" in result else "",
                         "target_mim_identity": (result["target_mim"]["identity_loss"][-1]
                                                 if "target_mim" in result else "")})
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
        f"# {'Renderer modes' if args.study == 'modes' else 'Masked pre-training on the target'} compared "
        f"({args.preset} preset, protocol {args.protocol})\n\n{table}\n\n"
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
