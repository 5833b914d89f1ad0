"""Benchmark: what rendering in the loop costs next to the classifier step.

    python tools/bench.py                                   # CPU-sized defaults (64 px, 2,000 points, test_vit)
    python tools/bench.py --gpu-preset --json bench.json    # batch 256, 224 px, 10,000 points, ViT-Tiny, bf16

Measures images/s of (a) the classifier step alone on pre-rendered images, (b) training with the frozen
renderer in the loop, (c) with the learnable (joint) renderer; the ratios b/a (ratio_frozen) and c/a
(ratio_learnable); time per stage (point augmentation and projection, rasterise, composite, image
augmentation, classifier forward+backward, optimiser) and peak memory. Each figure is the median of --steps
timed steps after --warmup. The leakage probe is off: this measures the step itself.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> None:
    from dr_fdsl.config import load_config
    from dr_fdsl.engine import Trainer
    from dr_fdsl.render.points import composite, fragment_weights, rasterize
    from dr_fdsl.render.sort_raster import rasterize_sorted
    from dr_fdsl.timing import machine_and_peak_memory, median_time

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-preset", action="store_true", help="batch 256, 224 px, 10k points, ViT-Tiny, bf16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--backend", default="sort", choices=["pytorch3d", "sort"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.gpu_preset:
        args.batch, args.size, args.points, args.classes, args.k = 256, 224, 10000, 1000, 8
        args.model, args.precision = "vit_tiny_patch16_224", "bf16"

    def trainer(mode: str) -> Trainer:
        cfg = load_config(None, [
            f"output_dir={args.out}/{mode}", f"bank.num_classes={args.classes}", f"bank.num_points={args.points}",
            f"renderer.mode={mode}", f"renderer.image_size={args.size}", f"renderer.points_per_pixel={args.k}",
            f"renderer.raster_backend={args.backend}", "renderer.radius_init=0.015", "renderer.augment.scale=[0.8,1.2]",
            "renderer.augment.shift=0.1", "renderer.augment.subsample=[0.5,1.0]", f"model.name={args.model}",
            f"train.batch_size={args.batch}", f"train.mixed_precision={args.precision}", "train.probe=false",
            "train.progress=false", "train.max_steps=1000000", "train.log_every=1000000"])
        return Trainer(cfg)

    frozen = trainer("frozen")
    device = frozen.accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    b = args.batch
    ids, seeds = frozen.stream.draw(b)
    ids, seeds = ids.to(device), seeds.to(device)
    with torch.no_grad():
        rendered = frozen.renderer(ids, seeds)

    def classifier_step(images, labels, t=frozen):
        x, targets = t.image_aug(t.normalize(images), labels)
        loss = t.image_aug.train_loss(t.model(x).float(), targets)
        t.accelerator.backward(loss)
        t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)

    step_alone = median_time(lambda: classifier_step(rendered, ids), args.steps, args.warmup, device)
    step_frozen = median_time(frozen.train_step, args.steps, args.warmup, device)

    # Stages, each timed alone on the same batch.
    renderer = frozen.renderer
    scene = renderer.scene(ids, seeds)
    raster = rasterize_sorted if args.backend == "sort" else rasterize
    fragments = raster(scene.points, scene.radii, args.size, args.k)
    colors, radii = scene.colors.detach().requires_grad_(), scene.radii.detach().requires_grad_()

    def composite_fb():
        image = composite(fragments, fragment_weights(fragments, radii), colors, scene.background)
        image.mean().backward()

    def classifier_fb():
        x, targets = frozen.image_aug(frozen.normalize(rendered), ids)
        frozen.accelerator.backward(frozen.image_aug.train_loss(frozen.model(x).float(), targets))

    stages = {
        "points_and_camera": median_time(lambda: renderer.scene(ids, seeds), args.steps, args.warmup, device),
        "rasterise": median_time(lambda: raster(scene.points, scene.radii, args.size, args.k), args.steps,
                                 args.warmup, device),
        "composite_fwd_bwd": median_time(composite_fb, args.steps, args.warmup, device),
        "image_augment": median_time(lambda: frozen.image_aug(frozen.normalize(rendered), ids), args.steps,
                                     args.warmup, device),
        "classifier_fwd_bwd": median_time(classifier_fb, args.steps, args.warmup, device),
        "optimiser": median_time(lambda: frozen.optimizer.step(), args.steps, args.warmup, device),
    }
    frozen.optimizer.zero_grad(set_to_none=True)

    joint = trainer("joint")
    step_learnable = median_time(joint.train_step, args.steps, args.warmup, device)

    machine, peak, measured = machine_and_peak_memory(device)
    result = {
        "machine": machine, "batch": b, "size": args.size, "points": args.points, "k": args.k,
        "model": args.model, "precision": args.precision, "backend": args.backend,
        "images_per_s_classifier_alone": b / step_alone, "images_per_s_frozen": b / step_frozen,
        "images_per_s_learnable": b / step_learnable, "ratio_frozen": step_alone / step_frozen,
        "ratio_learnable": step_alone / step_learnable,
        "stage_ms": {k: round(v * 1e3, 3) for k, v in stages.items()}, "peak_memory_mib": round(peak, 1),
    }
    print(f"{machine}: batch {b}, {args.size} px, {args.points} points, K={args.k}, {args.model} "
          f"({args.precision}), raster backend {args.backend}")
    print(f"  (a) classifier step alone      {result['images_per_s_classifier_alone']:9.1f} images/s")
    print(f"  (b) frozen renderer in loop    {result['images_per_s_frozen']:9.1f} images/s   "
          f"b/a = {result['ratio_frozen']:.3f}")
    print(f"  (c) learnable renderer in loop {result['images_per_s_learnable']:9.1f} images/s   "
          f"c/a = {result['ratio_learnable']:.3f}")
    for key, value in stages.items():
        print(f"      {key:<22} {value * 1e3:9.2f} ms/batch")
    print(f"  peak memory {peak:.0f} MiB ({measured})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
