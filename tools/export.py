"""Exports a pre-training run's backbone the way timm users expect: ``model.safetensors`` and ``config.json``.

    python tools/export.py runs/quickstart --out exported/quickstart

RUN is a pre-training output_dir (its newest checkpoint) or one checkpoint folder. ``config.json`` is timm's
(``save_for_hf``): architecture, the arguments the model was built with (number of classes, input size), and
its pretrained config (input size, mean, std). Load it with either of

    timm.create_model("local-dir:exported/quickstart", pretrained=True)   # arguments from config.json
    timm.create_model(arch, pretrained=True, num_classes=C, img_size=S,
                      pretrained_cfg_overlay=dict(file="exported/quickstart/model.safetensors", num_classes=C))

(a ``num_classes`` other than the overlay's drops the head, as for any timm checkpoint: fine-tuning does that).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import json
import sys
from pathlib import Path

from safetensors import SafetensorError
from timm.models import save_for_hf

from dr_fdsl.cli import report
from dr_fdsl.errors import DrFdslError, is_write_fault
from dr_fdsl.finetune import load_pretrained


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="pre-training output_dir or checkpoint folder")
    parser.add_argument("--out", required=True, help="folder for model.safetensors and config.json")
    args = parser.parse_args(argv)
    try:
        model, size = load_pretrained(args.run, argument="RUN")  # checked: manifest, header, finite weights
        # timm's pretrained config describes the architecture's default input; this backbone takes `size` px.
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size)}
        save_for_hf(model, args.out, safe_serialization=True)
    except DrFdslError as err:
        return report(err)
    except OSError as err:
        return report(err, writing=args.out)
    except SafetensorError as err:  # safetensors' own write failure (disk full, file too large)
        if not is_write_fault(err):
            raise  # a bug, not the storage: its traceback is what to read
        return report(OSError(f"{err}".strip()), writing=args.out)
    config = json.loads((Path(args.out) / "config.json").read_text())
    print(f"exported {config['architecture']} ({config['num_classes']} classes, {size} px) to {args.out}: "
          f"model.safetensors, config.json")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
