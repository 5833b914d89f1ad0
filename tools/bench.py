"""Benchmark: what rendering in the loop costs next to the objective's step, timed on the training code itself.

    python tools/bench.py                                   # CPU-sized defaults (64 px, 2,000 points, test_vit)
    python tools/bench.py --gpu-preset --json bench.json    # batch 256, 224 px, 10,000 points, ViT-Tiny, bf16
    python tools/bench.py bank.family=visualatom renderer.view.rotation=none   # any family (or other override)
    python tools/bench.py --objective multilabel renderer.objects.max=5 image_aug.mixup=0 image_aug.cutmix=0 \
        image_aug.label_smoothing=0 bank.family=svd2d                        # multi-instance images

Builds real runs with ``build_run`` and times the functions ``train_step`` is made of: (a) the objective's
forward/backward and the optimiser update on a pre-rendered batch (``forward_backward`` + ``optimizer_step``),
(b) ``train_step`` with the frozen renderer, (c) ``train_step`` with the learnable (joint) renderer, timed in
turn round by round; the ratios b/a (ratio_frozen) and c/a (ratio_learnable), each the median of the per-round
ratios (so that a load that comes and goes weighs on both sides alike); time per stage (``renderer.scene``, the
rasteriser's occupied slots, compositing forward+backward, ``render_batch``, ``forward_backward``,
``optimizer_step``) and peak memory. Each figure is the median of --steps timed steps after --warmup; min, median
and max are printed (and in the JSON's spread_ms), with a warning when max/min exceeds 1.5 or the load average the
core count (the figures are noise).
The leakage probe is off: this measures the step.
With ``--match DATASET``, also (d) ``train_step`` with ``renderer.mode=match`` against that dataset's training
images (``match.batch`` = the batch unless overridden) and the match term's forward and backward alone: d/c is
what the match term costs per step relative to joint (joint and match steps alternate; d/c is the median of
the per-pair ratios).

    python tools/bench.py --size 32 --points 2000 --classes 10 --k 4 --match fashion_mnist   # quickstart scale

With ``--lookahead DATASET``, also (e) ``train_step`` with ``renderer.mode=lookahead`` (labelled training images of
DATASET) at ``lookahead.every`` = 1 and at its default (or the ``lookahead.every`` override): blocks of k lookahead
steps (one renderer update each) alternate with blocks of k frozen steps; the figure is the median of the per-block
ratios of their times, the cost of a lookahead run relative to a frozen one (``lookahead_over_frozen_k<k>``).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import tempfile
from pathlib import Path

import torch

from dr_fdsl.config import load_config
from dr_fdsl.engine import Batch, build_run, forward_backward, optimizer_step, render_batch, train_step
from dr_fdsl.modes.lookahead_settings import LookaheadConfig
from dr_fdsl.render import RASTERIZERS, fragment_weights
from dr_fdsl.render.composite import composite, draw_fragments
from dr_fdsl.render.keyed_random import image_keys
from dr_fdsl.render.rasterizers import rasterize_list
from dr_fdsl.timing import (
    check_bench_args,
    interleaved,
    machine_and_peak_memory,
    median_ratio,
    memory_per_image,
    noise_warning,
    save_json,
    time_spread,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-preset", action="store_true", help="batch 256, 224 px, 10k points, ViT-Tiny, bf16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--backend", default="sort", choices=sorted(RASTERIZERS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--objective", default="classify", help="train.objective of both runs")
    parser.add_argument("--json", default=None)
    parser.add_argument("--match", default=None, metavar="DATASET",
                        help="also time renderer.mode=match against DATASET's training images (e.g. fashion_mnist)")
    parser.add_argument("--lookahead", default=None, metavar="DATASET",
                        help="also time renderer.mode=lookahead against DATASET's labelled training images")
    parser.add_argument("overrides", nargs="*", default=[],
                        help="config overrides for both runs, e.g. bank.family=fractaldb renderer.view.rotation=none")
    args = parser.parse_args()
    if args.gpu_preset:
        args.batch, args.size, args.points, args.classes, args.k = 256, 224, 10000, 1000, 8
        args.model, args.precision = "vit_tiny_patch16_224", "bf16"
    check_bench_args(parser, args, positive=("batch", "size", "points", "classes", "k", "steps"),
                     nonnegative=("warmup",), json_path=args.json)
    if any(o.startswith(("renderer.mode=", "train.objective=")) for o in args.overrides):
        parser.error("renderer.mode and train.objective are what the benchmark sets: frozen vs joint, --objective")
    scratch = Path(tempfile.mkdtemp(prefix="dr_fdsl_bench_"))  # runs write config and logs: keep them apart

    def run(mode: str, *extra: str):
        target = [f"match.dataset={args.match}", f"match.batch={args.batch}"] if mode == "match" else []
        if mode == "lookahead":
            target = [f"lookahead.dataset={args.lookahead}"]
        cfg = load_config(None, [*target,
            f"output_dir={scratch / mode}", f"bank.num_classes={args.classes}", f"bank.num_points={args.points}",
            f"renderer.mode={mode}", f"renderer.image_size={args.size}", f"renderer.points_per_pixel={args.k}",
            f"renderer.raster_backend={args.backend}", "renderer.radius_init=0.015", "renderer.augment.scale=[0.8,1.2]",
            "renderer.augment.shift=0.1", "renderer.augment.subsample=[0.5,1.0]", f"model.name={args.model}",
            f"train.batch_size={args.batch}", f"train.mixed_precision={args.precision}", "train.probe=false",
            "train.progress=false", "train.max_steps=1000000", "train.log_every=1000000",
            f"train.objective={args.objective}", *args.overrides, *extra])
        return build_run(cfg)

    frozen = run("frozen")
    device = frozen.accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    b = args.batch
    with torch.no_grad():
        batch = render_batch(frozen)
    rendered = Batch(batch.images.detach(), batch.class_ids, batch.view_seeds, batch.rows)

    def objective_and_update(r=frozen):  # (a): the step without rendering, on the training functions
        with r.accelerator.accumulate(*r.objective.modules()):
            forward_backward(r, rendered)
            optimizer_step(r)

    joint = run("joint")
    # (a), (b) and (c) in turn, round by round: the ratios are the medians of the per-round ratios
    spreads, rounds = interleaved({"(a) objective alone": objective_and_update,
                                   "(b) frozen step": lambda: train_step(frozen),
                                   "(c) learnable step": lambda: train_step(joint)}, args.steps, args.warmup, device)
    step_alone, step_frozen = spreads["(a) objective alone"].median, spreads["(b) frozen step"].median
    step_learnable = spreads["(c) learnable step"].median
    ratio_frozen = median_ratio(rounds, "(a) objective alone", "(b) frozen step")
    ratio_learnable = median_ratio(rounds, "(a) objective alone", "(c) learnable step")

    # Stages, each timed alone on the same batch.
    renderer, raster = frozen.renderer, RASTERIZERS.get(args.backend)
    ids, seeds = rendered.class_ids, rendered.view_seeds
    scene, _ = renderer.scene(ids, seeds)
    fragments = raster(scene.points, scene.radii, args.size, args.k)
    listed = rasterize_list(args.backend, scene.points, scene.radii, args.size, args.k)
    colors, radii = scene.colors.detach().requires_grad_(), scene.radii.detach().requires_grad_()

    def composite_fb():  # what render_scene runs: draw_fragments (occupied slots, hand-written backward)
        draw_fragments(listed, radii, colors, scene.background).mean().backward()

    def composite_fb_reference():  # PyTorch3D's compositors on the dense fragments, autograd throughout
        image = composite(fragments, fragment_weights(fragments, radii), colors, scene.background)
        image.mean().backward()

    def render_fb(backend: str):  # rasterise with ``backend``, composite, backward to colours and radii
        return lambda: draw_fragments(rasterize_list(backend, scene.points, radii, args.size, args.k), radii,
                                      colors, scene.background).mean().backward()

    def forward_backward_only():
        forward_backward(frozen, rendered)
        frozen.objective.optimizer.zero_grad(set_to_none=True)

    def render_only():
        with torch.no_grad():
            render_batch(frozen)

    stages = {
        "points_and_camera": time_spread(lambda: renderer.scene(ids, seeds), args.steps, args.warmup, device),
        # what the renderer runs: the occupied slots (the sort backend lists them; others' dense fragments listed)
        "rasterise": time_spread(lambda: rasterize_list(args.backend, scene.points, scene.radii, args.size, args.k),
                                 args.steps, args.warmup, device),
        "composite_fwd_bwd": time_spread(composite_fb, args.steps, args.warmup, device),
        "composite_fwd_bwd_reference": time_spread(composite_fb_reference, args.steps, args.warmup, device),
        "render_batch": time_spread(render_only, args.steps, args.warmup, device),
        # bank.<family>.instances: drawing each image's instance (the chaos-game replay); part of points_and_camera
        **({"instances": time_spread(lambda: renderer.instances(ids, image_keys(ids, seeds), renderer.bank_points(ids)),
                                     args.steps, args.warmup, device)} if renderer.instances is not None else {}),
        "forward_backward": time_spread(forward_backward_only, args.steps, args.warmup, device),
        "optimizer_step": time_spread(lambda: optimizer_step(frozen), args.steps, args.warmup, device),
    }
    # Memory of rendering forward and backward (scene given), per image, for every raster backend
    memory = {backend: memory_per_image(render_fb(backend), b, device) for backend in sorted(RASTERIZERS)
              if backend != "auto"}  # auto is one of the two
    step_match = None
    if args.match:
        match = run("match")
        # Joint and match steps alternate, so that a load that comes and goes on a shared machine weighs on both
        # alike: d/c is the median of the per-pair ratios.
        pair_spreads, pairs = interleaved({"joint": lambda: train_step(joint), "match": lambda: train_step(match)},
                                          args.steps, args.warmup, device)
        step_match = pair_spreads["match"].median
        match_over_joint = median_ratio(pairs, "match", "joint")

        def match_term():  # the distance to the next target batch, forward and backward to the images
            images = rendered.images.detach().requires_grad_()
            match.mode.matcher(images).total.backward()

        stages["match_term_fwd_bwd"] = time_spread(match_term, args.steps, args.warmup, device)

    lookahead = {}
    if args.lookahead:
        default_every = next((int(o.split("=", 1)[1]) for o in args.overrides if o.startswith("lookahead.every=")),
                             LookaheadConfig().every)
        for every in sorted({1, default_every}):
            looking = run("lookahead", f"lookahead.every={every}", f"output_dir={scratch / f'lookahead{every}'}")
            # blocks of k frozen and k lookahead steps in turn; each lookahead block starts with its one update
            _, blocks = interleaved({"frozen": lambda k=every: [train_step(frozen) for _ in range(k)],
                                     "lookahead": lambda k=every, r=looking: [train_step(r) for _ in range(k)]},
                                    args.steps, args.warmup, device)
            lookahead[f"lookahead_over_frozen_k{every}"] = median_ratio(blocks, "lookahead", "frozen")

    machine, peak, measured = machine_and_peak_memory(device)
    result = {
        "machine": machine, "batch": b, "size": args.size, "points": args.points, "k": args.k,
        "model": args.model, "precision": args.precision, "backend": args.backend, "objective": args.objective,
        "images_per_s_objective_alone": b / step_alone, "images_per_s_frozen": b / step_frozen,
        "images_per_s_learnable": b / step_learnable, "ratio_frozen": ratio_frozen,
        "ratio_learnable": ratio_learnable,
        "stage_ms": {k: round(v.median * 1e3, 3) for k, v in stages.items()}, "peak_memory_mib": round(peak, 1),
        "spread_ms": {k: [round(t * 1e3, 3) for t in v] for k, v in {**spreads, **stages}.items()},  # min, med, max
        "render_memory": memory,
    }
    if step_match is not None:
        result.update(match=args.match, images_per_s_match=b / step_match, ratio_match=step_alone / step_match,
                      match_over_joint=match_over_joint)
    print(f"{machine}: batch {b}, {args.size} px, {args.points} points, K={args.k}, {args.model} "
          f"({args.precision}), raster backend {args.backend}")
    print(f"  (a) objective + update alone   {result['images_per_s_objective_alone']:9.1f} images/s")
    print(f"  (b) frozen renderer in loop    {result['images_per_s_frozen']:9.1f} images/s   "
          f"b/a = {result['ratio_frozen']:.3f}")
    print(f"  (c) learnable renderer in loop {result['images_per_s_learnable']:9.1f} images/s   "
          f"c/a = {result['ratio_learnable']:.3f}")
    if step_match is not None:
        print(f"  (d) match renderer in loop     {result['images_per_s_match']:9.1f} images/s   "
              f"d/a = {result['ratio_match']:.3f}   step time d/c = {result['match_over_joint']:.3f} "
              f"(match vs joint, target {args.match})")
    if lookahead:
        result.update(lookahead=args.lookahead, **lookahead)
        print(f"  (e) lookahead renderer (target {args.lookahead}): step time relative to frozen "
              + ", ".join(f"k={k.rsplit('k', 1)[1]}: {v:.3f}" for k, v in lookahead.items()))
    print(f"  ms per batch over {args.steps} timed calls:      min    median       max")
    for key, value in {**spreads, **stages}.items():
        print(f"      {key:<22} {value.min * 1e3:9.2f} {value.median * 1e3:9.2f} {value.max * 1e3:9.2f}")
    print(f"  peak memory {peak:.0f} MiB ({measured})")
    warning = noise_warning({**spreads, **stages})
    if warning:
        print(warning)
    result["noise_warning"] = warning
    for backend, figures in memory.items():
        print(f"  render fwd+bwd memory, {backend:<9} " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    return save_json(args.json, result) if args.json else 0


if __name__ == "__main__":
    import sys

    from dr_fdsl.cli import report
    from dr_fdsl.errors import DrFdslError

    def reported() -> int:
        try:
            return main()
        except DrFdslError as err:
            return report(err)

    sys.exit(entry(reported))
