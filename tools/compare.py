"""Did learnable rendering help? Pre-trains in each renderer mode (frozen, joint, adversarial) plus a
no-pre-training baseline, with identical seeds and budgets, judges each on real data (fine-tuning, a linear
probe or k-NN on frozen features: --protocol, one or several), repeats over seeds, and writes results.csv,
results.md (per arm the mean and its 95% interval; for every pair of arms the paired difference over seeds and its
interval), curves.png (evaluation and pre-training curves) and differences.png (each arm minus frozen, paired, with
its interval). Every arm uses the same seeds, so per seed the backbone starts from the same initialisation and
sees the same data order in every arm.

    python tools/compare.py --preset cpu --out runs/compare_cpu        # minutes on a 2-core CPU
    accelerate launch tools/compare.py --preset gpu --out runs/compare_gpu

The study presets add joint with one shared colour table (joint_shared: no per-category colour code to leak the
label) and match (the renderer matched to the target's training images); `study` is docs/results.md's setting,
45 minutes on a 2-core CPU with --jobs 2, `study-gpu` the published scale (3D-OFDB-1k, ViT-Tiny, CIFAR-100):

    python tools/compare.py --preset study --protocol finetune knn linear --jobs 2 --out runs/study

`study2` (docs/results.md now) asks again with learnt arms whose tables cannot carry the label: frozen,
frozen_random (random colours per point), joint_blind (one colour and one radius table for all categories, and the
leak penalty), adversarial, teach, match_blind and lookahead, over 10 seeds; `study2-gpu` at the published scale:

    python tools/compare.py --preset study2 --protocol finetune knn linear --jobs 2 --out runs/study2

The contest presets compare the rows of the SIGNATE contest solution's ablation table instead of renderer modes
(configs/contest_pytorch3d.yaml, frozen, one row per set of point augmentations; --arms picks some):

    python tools/compare.py --preset contest_cpu --out runs/contest_cpu  # every row at toy scale on a CPU
    accelerate launch tools/compare.py --preset contest --out runs/contest  # the table's setting: CIFAR-100

Budgets can be overridden: --steps, --epochs, --per-class, --max-test, --seeds, --dataset, --ft-batch. --arms
chooses the arms; beside the renderer modes, ``joint_shared`` is joint with one colour table for all categories and
``match`` (renderer.mode=match) matches the renderer to the training images of the dataset the arms are judged on
(``--arms frozen joint joint_shared match``); ``lookahead`` (renderer.mode=lookahead) learns from the labelled
training images fine-tuning uses (the same per-class draw and seed).

--study target_mim compares masked pre-training on the target's training images (dr_fdsl/target_mim.py) instead:
arms none, target_mim (masked on the target from scratch), fractal (the preset's pre-training, frozen renderer)
and fractal+target_mim (the same fractal pre-training, then masked on the target), then fine-tuning; --tm-epochs,
--tm-lr and --tm-batch set the masked phase (the seed's schedule: warm-up over the first tenth of its epochs from
1e-9, the last 30% at half the lr; Adam (0.9, 0.99), L1 over all pixels, 4 px squares at 20%).

    python tools/compare.py --study target_mim --out runs/compare_target_mim

With --jobs N, N seeds run at once, each in a worker process of this tool; no worker (nor what it started) outlives
this process, whether a seed fails, Ctrl-C (exit 130), SIGTERM (exit 143) or, on Linux, SIGKILL ends it.

The presets families-cpu and families-gpu compare formula families: every family (ifs3d, ofdb, fractaldb,
visualatom, svd2d and multi-instance svd2d with the multilabel objective) pre-trains under a frozen renderer and is
fine-tuned the same way (families-cpu: toy scale from the quickstart, every arm on the sort rasteriser;
families-gpu: the published scale, the 1k configs for 90 epochs of 1M images at batch 256, on DeiT-S/16).
The presets onepfrac-cpu and onepfrac-gpu sweep 1p-frac's perturbation size delta over 0.01, 0.05, 0.1 and 0.2
(configs/onepfrac_cpu.yaml; configs/onepfrac1k_vit_tiny.yaml, its published scale with CIFAR-100 fine-tuning),
and their arm learnt learns the size within [0.05, 0.2] from 0.1 (renderer.perturbation, mode adversarial);
fixed_unsnapped is its control (the same drawing, without the published pixel snap, with the size held at 0.1).
Every arm is judged by the same protocol; under linear or knn the no-pre-training arm is the randomly initialised
backbone's frozen features, the usual baseline of those protocols.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the package is imported when a run starts, so that --help answers at once
    from dr_fdsl.target_mim import TargetMIMSettings

ROOT = Path(__file__).resolve().parents[1]  # the shipped configs
MODES = ("frozen", "joint", "adversarial")  # the arms run by default (--arms chooses others)
# The contest solution's ablation table (hiranoko/PIDModuleContest_4thPlaceSolution, doc/Solution.md: 3D-OFDB-1k
# re-rendered with PyTorch3D, 1,000 images per category, ViT-Tiny, CIFAR-100 fine-tuning top-1 %): each row's
# overrides of configs/contest_pytorch3d.yaml (whose own augmentations are row 009's) and its published result.
# {points_x5}: the row "Add Points 10k->50k" draws 5 x point_num, i.e. 5 (N + 1) - 1 points.
CONTEST_ARMS = {
    "shift_scale_rotate": (["renderer.augment.subsample_prob=0.0"], 73.23),  # exp001
    "colored_points": (["renderer.augment.subsample_prob=0.0", "renderer.augment.depth_hue=true"], 71.83),  # 002
    "points_50k": (["renderer.augment.subsample_prob=0.0", "bank.num_points={points_x5}"], 72.95),  # exp003
    "subsample": ([], 74.46),  # exp009
    "noise": (["renderer.augment.jitter=0.01"], 72.69),  # exp011 (jitter_prob 0.5 in the config)
    "pointwolf": (["renderer.augment.pointwolf=true"], 72.08),  # exp013
    "diamond_square": (["renderer.background=diamond_square"], 71.84),  # exp022
}
PRESETS = {
    # 10 categories at 32 px with timm's test_vit; Fashion-MNIST with 20 images per class.
    "cpu": dict(config="configs/quickstart.yaml", steps=150, batch=32, eval_every=50, dataset="fashion_mnist",
                per_class=20, epochs=4, ft_batch=32, ft_lr=5e-4, max_test=1000, seeds=[0, 1],
                model="test_vit", image_size=32),
    # The 3D-OFDB-1k recipe (ViT-Tiny, 224 px) for 20k steps; CIFAR-10 with 100 images per class.
    "gpu": dict(config="configs/ofdb1k_vit_tiny_{mode}.yaml", steps=20000, batch=256, eval_every=2000,
                dataset="cifar10", per_class=100, epochs=30, ft_batch=64, ft_lr=5e-4, max_test=0, seeds=[0, 1, 2],
                model="vit_tiny_patch16_224", image_size=224),
    # The ablation table's setting: the contest render (1,000 categories, 384 px, 1,000 views per category as its
    # static dataset), ViT-Tiny; CIFAR-100 fine-tuning on all its training images. The contest's pre-training
    # budget and fine-tuning recipe are not published: these are ours.
    "contest": dict(config="configs/contest_pytorch3d.yaml", arms="contest", steps=20000, batch=256,
                    eval_every=2000, dataset="cifar100", per_class=0, epochs=30, ft_batch=64, ft_lr=5e-4, max_test=0,
                    seeds=[0, 1, 2], model="vit_tiny_patch16_224", image_size=384,
                    overrides=["data.views_per_class=1000"], points=9999),
    # Every row at toy scale: 10 categories x 999 points, 32 px, timm's test_vit, Fashion-MNIST.
    "contest_cpu": dict(config="configs/contest_pytorch3d.yaml", arms="contest", steps=20, batch=16, eval_every=20,
                        dataset="fashion_mnist", per_class=10, epochs=2, ft_batch=32, ft_lr=5e-4, max_test=200,
                        seeds=[0], model="test_vit", image_size=32, points=999,
                        overrides=["bank.num_classes=10", "bank.num_points=999", "renderer.image_size=32",
                                   "model.name=test_vit", "train.mixed_precision=no", "train.eval_images=64",
                                   "optim.warmup_steps=5", "train.log_every=5"]),
    # The renderer-mode study (docs/results.md): every mode, joint with one shared colour table, and match, over 6
    # seeds, 45 minutes on a 2-core CPU with --jobs 2. The scale was chosen so that pre-training beats none
    # first: timm's test_vit with 8 px patches (16 tokens at 32 px; with its own 16 px patches it sees 4 and gains
    # nothing measurable); Fashion-MNIST with 20 labelled images per class, judged on all 10,000 test images.
    "study": dict(config="configs/quickstart.yaml", arms="study", steps=800, batch=64, eval_every=400,
                  dataset="fashion_mnist", per_class=20, epochs=30, ft_batch=32, ft_lr=1e-3, ft_eval_every=5,
                  max_test=0, seeds=[0, 1, 2, 3, 4, 5], model="test_vit", image_size=32,
                  overrides=["model.patch_size=8", "optim.lr=2e-3", "optim.warmup_steps=50"]),
    # The same arms at the published scale: 3D-OFDB-1k (1,000 categories x 10,000 points, 224 px) for the recipe's
    # 240,000 steps of batch 256, ViT-Tiny, fine-tuned on all of CIFAR-100 (configs/finetune/cifar100.yaml).
    "study-gpu": dict(config="configs/ofdb1k_vit_tiny_{mode}.yaml", arms="study", steps=240000, batch=256,
                      eval_every=5000, dataset="cifar100", per_class=0, epochs=30, ft_batch=64, ft_lr=5e-4,
                      max_test=0, seeds=[0, 1, 2, 3, 4], model="vit_tiny_patch16_224", image_size=224),
    # Study v2 (docs/results.md): learnt arms whose tables cannot carry the label, against two frozen baselines
    # (white, and random colours per point), over 10 seeds at the study's scale; the arms: STUDY2_ARMS.
    # Half the study's pre-training steps and fewer fine-tuning evaluations, so that 7 pre-trainings x 10 seeds
    # fit the 2-core machine in about 90 minutes.
    "study2": dict(config="configs/quickstart.yaml", arms="study2", steps=400, batch=64, eval_every=200,
                   dataset="fashion_mnist", per_class=20, epochs=30, ft_batch=32, ft_lr=1e-3, ft_eval_every=10,
                   max_test=0, seeds=list(range(10)), model="test_vit", image_size=32,
                   overrides=["model.patch_size=8", "optim.lr=2e-3", "optim.warmup_steps=50"]),
    # The same arms at the published scale (3D-OFDB-1k, ViT-Tiny, CIFAR-100), as study-gpu.
    "study2-gpu": dict(config="configs/ofdb1k_vit_tiny_{mode}.yaml", arms="study2", steps=240000, batch=256,
                       eval_every=5000, dataset="cifar100", per_class=0, epochs=30, ft_batch=64, ft_lr=5e-4,
                       max_test=0, seeds=[0, 1, 2, 3, 4], model="vit_tiny_patch16_224", image_size=224),
}
# Class-blind tables: one colour and one radius table for every category, so no table can hold a per-category code.
_BLIND = ["renderer.share_colors=true", "renderer.share_radii=true"]
LEAK_PENALTY = 1.0  # the study2 joint arm's renderer.leak_penalty
STUDY2_ARMS = {  # name -> the pre-training's overrides ({dataset}, {per_class}: the preset's)
    "frozen": ["renderer.mode=frozen"],
    "frozen_random": ["renderer.mode=frozen", "renderer.augment.random_colors=point"],
    "joint_blind": ["renderer.mode=joint", *_BLIND, f"renderer.leak_penalty={LEAK_PENALTY}"],
    "adversarial": ["renderer.mode=adversarial"],
    "teach": ["renderer.mode=teach"],
    "match_blind": ["renderer.mode=match", "match.dataset={dataset}", *_BLIND],
    "lookahead": ["renderer.mode=lookahead", "lookahead.dataset={dataset}", "lookahead.per_class={per_class}"],
}


class Arm(NamedTuple):
    """pretrain: the config overrides of the arm's fractal pre-training (None: no pre-training); target_mim: masked
    pre-training on the target's training images follows (before fine-tuning); config: the arm's own config file
    (None: the preset's)."""

    pretrain: list[str] | None
    target_mim: bool = False
    config: str | None = None


class Plan:
    """What a comparison runs (pre-trainings and judgements, every seed) and how far it is, with an ETA from the
    mean time of each kind of job so far (a kind not yet timed is costed as the other)."""

    def __init__(self, pretrainings: int, judgements: int) -> None:
        self.total = {"pre-training": pretrainings, "judgement": judgements}
        self.done = {"pre-training": 0, "judgement": 0}
        self.seconds = {"pre-training": 0.0, "judgement": 0.0}
        self.start = time.monotonic()

    def finished(self, kind: str, seconds: float) -> str:
        """Counts one finished job of ``kind``; the progress line to print."""
        from dr_fdsl.textlog import duration

        self.done[kind] += 1
        self.seconds[kind] += seconds
        mean = {k: self.seconds[k] / self.done[k] for k in self.done if self.done[k]}
        left = sum((self.total[k] - self.done[k]) * mean.get(k, next(iter(mean.values()))) for k in self.total)
        elapsed = time.monotonic() - self.start
        done, total = sum(self.done.values()), sum(self.total.values())
        return (f"progress: {done}/{total} jobs done ({self.done['pre-training']}/{self.total['pre-training']} "
                f"pre-trainings, {self.done['judgement']}/{self.total['judgement']} judgements), elapsed "
                f"{duration(elapsed)}, eta {duration(left)} (estimated total {duration(elapsed + left)})")


def plan_of(preset: dict, args: argparse.Namespace, table: dict[str, Arm], arms: list[str]) -> tuple[Plan, str]:
    """The comparison's jobs and the plan's lines: arms x seeds x protocols, and what each job costs."""
    pretrainings = len({(table[a].config or "", *arm_overrides(table[a], args)) for a in arms
                        if table[a].pretrain is not None}) * len(preset["seeds"])
    judgements = len(arms) * len(preset["seeds"]) * len(args.protocol)
    seeds = " ".join(map(str, preset["seeds"]))
    text = (f"plan: {len(arms)} arms ({' '.join(arms)}) x {len(preset['seeds'])} seeds ({seeds}) "
            f"x {len(args.protocol)} protocols ({' '.join(args.protocol)}): {pretrainings} pre-trainings of "
            f"{preset['steps']} steps at batch {preset['batch']} and {judgements} judgements on {preset['dataset']} "
            f"({preset['epochs']} epochs); the estimated total follows each finished job")
    return Plan(pretrainings, judgements), text


# Flat 2D families seen whole through a fixed orthographic camera (their points are placed in NDC).
_FLAT = ["renderer.view.rotation=none", "renderer.view.projection=orthographic", "renderer.view.ortho_scale=[1, 1]"]
_MULTI = ["renderer.objects.max=5", "train.objective=multilabel", "image_aug.mixup=0", "image_aug.cutmix=0",
          "image_aug.label_smoothing=0"]
# Arms that are formula families: name -> (config file, overrides); every arm renders frozen.
FAMILY_ARMS = {
    "families_cpu": {  # the quickstart's scale: 10 categories x 2,000 points at 32 px
        "ifs3d": ("configs/quickstart.yaml", []),
        "ofdb": ("configs/quickstart.yaml", ["bank.family=ofdb"]),
        "fractaldb": ("configs/quickstart.yaml", ["bank.family=fractaldb", "bank.seed=1", *_FLAT]),
        "visualatom": ("configs/quickstart.yaml", ["bank.family=visualatom", "renderer.color_init=bank", *_FLAT]),
        "svd2d": ("configs/quickstart.yaml", ["bank.family=svd2d", "renderer.color_init=bank", *_FLAT,
                                              "renderer.augment.window_scale=[0.5, 2.0]",
                                              "renderer.augment.window_shift=0.2", "renderer.augment.dihedral=true",
                                              "renderer.augment.map_jitter=[0.8, 1.1]",
                                              "renderer.augment.scale=[1, 1]", "renderer.augment.shift=0"]),
        "multi": ("configs/quickstart.yaml", ["bank.family=svd2d", "renderer.color_init=bank", *_FLAT,
                                              "renderer.augment.dihedral=true", "renderer.augment.scale=[1, 1]",
                                              "renderer.augment.shift=0", *_MULTI]),
    },
    "families_gpu": {  # the published categories and recipes, every arm on DeiT-S/16 with AdamW
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
PRESETS["families-cpu"] = dict(PRESETS["cpu"], arms="families_cpu",
                               common=["renderer.mode=frozen", "renderer.raster_backend=sort"])
PRESETS["families-gpu"] = dict(PRESETS["gpu"], arms="families_gpu", common=["renderer.mode=frozen", *_DEIT],
                               steps=351563, eval_every=5000, model="deit_small_patch16_224", seeds=[0])
# 1p-frac's delta sweep (README table: CIFAR-100 top-1 19.9, 83.0, 84.2, 83.4): one arm per delta, the bank's one
# fractal the same in every arm (bank.seed), only the perturbation's size differs.
ONEPFRAC_DELTAS = (0.01, 0.05, 0.1, 0.2)
FAMILY_ARMS["onepfrac_cpu"] = {f"delta_{d}": ("configs/onepfrac_cpu.yaml", [f"bank.onepfrac.delta={d}"])
                               for d in ONEPFRAC_DELTAS}
FAMILY_ARMS["onepfrac_gpu"] = {f"delta_{d}": ("configs/onepfrac1k_vit_tiny.yaml", [f"bank.onepfrac.delta={d}"])
                               for d in ONEPFRAC_DELTAS}
# The learnt perturbation (issue 25 item 4): its size starts at the published best delta 0.1 and ascends the loss
# (mode adversarial) within the published flat range [0.05, 0.2]; judged against delta_0.1, paired over seeds.
ONEPFRAC_LEARNT = ["bank.onepfrac.delta=0.1", "renderer.mode=adversarial", "renderer.perturbation.budget=[0.05,0.2]"]
FAMILY_ARMS["onepfrac_cpu"]["learnt"] = ("configs/onepfrac_cpu.yaml", ONEPFRAC_LEARNT)
FAMILY_ARMS["onepfrac_gpu"]["learnt"] = ("configs/onepfrac1k_vit_tiny.yaml", ONEPFRAC_LEARNT)
# Its control: the learnt arm's drawing (no pixel snap, the same mode) with the size held at 0.1 (a budget of one
# value), so that learnt - fixed_unsnapped is what learning the size did, apart from the change of drawing.
ONEPFRAC_UNSNAPPED = ["bank.onepfrac.delta=0.1", "renderer.mode=adversarial", "renderer.perturbation.budget=[0.1,0.1]"]
FAMILY_ARMS["onepfrac_cpu"]["fixed_unsnapped"] = ("configs/onepfrac_cpu.yaml", ONEPFRAC_UNSNAPPED)
FAMILY_ARMS["onepfrac_gpu"]["fixed_unsnapped"] = ("configs/onepfrac1k_vit_tiny.yaml", ONEPFRAC_UNSNAPPED)
# 10 seeds and 50 images per class for 8 epochs: at the cpu preset's 2 seeds x 20 x 4 the intervals between arms
# were +-7 to +-28 points (3 seeds), at these +-1 to +-3 (docs/results/onepfrac/delta_sweep.md, 27 minutes).
PRESETS["onepfrac-cpu"] = dict(PRESETS["cpu"], arms="onepfrac_cpu", common=["renderer.mode=frozen"],
                               seeds=list(range(10)), per_class=50, epochs=8)
# The published scale: 240,000 steps of batch 256, ViT-Tiny at 224 px, fine-tuned on all of CIFAR-100.
PRESETS["onepfrac-gpu"] = dict(PRESETS["gpu"], arms="onepfrac_gpu", common=["renderer.mode=frozen"], steps=240000,
                               eval_every=5000, dataset="cifar100", per_class=0, epochs=30, seeds=[0])


def arms_of(preset: dict, study: str = "modes") -> dict[str, Arm]:
    """Every arm a preset and study can run, the no-pre-training one first: the renderer modes, the contest's
    ablation rows, or the masked-on-target arms."""
    if study == "target_mim":
        frozen = ["renderer.mode=frozen"]
        return {"none": Arm(None), "target_mim": Arm(None, True), "fractal": Arm(frozen),
                "fractal+target_mim": Arm(frozen, True)}
    if preset.get("arms") in FAMILY_ARMS:
        return {"none": Arm(None), **{name: Arm([*preset["common"], *extra], config=config)
                                      for name, (config, extra) in FAMILY_ARMS[preset["arms"]].items()}}
    if preset.get("arms") == "study2":
        return {"none": Arm(None), **{name: Arm([o.format(**preset) for o in overrides])
                                      for name, overrides in STUDY2_ARMS.items()}}
    if preset.get("arms") == "contest":
        x5 = 5 * (preset["points"] + 1) - 1
        rows = {name: Arm([o.format(points_x5=x5) for o in overrides]) for name, (overrides, _) in CONTEST_ARMS.items()}
        return {"none": Arm(None), **rows}
    modes = {m: [f"renderer.mode={m}"] for m in MODES}
    # joint_shared: one colour table for every category, so no per-category colour code can leak the label
    modes["joint_shared"] = ["renderer.mode=joint", "renderer.share_colors=true"]
    # match: the target images are the training split of the dataset the arms are judged on
    modes["match"] = ["renderer.mode=match", f"match.dataset={preset['dataset']}"]
    # lookahead: its outer loss reads the labelled training images fine-tuning uses (per_class, seeded alike)
    modes["lookahead"] = ["renderer.mode=lookahead", f"lookahead.dataset={preset['dataset']}",
                          f"lookahead.per_class={preset['per_class']}"]
    return {"none": Arm(None), **{name: Arm(overrides) for name, overrides in modes.items()}}


def default_arms(preset: dict, study: str = "modes") -> list[str]:
    """The arms run without --arms: all of them, but only the three classic renderer modes of a modes study
    outside the study presets."""
    arms = list(arms_of(preset, study))
    return ["none", *MODES] if study == "modes" and preset.get("arms") is None else arms


def pretrain_config(preset: dict, overrides: list[str], seed: int, out: Path, config: str | None = None):
    """The checked config of one fractal pre-training of the preset's budget with ``overrides`` (those of an
    :class:`Arm`, and more: :func:`arm_overrides`), from ``config`` (None: the preset's); a ConfigError naming the
    key if it cannot run."""
    from dr_fdsl.config import load_config

    mode = next((o.split("=", 1)[1] for o in overrides if o.startswith("renderer.mode=")), "frozen")
    config = ROOT / (config or preset["config"].format(mode=mode))
    return load_config(config, [*preset.get("overrides", []), *overrides, f"output_dir={out}",
                                f"seed={seed}", f"train.max_steps={preset['steps']}",
                                f"train.batch_size={preset['batch']}", f"train.eval_every={preset['eval_every']}",
                                f"train.image_every={preset['steps']}", f"train.ckpt_every={preset['steps']}",
                                "train.progress=false"])


def pretrain(preset: dict, overrides: list[str], seed: int, out: Path, config: str | None = None) -> dict:
    """One fractal pre-training (:func:`pretrain_config`); its summary."""
    from dr_fdsl.engine import build_run, fit

    return fit(build_run(pretrain_config(preset, overrides, seed, out, config)))  # the process group stays up


def arm_overrides(arm: Arm, args: argparse.Namespace) -> list[str]:
    """The overrides of ``arm``'s pre-training: its own, then ``--pretrain-set``; a match arm reads its target from
    ``--data-root``."""
    overrides = [*arm.pretrain, *args.pretrain_set]
    return overrides + ([f"match.data_root={args.data_root}"] if "renderer.mode=match" in overrides else []) + \
        ([f"lookahead.data_root={args.data_root}"] if "renderer.mode=lookahead" in overrides else [])


def check_pretrain_configs(preset: dict, args: argparse.Namespace, table: dict[str, Arm], arms: list[str],
                           out: Path) -> None:
    """Loads every arm's pre-training config before any run starts, so that a key at fault is one line now (and the
    folder holds no half comparison), not a failure after the runs before it."""
    for mode in arms:
        if table[mode].pretrain is not None:
            pretrain_config(preset, arm_overrides(table[mode], args), preset["seeds"][0],
                            out / "pretrain" / f"{mode}_s{preset['seeds'][0]}", table[mode].config)


def pretrain_curve(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("val/top1")] if "val/top1" in events.Tags()["scalars"] else []


def top1_by_arm(rows: list[dict]) -> dict[str, dict[int, float]]:
    """``{arm: {seed: top-1 %}}`` from one protocol's rows, arms in their order of appearance."""
    top1: dict[str, dict[int, float]] = {}
    for r in rows:
        top1.setdefault(r["mode"], {})[r["seed"]] = 100 * r["final_top1"]
    return top1


def summarize(rows: list[dict], published: dict[str, float] | None = None) -> str:
    """Markdown: per arm the mean and 95% interval over seeds (and the published top-1 where given); per pair of
    arms the paired difference."""
    from dr_fdsl.stats import holm, mean_interval, paired_difference, paired_t_test

    arms = list(dict.fromkeys(r["mode"] for r in rows))
    published = published or {}
    extra = " published top-1 (%) |" if published else ""
    lines = ["| pre-training | seeds | top-1 (%) | cumulative error (2nd half) | pre-train val top-1 | leakage probe |"
             + extra, "|---|---|---|---|---|---|" + ("---|" if published else "")]

    def interval(values: list[float], scale: float = 1.0) -> str:
        return str(mean_interval([scale * v for v in values])) if values else "-"

    for mode in arms:
        mine = [r for r in rows if r["mode"] == mode]
        pre = [r["pretrain_top1"] for r in mine if r["pretrain_top1"] != ""]
        probe = [r["probe_top1"] for r in mine if r["probe_top1"] != ""]
        lines.append(f"| {mode} | {len(mine)} | {interval([r['final_top1'] for r in mine], 100)} | "
                     f"{interval([r['cumulative_error'] for r in mine])} | {interval(pre, 100)} | "
                     f"{interval(probe, 100)} |" + (f" {published.get(mode, '-')} |" if published else ""))
    lines += ["", "| A - B (paired over seeds) | seeds | top-1 difference (points) | interval excludes 0 | p | "
              "Holm p |", "|---|---|---|---|---|---|"]
    top1 = top1_by_arm(rows)
    pairs = list(itertools.combinations(arms, 2))
    p_values = [paired_t_test(top1[a], top1[b]) for a, b in pairs]
    for (a, b), p, adjusted in zip(pairs, p_values, holm(p_values)):
        diff = paired_difference(top1[a], top1[b])
        lines.append(f"| {a} - {b} | {diff.n} | {diff} | {'yes' if diff.excludes_zero else 'no'} | {p_text(p)} | "
                     f"{p_text(adjusted, bold=adjusted < 0.05)} |")
    return "\n".join(lines)


def p_text(p: float, bold: bool = False) -> str:
    """A p-value to 2 significant digits, ``-`` when undefined (fewer than 2 seeds), bold when asked."""
    text = "-" if math.isnan(p) else f"{p:.2g}" if p >= 1e-4 else "<1e-4"
    return f"**{text}**" if bold else text


# What each pre-training's summary.json says its renderer learnt and cost (renderer.table_statistics, the probe).
RENDERER_COLUMNS = (("val/top1", "held-out top-1 (%)", 100), ("probe/val_acc", "probe (%)", 100),
                    ("probe/color_val_acc", "colour probe (%)", 100), ("probe/size_val_acc", "size probe (%)", 100),
                    ("renderer/color_drift", "colour drift", 1), ("renderer/radius_drift", "radius drift", 1),
                    ("renderer/color_code", "colour code", 1), ("images_per_s", "images/s", 1))


def renderer_table(out: Path, order: Sequence[str] = ()) -> str:
    """Markdown: per pre-trained arm, the mean and 95% interval over seeds of what its pre-trainings' summary.json
    files under ``out`` (``pretrain/<arm>_s<seed>``, also inside ``seeds/<seed>/`` with --jobs) record: held-out
    top-1, the leakage probe and its colour and size heads, how far colours and radii drifted from their initial
    values (mean absolute change), the colour tables' label code (between- over within-category spread) and
    pre-training images/s. Arms in ``order`` first, in that order. Empty when no summary is found."""
    from dr_fdsl.stats import mean_interval

    values: dict[str, dict[str, list[float]]] = {}
    for path in sorted(out.glob("**/pretrain/*_s*/summary.json"), key=lambda p: p.parent.name):
        name = re.fullmatch(r"(.+)_s\d+(-\d+)?", path.parent.name)
        if name is None:
            continue
        summary = json.loads(path.read_text())
        for key, _, _ in RENDERER_COLUMNS:
            if isinstance(summary.get(key), (int, float)) and math.isfinite(summary[key]):
                values.setdefault(name.group(1), {}).setdefault(key, []).append(float(summary[key]))
    if not values:
        return ""
    lines = ["| pre-training | seeds | " + " | ".join(title for _, title, _ in RENDERER_COLUMNS) + " |",
             "|---|---|" + "---|" * len(RENDERER_COLUMNS)]
    for arm in sorted(values, key=lambda a: list(order).index(a) if a in order else len(order)):
        got = values[arm]
        cells = [_short(mean_interval([scale * v for v in got[key]])) if key in got else "-"
                 for key, _, scale in RENDERER_COLUMNS]
        lines.append(f"| {arm} | {max(len(v) for v in got.values())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(interval) -> str:
    """An :class:`~dr_fdsl.stats.Interval` to 3 significant digits (its half-width to 2)."""
    return f"{interval.mean:.3g}" + (f" ± {interval.half_width:.2g}" if interval.n > 1 else "")


def plot(rows: list[dict], curves: dict, path: Path) -> None:
    """Left: each arm's fine-tuning curve, the mean over seeds. Right: each arm's held-out pre-training top-1, every
    seed thin and the mean over seeds bold, in the arm's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for index, mode in enumerate(dict.fromkeys(r["mode"] for r in rows)):
        colour = f"C{index}"
        mine = [r for r in rows if r["mode"] == mode]
        mean = [100 * statistics.mean(r["top1_curve"][i] for r in mine) for i in range(len(mine[0]["top1_curve"]))]
        left.plot(mine[0]["eval_epochs"], mean, marker="o", color=colour, label=mode)
        runs = [curve for curve in curves.get(mode, {}).values() if curve]
        for curve in runs:
            right.plot([step for step, _ in curve], [100 * top1 for _, top1 in curve], color=colour, alpha=0.3, lw=1)
        if runs and all(len(c) == len(runs[0]) for c in runs):
            steps = [step for step, _ in runs[0]]
            right.plot(steps, [100 * statistics.mean(c[i][1] for c in runs) for i in range(len(steps))], marker="o",
                       color=colour, lw=2, label=mode)
    left.set(xlabel="fine-tuning epoch", ylabel="test top-1 (%)", title="fine-tuning (mean over seeds)")
    right.set(xlabel="pre-training step", ylabel="held-out view top-1 (%)",
              title="pre-training (seeds thin, their mean bold)")
    left.legend()
    if right.get_legend_handles_labels()[0]:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_differences(rows: list[dict], path: Path, reference: str = "frozen") -> None:
    """One panel per protocol: every other arm's paired top-1 difference to ``reference`` (to the first arm if
    ``reference`` did not run), mean and 95% interval over seeds; an interval clear of the zero line is a
    difference the seeds resolve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dr_fdsl.stats import paired_difference

    protocols = list(dict.fromkeys(r.get("protocol", "finetune") for r in rows))
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 3.2), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        top1 = top1_by_arm([r for r in rows if r.get("protocol", "finetune") == protocol])
        base = reference if reference in top1 else next(iter(top1))
        others = [m for m in top1 if m != base]
        diffs = [paired_difference(top1[m], top1[base]) for m in others]
        ax.errorbar([d.mean for d in diffs], range(len(others)), xerr=[d.half_width for d in diffs], fmt="o",
                    capsize=4)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(range(len(others)), others)
        ax.invert_yaxis()
        ax.set(xlabel=f"top-1 minus {base} (points)", title=protocol)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pretrain_value(preset: dict, pretrain_set: list[str], key: str, default: str) -> str:
    """The value the pre-trainings give config key ``key`` through the preset's overrides and ``--pretrain-set``
    (the last wins), else ``default``: the no-pre-training arm is built as they are."""
    values = [o.split("=", 1)[1] for o in [*preset.get("overrides", []), *pretrain_set] if o.startswith(f"{key}=")]
    return values[-1] if values else default


def run_seeds(preset: dict, args: argparse.Namespace, table: dict[str, Arm], arms: list[str],
              masked: TargetMIMSettings, out: Path, is_main: bool, plan: Plan | None = None,
              say=print) -> tuple[list[dict], dict]:
    """Every arm for every seed of ``preset`` in this process: the result rows and the pre-training curves
    (``{arm: {seed: [(step, held-out top-1)]}}``). The main process says each result, and with ``plan`` the
    progress and ETA after each job, through ``say``."""
    from dr_fdsl.finetune import FinetuneSettings, finetune
    from dr_fdsl.target_mim import TargetMIMSettings

    scratch = dict(model=pretrain_value(preset, args.pretrain_set, "model.name", preset["model"]),
                   patch_size=int(pretrain_value(preset, args.pretrain_set, "model.patch_size", "0")))
    rows, curves = [], {}
    for seed in preset["seeds"]:
        runs: dict[tuple[str, ...], dict] = {}  # arms with the same pre-training share one run of it
        for mode in arms:
            arm, summary, run = table[mode], {}, None
            if arm.pretrain is not None:
                overrides = arm_overrides(arm, args)
                key = (arm.config or "", *overrides)
                if key not in runs:
                    path, start = out / "pretrain" / f"{mode}_s{seed}", time.monotonic()
                    runs[key] = pretrain(preset, overrides, seed, path, arm.config)
                    curves.setdefault(mode, {})[seed] = pretrain_curve(Path(runs[key]["output_dir"]))
                    if is_main and plan is not None:
                        say(plan.finished("pre-training", time.monotonic() - start))
                summary = runs[key]
                run = Path(summary["output_dir"])  # where the run really wrote (a numbered folder if taken)
            for protocol in args.protocol:  # every protocol judges the same pre-training
                start = time.monotonic()
                result = finetune(FinetuneSettings(
                    dataset=preset["dataset"], data_root=args.data_root, pretrained=str(run) if run else None,
                    **({} if run else scratch),
                    image_size=preset["image_size"], epochs=preset["epochs"],
                    eval_every=preset.get("ft_eval_every", 1) if protocol == "finetune" else 1,
                    batch_size=preset["ft_batch"], lr=preset["ft_lr"], per_class=preset["per_class"],
                    max_test=preset["max_test"], seed=seed, protocol=protocol, progress=False,
                    output_dir=str(out / ("finetune" if protocol == "finetune" else protocol) / f"{mode}_s{seed}"),
                    target_mim=masked if arm.target_mim else TargetMIMSettings()))
                rows.append({"seed": seed, "mode": mode, "protocol": protocol,
                             "pretrain_top1": summary.get("val/top1", ""),
                             "probe_top1": summary.get("probe/val_acc", ""),
                             "final_top1": result["final_top1"], "cumulative_error": result["cumulative_error"],
                             "top1_curve": result["top1"],
                             "eval_epochs": result.get("eval_epochs", list(range(1, len(result["top1"]) + 1))),
                             "target_mim_loss": result["target_mim"]["loss"][-1] if "target_mim" in result else "",
                             "target_mim_identity": (result["target_mim"]["identity_loss"][-1]
                                                     if "target_mim" in result else "")})
                if is_main:
                    say(f"seed {seed} {mode:>11} {protocol}: top-1 {100 * result['final_top1']:.2f}%, "
                        f"cumulative error {result['cumulative_error']:.1f}")
                    if plan is not None:
                        say(plan.finished("judgement", time.monotonic() - start))

    return rows, curves


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# A worker's environment names the compare.py that started it (its pid); the worker removes it at once.
WORKER_PARENT = "DR_FDSL_COMPARE_PARENT"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_GRACE_S = 5.0  # how long a stopped worker's process group has to go on SIGTERM before SIGKILL


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that the same clean-up stops the workers."""


def raise_terminated(signum, frame):
    raise Terminated


def end_own_group(signum=None, frame=None) -> None:
    """A worker's SIGTERM handler: kills the worker's whole process group (the worker and whatever torch or
    accelerate started in it), at once; checkpoints are written then renamed, so nothing is left half-written."""
    print("compare.py worker: stopped, because the compare.py that started it ended or stopped it", file=sys.stderr,
          flush=True)
    if os.getpgrp() == os.getpid():  # it leads its own group (start_worker): the group is its own processes
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent() -> None:
    """In a worker (``WORKER_PARENT`` in its environment; a no-op elsewhere): the worker and every process it starts
    end when its parent compare.py does, however the parent ends.

    SIGTERM ends the worker's process group (:func:`end_own_group`). The parent sends it when it stops (a failed seed,
    Ctrl-C, SIGTERM); on Linux the kernel sends it when the parent dies, also of SIGKILL (``PR_SET_PDEATHSIG``). The
    worker sets that itself, first thing, rather than in a ``preexec_fn``: the parent has imported torch, and code
    run between fork and exec in a process with threads may deadlock (Python's subprocess documentation). The
    setting survives exec either way; the check of ``getppid`` after it closes the gap of a parent that died before.
    Elsewhere than Linux a SIGKILL of the parent leaves its workers running."""
    parent = os.environ.pop(WORKER_PARENT, None)
    if parent is None:
        return
    signal.signal(signal.SIGTERM, end_own_group)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before the prctl: no signal would come
        end_own_group()


def start_worker(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """``command`` writing to ``log``, in a new session (its own process group, which no terminal's Ctrl-C reaches:
    this process stops it) that ends with this process (:func:`die_with_parent`)."""
    with open(log, "w") as stream:  # the child holds its own descriptor
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**env, WORKER_PARENT: str(os.getpid())})


def signal_group(process: subprocess.Popen, signum: int) -> None:
    """``signum`` to the process group a worker leads (it, and what it started that is still in it)."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone
        os.killpg(process.pid, signum)


def stop_workers(processes: list[subprocess.Popen], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to each worker's process group, SIGKILL to what is left of the groups after ``grace`` seconds; returns
    when every worker has exited. A second Ctrl-C or SIGTERM meanwhile is ignored (it would leave workers behind)."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for process in processes:
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            signal_group(process, signal.SIGKILL)  # also what a finished worker left in its group
            process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_in_workers(argv: list[str], seeds: list[int], jobs: int, out: Path, say=print) -> tuple[list[dict] | None,
                                                                                              dict]:
    """Every seed in its own process of this tool (``argv`` with ``--seeds S --out OUT/seeds/S --jobs 1``; argparse
    keeps an option's last value), ``jobs`` at a time, each with ``cpus // jobs`` threads; the rows and curves of
    all seeds in the order of ``seeds``. The first seed that fails stops the others; then ``None``, after naming its
    log. No worker, nor any process a worker started, outlives this call: a finished worker's process group is
    swept, and an exception here (Ctrl-C, SIGTERM: :class:`Terminated`) stops every running one; a SIGKILL of this
    process ends them through :func:`die_with_parent`."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    from dr_fdsl.textlog import duration

    pending, running, durations, began = list(seeds), {}, [], time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                seed = pending.pop(0)
                log = out / "seeds" / f"{seed}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                command = [sys.executable, str(Path(__file__).resolve()), *argv, "--seeds", str(seed), "--out",
                           str(out / "seeds" / str(seed)), "--jobs", "1"]
                running[seed] = (start_worker(command, log, env), time.monotonic())
                say(f"seed {seed}: started (pid {running[seed][0].pid}, {threads} threads; log {log})")
            time.sleep(1)
            for seed, (process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[seed]
                stop_workers([process])  # what it started and left running
                if process.returncode:
                    print(f"error: seed {seed} failed (exit code {process.returncode}); see "
                          f"{out / 'seeds' / f'{seed}.log'}; the other seeds were stopped", file=sys.stderr)
                    return None, {}
                durations.append(time.monotonic() - start)
                rounds_left = math.ceil((len(pending) + len(running)) / jobs)  # seeds still to finish, jobs at once
                say(f"seed {seed}: done in {durations[-1]:.0f} s; {len(durations)}/{len(seeds)} seeds done, elapsed "
                    f"{duration(time.monotonic() - began)}, eta {duration(rounds_left * statistics.mean(durations))}")
    finally:
        stop_workers([process for process, _ in running.values()])
    rows, curves = [], {}
    for seed in seeds:
        folder = out / "seeds" / str(seed)
        rows += json.loads((folder / "rows.json").read_text())
        for mode, by_seed in json.loads((folder / "curves.json").read_text()).items():
            curves.setdefault(mode, {}).update({int(k): v for k, v in by_seed.items()})
    return rows, curves


def earlier_results(out: Path) -> Path | None:
    """What shows that ``out`` holds an earlier comparison's work, or None: its results (``rows.json``,
    ``results.csv``, a worker's ``seeds/S/rows.json``), a judged arm's result (``finetune.json``, ``linear.json``,
    ...) or a pre-training's checkpoint. A new comparison would overwrite the first two and mix its runs with the
    last. A folder holding only ``preset.json`` and logs is one whose comparison failed before any run finished: a
    new comparison may use it."""
    for pattern in ("rows.json", "results.csv", "seeds/*/rows.json", "**/finetune*.json", "**/linear*.json",
                    "**/knn*.json",
                    "**/checkpoints/step_*"):
        found = next(iter(sorted(out.glob(pattern))), None) if out.is_dir() else None
        if found is not None:
            return found
    return None


def main(argv=None) -> int:

    from dr_fdsl.cli import report
    from dr_fdsl.engine.build import process_state
    from dr_fdsl.target_mim import TargetMIMSettings
    from dr_fdsl.textlog import TextLog

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
    parser.add_argument("--protocol", choices=["finetune", "linear", "knn"], nargs="+", default=["finetune"],
                        help="how pre-training is judged: fine-tuning, and/or a linear probe and k-NN on frozen "
                             "features (several: each judges the same pre-trainings, one table each)")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--arms", nargs="+", help="the arms to run beside no pre-training (default: frozen joint "
                        "adversarial, and also joint_shared and match in the study presets; every row of the contest "
                        "presets; every arm of --study target_mim)")
    parser.add_argument("--pretrain-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of every pre-training that change no pixel (e.g. "
                             "renderer.raster_backend=sort)")
    parser.add_argument("--study", choices=["modes", "target_mim"], default="modes",
                        help="arms: the renderer modes (or contest rows), or masked pre-training on the target")
    parser.add_argument("--tm-epochs", type=int, default=50, help="target_mim study: epochs of the masked phase")
    parser.add_argument("--tm-lr", type=float, default=1e-4, help="target_mim study: its peak lr (the seed's 1e-4)")
    parser.add_argument("--tm-batch", type=int, default=32, help="target_mim study: its batch per process")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds run at once, each in its own process of this tool with an equal share of the "
                             "CPU threads (on a small CPU, two one-thread processes outrun one two-thread process); "
                             "not with several accelerate processes")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings (the preset with its overrides, the arms) and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check every arm's pre-training config, the dataset and --out, print the plan and exit "
                             "without training or writing")
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    table = arms_of(preset, args.study)
    arms = default_arms(preset, args.study)
    if args.arms:
        unknown = sorted(set(args.arms) - set(table))
        if unknown:
            parser.error(f"--arms: unknown {unknown}; this preset's arms are {list(table)}")
        arms = ["none", *(a for a in table if a in args.arms and a != "none")]  # the baseline of every pair
    masked = TargetMIMSettings()
    if args.study == "target_mim":
        preset["target_mim"] = {"epochs": args.tm_epochs, "lr": args.tm_lr, "batch": args.tm_batch}
        e = args.tm_epochs
        masked = TargetMIMSettings(epochs=e, batch_size=args.tm_batch, lr=args.tm_lr, final_lr=args.tm_lr / 2,
                                   warmup_epochs=round(e / 10), final_epochs=round(0.3 * e))
        masked.validate()
    for key in ("steps", "epochs", "per_class", "max_test", "seeds", "dataset", "ft_batch"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    preset["eval_every"] = min(preset["eval_every"], preset["steps"])
    if len(set(preset["seeds"])) != len(preset["seeds"]):
        parser.error(f"--seeds {preset['seeds']}: each seed once (a paired difference counts a seed once)")
    # What else decides the numbers, recorded beside the budget (preset.json, results.md)
    preset.update(arms_run=arms, protocols=args.protocol, pretrain_set=args.pretrain_set, jobs=args.jobs,
                  threads=int(os.environ.get("OMP_NUM_THREADS", 0)) or torch_threads())
    out = Path(args.out or f"runs/compare_{args.preset}")
    state = process_state()  # as the trainings' Accelerator sets the processes up
    is_main = state.is_main_process
    if args.jobs < 1 or (args.jobs > 1 and state.num_processes > 1):
        parser.error(f"--jobs {args.jobs}: must be >= 1, and 1 under a multi-process accelerate launch")
    if out.exists() and not out.is_dir():
        print(f"error: --out '{out}' is a file, not a folder; choose a folder (new or empty) for the comparison",
              file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump({"out": str(out), **preset}, sort_keys=False), end="")
        return 0
    check_pretrain_configs(preset, args, table, arms, out)
    earlier = earlier_results(out)
    state.wait_for_everyone()  # every process has looked before the main one writes
    if earlier is not None:
        print(f"error: '{out}' holds an earlier comparison ({earlier.relative_to(out)}); choose another --out "
              "(nothing is overwritten)", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(preset, args, table, arms, out)
    if is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "preset.json").write_text(json.dumps(preset, indent=2))
        except OSError as err:
            return report(err, writing=str(out))
    # out/log.txt and the console: the plan, each result, progress with an ETA (the runs keep their own log.txt)
    log = TextLog(out, console=True, logger=logging.getLogger("dr_fdsl_compare")) if is_main else None
    try:
        return _run_and_write(preset, args, table, arms, masked, out, state, argv, log)
    finally:
        if log is not None:
            log.close()


def dry_run(preset: dict, args: argparse.Namespace, table: dict[str, Arm], arms: list[str], out: Path) -> int:
    """--dry-run, once every arm's pre-training config loaded and --out holds no comparison: the judging dataset is
    there (read, not downloaded); prints the plan. Exit 0, or 2 with one ``error:`` line."""
    from dr_fdsl import datasets

    for part in (True, False):  # a DataError is entry()'s one line
        datasets.load(preset["dataset"], part, args.data_root, 32, download=False)
    print(f"dry run: every arm's pre-training config is valid; would write to {out}")
    print(plan_of(preset, args, table, arms)[1])
    return 0


def _run_and_write(preset, args, table, arms, masked, out, state, argv, log) -> int:
    """``main`` once the comparison's folder is set up: every run, then the results."""
    from accelerate import PartialState

    is_main = state.is_main_process
    say = log.say if log is not None else print
    plan, text = plan_of(preset, args, table, arms)
    if is_main:
        say(text)
    if args.jobs > 1:
        default = signal.signal(signal.SIGTERM, raise_terminated)  # stop the workers as Ctrl-C does
        try:
            rows, curves = run_in_workers(argv if argv is not None else sys.argv[1:], preset["seeds"], args.jobs,
                                          out, say)
        except KeyboardInterrupt as err:
            how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
            print(f"{how}: every worker was stopped; the seeds that finished are under '{out / 'seeds'}'",
                  file=sys.stderr)
            return 143 if isinstance(err, Terminated) else 130
        finally:
            signal.signal(signal.SIGTERM, default)
        if rows is None:
            return 1
    else:
        rows, curves = run_seeds(preset, args, table, arms, masked, out, is_main, plan, say)
    if not is_main:  # under `accelerate launch`, every process ran the same runs; one writes the results
        PartialState().destroy_process_group()
        return 0
    (out / "rows.json").write_text(json.dumps(rows))  # full precision: for --jobs and later analysis
    (out / "curves.json").write_text(json.dumps(curves))

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "top1_curve": " ".join(f"{a:.4f}" for a in r["top1_curve"]),
                          "eval_epochs": " ".join(map(str, r["eval_epochs"]))} for r in rows)
    published = {name: top1 for name, (_, top1) in CONTEST_ARMS.items()} if preset.get("arms") == "contest" else None
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    table = "\n\n".join((f"## Protocol: {p}\n\n" if len(protocols) > 1 else "")
                        + summarize([r for r in rows if r["protocol"] == p], published) for p in protocols)
    title = ("The contest's ablation rows" if published else "Masked pre-training on the target"
             if args.study != "modes" else "Formula families" if preset.get("arms") in FAMILY_ARMS
             else "Renderer modes")
    note = ("Published top-1: the contest's own runs (CIFAR-100, its pre-training and fine-tuning recipe), for "
            "comparison at the contest preset's setting only.\n\n" if published else "")
    learnt = renderer_table(out, arms)
    learnt = (f"## What the renderers learnt (pre-training summaries)\n\n{learnt}\n\nDrift: mean absolute change of a "
              "colour (0-1) or radius from its initial value; colour code: the between-category spread of the colour "
              "tables' per-category means over their within-category spread (0 for one shared table).\n\n"
              if learnt else "")
    (out / "results.md").write_text(
        f"# {title} compared ({args.preset} preset, protocol {', '.join(protocols)})\n\n{table}\n\n{learnt}{note}"
        f"Budget: {json.dumps(preset)}\n\nMean ± half-width of the 95% Student-t interval over seeds; the paired "
        "differences are per seed (same initialisation and data order in every arm), each pair's interval at 95% "
        "on its own; p: the paired t-test's two-sided p-value; Holm p: adjusted by Holm's step-down method over "
        "all the protocol's pairs (bold: below 0.05, a difference that survives comparing every pair). "
        "Cumulative error: sum of (100 - top-1 %) over the second half of the evaluation epochs; lower is better.\n")
    curve_protocol = "finetune" if "finetune" in protocols else protocols[0]  # its curve is per epoch
    plot([r for r in rows if r["protocol"] == curve_protocol], curves, out / "curves.png")
    plot_differences(rows, out / "differences.png")
    print(table)
    print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'curves.png'}, {out / 'differences.png'}")
    PartialState().destroy_process_group()  # one launch, several trainings: the process group goes down once, here
    return 0


def entry(argv=None) -> int:
    """:func:`main` as the script runs it: a user's error or a failed write is one ``error:`` line (exit 2), Ctrl-C
    one line (exit 130) and SIGTERM one line (exit 143), also during the imports, which take seconds."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:  # not a worker's (die_with_parent's group kill); put back on return
        signal.signal(signal.SIGTERM, raise_terminated)  # SIGTERM ends this process as Ctrl-C does
    try:
        from dr_fdsl.cli import USER_ERROR, report, write_fault
        from dr_fdsl.errors import DrFdslError

        try:
            return main(argv)
        except DrFdslError as err:
            return report(err)
        except (OSError, RuntimeError) as err:  # disk full, read-only: the results, a run's files
            fault = write_fault(err, None, checkpoints=False)
            if fault is None:
                raise  # a bug: its traceback is what to read
            print(f"{fault}; the runs that finished are under its --out", file=sys.stderr)
            return USER_ERROR
    except KeyboardInterrupt as err:  # during imports, or a run in this process (--jobs 1); --jobs N: main says it
        terminated = isinstance(err, Terminated) or getattr(err, "code", 0) == 128 + signal.SIGTERM
        how = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"{how}: compare.py stopped; the runs that finished are under its --out", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    die_with_parent()  # a worker: first thing, before the imports that take seconds
    sys.exit(entry())
