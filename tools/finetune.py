"""Fine-tunes a pre-trained backbone (or one from scratch) on real data; prints per-epoch top-1 and the
cumulative error rate over the second half of the epochs.

    python tools/finetune.py --config configs/finetune/fashion_mnist.yaml pretrained=runs/quickstart
    python tools/finetune.py --config configs/finetune/cifar10.yaml model=vit_tiny_patch16_224 image_size=224
    accelerate launch tools/finetune.py --config configs/finetune/cifar100.yaml pretrained=runs/ofdb1k_vit_tiny_joint

Settings are the fields of ``FinetuneSettings`` (dr_fdsl/finetune.py): a YAML file, then ``key=value``
overrides, checked like a training config (unknown keys and wrong types name the key). Datasets: fashion_mnist
(Debian's dataset-fashion-mnist, or torchvision's copy under data_root), cifar10 / cifar100 (torchvision,
downloaded into data_root when the network allows), folder:PATH (PATH/train and PATH/val, one sub-folder per
class). Results go to output_dir, named by protocol (finetune.json, linear.json, knn.json; *_target_mim.json after
masked pre-training on the target), with TensorBoard logs beside them (output_dir/finetune/, .../linear/, ...) and
log.txt (settings, a line per epoch, the result); refused while another live run writes there.

--print-config prints the resolved settings (the keys this fine-tuning uses, each with its type, default and
comment) and exits; --dry-run checks the settings, the pre-trained run (its checkpoint against its manifest, its
model), both splits of the dataset (no download) and the output folder, prints the plan and exits, writing nothing.
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import sys

from accelerate import PartialState

from dr_fdsl.cli import USER_ERROR, report, write_fault
from dr_fdsl.config import add_config_args, load_config
from dr_fdsl.engine.build import claim_output_dir
from dr_fdsl.errors import DrFdslError
from dr_fdsl.finetune import FinetuneSettings, finetune, result_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings with each key's type, default and comment, and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the settings, the pre-trained run, the dataset and the output folder, print the "
                             "plan and exit without training or writing")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on either side of options
    if args.print_config or args.dry_run:
        return inspect_settings(args)
    settings = None
    try:
        settings = load_config(args.config, args.overrides, cls=FinetuneSettings)
        claim_output_dir(settings.output_dir, renumber=False)  # refused while another live run writes there
        result = finetune(settings)
    except DrFdslError as err:
        return report(err)
    except (OSError, RuntimeError) as err:  # disk full, read-only: the result file, TensorBoard's events
        fault = write_fault(err, None, settings.output_dir if settings else None, checkpoints=False)
        if fault is None:
            raise  # a bug: its traceback is what to read
        print(fault, file=sys.stderr)
        return USER_ERROR
    finally:
        PartialState().destroy_process_group()  # the entry script's job (a no-op without one)
    curve = " ".join(f"{100 * a:.1f}" for a in result["top1"])
    print(f"top-1 per epoch (%): {curve}")
    print(f"final top-1 {100 * result['final_top1']:.2f}%, cumulative error (2nd half) "
          f"{result['cumulative_error']:.1f}; {result_path(settings)}")
    return 0


def inspect_settings(args) -> int:
    """--print-config and --dry-run: the settings loaded and checked as a fine-tuning would, then printed or tried."""
    from dr_fdsl.config_doc import commented_config
    from dr_fdsl.finetune import dry_run
    from dr_fdsl.settings import used_settings

    try:
        settings = load_config(args.config, args.overrides, cls=FinetuneSettings)
        if args.print_config:
            print(commented_config(settings, used_settings(settings)), end="")
        if args.dry_run:
            print("\n".join(dry_run(settings)))
    except DrFdslError as err:
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
