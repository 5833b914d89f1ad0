"""Time the image pipelines of ``image_aug`` on a batch of rendered-like images (forward, and with backward).

    python tools/bench_image_aug.py --batch 64 --size 224 [--device cuda] [--repeats 5] [--threads 1] [--backward]

Each row is one pipeline as the configs set it (everything else off: no Mixup, erasing or flips unless the
pipeline has them), timed through ``ImageAugment.forward`` (pixel operations and normalisation), median of
``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from dr_fdsl.config import ImageAugConfig, from_dict, load_config
from dr_fdsl.image_augment import ImageAugment
from dr_fdsl.timing import check_bench_args

ROOT = Path(__file__).resolve().parents[1]
OFF = dict(mixup=0.0, cutmix=0.0, random_erasing=0.0, hflip=0.0, vflip=0.0)


def pipelines() -> dict[str, ImageAugConfig]:
    contest = load_config(ROOT / "configs" / "image_aug" / "contest.yaml", validate=False).image_aug
    visualatom = load_config(ROOT / "configs" / "visualatom1k_vit_tiny.yaml", validate=False).image_aug
    ofdb = load_config(ROOT / "configs" / "ofdb1k_vit_tiny.yaml", validate=False).image_aug
    rows = {
        "normalise only": {},
        "random resized crop (bicubic)": {"random_resized_crop": {"enabled": True}},
        "RandAugment rand-m9-mstd0.5-inc1 (bicubic)": {"randaugment": "rand-m9-mstd0.5-inc1"},
        "contest (albumentations, all p=0.5)": {
            k: getattr(contest, k) for k in ("transpose", "hflip", "vflip", "shift_scale_rotate", "brightness_contrast",
                                             "hue_saturation_value", "distortion")},
        "VisualAtom-1k (RRC + RA, random interp.)": {
            "random_resized_crop": visualatom.random_resized_crop, "randaugment": visualatom.randaugment,
            "interpolation": visualatom.interpolation},
        "3D-OFDB-1k (RRC + flips + RA, bicubic)": {
            "random_resized_crop": ofdb.random_resized_crop, "randaugment": ofdb.randaugment, "hflip": ofdb.hflip,
            "vflip": ofdb.vflip, "interpolation": ofdb.interpolation},
    }
    return {name: from_dict(ImageAugConfig, {**OFF, **{key: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                                         for key, v in settings.items()}})
            for name, settings in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backward", action="store_true", help="also time forward + backward to the images")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: torch's default); on a shared, loaded CPU one thread avoids OpenMP "
                             "threads waiting on each other, which made small operations 1000x slower here")
    args = parser.parse_args()
    check_bench_args(parser, args, positive=("batch", "size"), nonnegative=("threads",), device=args.device)
    if args.repeats < 2:  # the first repeat warms up and is not timed
        parser.error(f"--repeats must be >= 2 (the first is a warm-up), got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    torch.manual_seed(0)
    # rendered-like: sparse bright strokes on black
    images = (torch.rand(args.batch, 3, args.size, args.size, device=device) > 0.9).float() * torch.rand(
        args.batch, 3, 1, 1, device=device)
    labels = torch.zeros(args.batch, dtype=torch.long, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"batch {args.batch}, {args.size} px, {device} ({torch.get_num_threads()} threads), median of "
          f"{args.repeats}")
    for name, cfg in pipelines().items():
        augment = ImageAugment(cfg, 10, device, mean, std)
        times, back = [], []
        for rep in range(args.repeats + 1):
            x = images.clone().requires_grad_(args.backward)
            sync()
            start = time.perf_counter()
            out, _ = augment(x, labels)
            sync()
            middle = time.perf_counter()
            if args.backward:
                out.sum().backward()
                sync()
            end = time.perf_counter()
            if rep:
                times.append(middle - start)
                back.append(end - start)
        line = f"{name:45s} forward {1000 * statistics.median(times):8.1f} ms"
        if args.backward:
            line += f"   forward+backward {1000 * statistics.median(back):8.1f} ms"
        print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(entry(main))
