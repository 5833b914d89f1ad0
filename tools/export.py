"""Exports a pre-training run's backbone the way timm users expect: ``model.safetensors``, ``config.json`` and a
model card (``README.md``: what it was pre-trained on, the settings, the steps, the run).

    python tools/export.py runs/quickstart --out exported/quickstart

RUN is a pre-training output_dir (its newest checkpoint) or one checkpoint folder. ``config.json`` is timm's
(``save_for_hf``): architecture, the arguments the model was built with (number of classes, input size), and
its pretrained config (input size, mean, std; tagged after the run, with none of the hub id, tag or licence of the
weights timm publishes for the architecture). Load it with either of

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

from dr_fdsl.checkpoint import pretrained_folder
from dr_fdsl.cli import report
from dr_fdsl.errors import DrFdslError, is_write_fault
from dr_fdsl.finetune import load_pretrained

# What timm's default pretrained config says of the weights timm publishes (their hub id, tag, licence, origin):
# none of it is true of a backbone trained here, so none of it is exported.
FOREIGN_KEYS = ("url", "hf_hub_id", "hf_hub_filename", "tag", "license", "origin_url", "paper_ids", "paper_name",
                "notes", "description", "source")


def run_pretrained_cfg(default: dict, size: int, checkpoint: Path) -> dict:
    """timm's pretrained config for the run's weights: the architecture's input settings (mean, std,
    interpolation, ...) with the run's input size, tagged after the run (``dr_fdsl.<run folder>``), and nothing of
    the weights timm publishes under the architecture's name."""
    own = {k: v for k, v in default.items() if k not in FOREIGN_KEYS}
    return {**own, "input_size": (3, size, size), "tag": f"dr_fdsl.{checkpoint.parent.parent.name}"}


def model_card(model, size: int, checkpoint: Path, args) -> str:
    """README.md of the export (timm's ``generate_readme`` layout): what the backbone was pre-trained on, with
    which settings (the run's resolved config.yaml, whole), for how many steps, and where the run is."""
    from timm.models._hub import generate_readme

    from dr_fdsl.config import load_config

    run = checkpoint.parent.parent
    cfg = load_config(run / "config.yaml", validate=False)
    step = json.loads((checkpoint / "trainer_state.json").read_text()).get("step", "?")
    b, r = cfg.bank, cfg.renderer
    card = {
        "license": "other",  # the run's own weights: their licence is the trainer's to state
        "description": (f"A {cfg.model.name} backbone pre-trained by dr_fdsl on formula-generated images (no real "
                        f"image), rendered in the training step; exported by `python tools/export.py {args.run} "
                        f"--out {args.out}`."),
        "details": {
            "Model Type": "Image classification / feature backbone",
            "Pre-trained on": (f"{b.num_classes} categories of formula family {b.family} ({b.num_points} points each, "
                               f"bank.seed {b.seed}), rendered at {r.image_size} px by renderer mode {r.mode}"),
            "Objective": cfg.train.objective,
            "Steps": f"{step} optimiser steps of {cfg.train.batch_size} images per process (x "
                     f"{cfg.train.grad_accum} accumulated)",
            "Params (M)": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}",
            "Image size": f"{size} x {size}",
            "Run": f"{run.resolve()} (checkpoint {checkpoint.name})",
        },
        "usage": f'```python\nimport timm\n\nmodel = timm.create_model("local-dir:{args.out}", pretrained=True)\n```\n',
    }
    settings = (run / "config.yaml").read_text()
    return (generate_readme(card, f"{cfg.model.name}.{model.pretrained_cfg['tag']}")
            + f"\n## Settings\n\nThe run's resolved config (`{run / 'config.yaml'}`); `train.py --config` with it "
            f"trains the same backbone again:\n\n```yaml\n{settings}```\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="pre-training output_dir or checkpoint folder")
    parser.add_argument("--out", required=True, help="folder for model.safetensors and config.json")
    args = parser.parse_args(argv)
    try:
        model, size = load_pretrained(args.run, argument="RUN")  # checked: manifest, header, finite weights
        folder = pretrained_folder(args.run, "RUN")
        model.pretrained_cfg = run_pretrained_cfg(model.pretrained_cfg, size, folder)
        save_for_hf(model, args.out, safe_serialization=True)
        (Path(args.out) / "README.md").write_text(model_card(model, size, folder, args), encoding="utf-8")
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
          f"model.safetensors, config.json, README.md (its model card)")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
