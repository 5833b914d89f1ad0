"""Fine-tunes a pre-trained classifier (or one from scratch) on real data; prints per-epoch top-1 and the
cumulative error rate over the second half of the epochs.

    python tools/finetune.py --pretrained runs/quickstart --dataset fashion_mnist --epochs 10 --per-class 100
    python tools/finetune.py --dataset cifar10 --data-root data --model vit_tiny_patch16_224 --image-size 224
    accelerate launch tools/finetune.py --pretrained runs/ofdb1k_vit_tiny_joint --dataset folder:/data/flowers

Datasets: fashion_mnist (Debian's dataset-fashion-mnist, or torchvision's copy under --data-root),
cifar10 / cifar100 (torchvision, downloaded into --data-root when the network allows), folder:PATH (PATH/train
and PATH/val, one sub-folder per class). Results go to --output-dir (finetune.json, TensorBoard).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dr_fdsl.checkpoint import CheckpointError  # noqa: E402
from dr_fdsl.config import ConfigError  # noqa: E402
from dr_fdsl.datasets import DataError  # noqa: E402
from dr_fdsl.finetune import FinetuneSettings, finetune  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(FinetuneSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default)
    args = vars(parser.parse_args(argv))
    settings = FinetuneSettings(**args)
    try:
        result = finetune(settings)
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    curve = " ".join(f"{100 * a:.1f}" for a in result["top1"])
    print(f"top-1 per epoch (%): {curve}")
    print(f"final top-1 {100 * result['final_top1']:.2f}%, cumulative error (2nd half) "
          f"{result['cumulative_error']:.1f}; {settings.output_dir}/finetune.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
