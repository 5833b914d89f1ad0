"""Benchmark: per-image render time (forward, forward+backward to colours and radii) and peak memory.

    python tools/bench_render.py --batch 128 --points 10000 --size 224 --k 8      # the issue's GPU setting
    python tools/bench_render.py --batch 16 --points 2000 --size 64               # a CPU-sized setting
    python tools/bench_render.py --config configs/contest_pytorch3d.yaml --points 9999 --batch 8  # the contest's

Stages are timed separately: scene (gathers, augmentations, projection), rasterise (--backend), and
composite (weights + compositing, forward and backward).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import dataclasses
import sys

import torch

from dr_fdsl.bank import build_bank
from dr_fdsl.cli import report
from dr_fdsl.config import AugmentConfig, RendererConfig, load_config
from dr_fdsl.errors import DrFdslError
from dr_fdsl.render import RASTERIZERS, PointRenderer, fragment_weights
from dr_fdsl.render.composite import composite
from dr_fdsl.timing import check_bench_args, machine_and_peak_memory, median_time, save_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--size", type=int, default=None, help="image size (default 64, or the --config's)")
    parser.add_argument("--k", type=int, default=None, help="points per pixel (default 8, or the --config's)")
    parser.add_argument("--config", default=None, help="take the renderer section (camera, augmentations, radius, "
                        "colours) from this config; the bank stays ours (ifs3d, --points)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="pytorch3d", choices=sorted(RASTERIZERS))
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    check_bench_args(parser, args, positive=("batch", "points", "size", "k", "classes", "repeats"),
                     device=args.device, json_path=args.json)
    device = torch.device(args.device)

    bank = build_bank(num_classes=args.classes, num_points=args.points, seed=0, cache_dir="cache/banks")
    if args.config:
        cfg = load_config(args.config).renderer
        args.size, args.k = args.size or cfg.image_size, args.k or cfg.points_per_pixel
        cfg = dataclasses.replace(cfg, mode="joint", image_size=args.size, points_per_pixel=args.k,
                                  raster_backend=args.backend)
    else:
        args.size, args.k = args.size or 64, args.k or 8
        cfg = RendererConfig(mode="joint", image_size=args.size, points_per_pixel=args.k, color_init="random",
                             raster_backend=args.backend,
                             augment=AugmentConfig(scale=(0.8, 1.1), shift=0.1, subsample=(0.6, 1.0)))
    renderer = PointRenderer(bank, cfg).to(device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.classes, (args.batch,), generator=gen).to(device)
    seeds = torch.randint(0, 2**31, (args.batch,), generator=gen).to(device)

    def forward():
        with torch.no_grad():
            renderer(ids, seeds)

    def forward_backward():
        renderer.zero_grad(set_to_none=True)
        renderer(ids, seeds).mean().backward()

    scene, _ = renderer.scene(ids, seeds)
    raster = RASTERIZERS.get(args.backend)
    fragments = raster(scene.points, scene.radii, args.size, args.k)

    def composite_fb():
        colors = scene.colors.detach().requires_grad_()
        radii = scene.radii.detach().requires_grad_()
        image = composite(fragments, fragment_weights(fragments, radii), colors, scene.background)
        image.mean().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stages = {
        "scene_ms": median_time(lambda: renderer.scene(ids, seeds), args.repeats, 1, device),
        "rasterize_ms": median_time(lambda: raster(scene.points, scene.radii, args.size, args.k), args.repeats, 1,
                                    device),
        "composite_fwd_bwd_ms": median_time(composite_fb, args.repeats, 1, device),
        "forward_ms": median_time(forward, args.repeats, 1, device),
        "forward_backward_ms": median_time(forward_backward, args.repeats, 1, device),
    }
    per_image = {k.replace("_ms", "_ms_per_image"): round(v * 1e3 / args.batch, 4) for k, v in stages.items()}
    machine, peak, measured = machine_and_peak_memory(device)
    result = {"batch": args.batch, "points": args.points, "size": args.size, "k": args.k, "device": args.device,
              "machine": machine, **{k: round(v * 1e3, 2) for k, v in stages.items()}, **per_image,
              "peak_memory_mib": round(peak, 1)}
    print(f"{machine}: batch {args.batch}, {args.points} points, {args.size} px, K={args.k}, {args.backend}")
    for key, value in stages.items():
        print(f"  {key[:-3]:<20} {value * 1e3:9.2f} ms/batch {value * 1e3 / args.batch:8.3f} ms/image")
    print(f"  peak memory          {peak:9.1f} MiB ({measured})")
    return save_json(args.json, result) if args.json else 0


if __name__ == "__main__":
    def reported() -> int:
        try:
            return main()
        except DrFdslError as err:  # a --config or size that the config refuses: one line naming the key
            return report(err)

    sys.exit(entry(reported))
