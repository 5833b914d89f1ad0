"""Golden outputs: renders and loss traces recorded before the architecture refactor (issue 10).

A refactor must change no pixel and no loss value. These tests compare today's code against values recorded from
the first version (commit d918e27):

* renders: the SHA-256 of uint8 images of 6 categories x 3 view seeds at 32 px, for two renderer settings (plain
  white points; palette colours with every augmentation on), both raster backends and both compositors;
* losses: ``train/loss`` of the first 5 steps of the quickstart config in frozen, joint and adversarial modes.

Where a change to them is right (a bug fixed), regenerate with ``DR_FDSL_UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` and say in the commit which values changed and why.
"""

import hashlib
import json
import os

import pytest
import torch

from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("DR_FDSL_UPDATE_GOLDEN") == "1"

RENDER_SETTINGS = {
    "plain": ["renderer.image_size=32", "renderer.points_per_pixel=4", "renderer.radius_init=0.04"],
    "augmented": ["renderer.image_size=32", "renderer.points_per_pixel=4", "renderer.radius_init=0.04",
                  "renderer.color_init=palette", "renderer.background=noise",
                  "renderer.view.rotation=euler", "renderer.view.roll=[-30,30]",
                  "renderer.view.projection=orthographic", "renderer.view.ortho_scale=[0.6,0.9]",
                  "renderer.augment.scale=[0.8,1.2]", "renderer.augment.shift=0.1",
                  "renderer.augment.subsample=[0.5,1.0]", "renderer.augment.jitter=0.01",
                  "renderer.augment.pointwolf=true", "renderer.augment.mix=0.2"],
}


def check_or_update(name: str, values: dict) -> None:
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"wrote {path}")
    assert values == json.loads(path.read_text())


@pytest.mark.parametrize("setting", sorted(RENDER_SETTINGS))
def test_golden_renders(small_bank, setting):
    from dr_fdsl.config import load_config
    from dr_fdsl.render import PointRenderer
    from dr_fdsl.static import quantize

    ids = torch.arange(6).repeat_interleave(3)
    seeds = torch.tensor([0, 7, -3]).repeat(6)
    digests = {}
    for backend in ("pytorch3d", "sort"):
        for compositor in ("alpha", "norm_weighted"):
            cfg = load_config(None, [*RENDER_SETTINGS[setting], f"renderer.raster_backend={backend}",
                                     f"renderer.compositor={compositor}"])
            with torch.no_grad():
                images = quantize(PointRenderer(small_bank, cfg.renderer)(ids, seeds))
            digests[f"{setting}/{backend}/{compositor}"] = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    check_or_update(f"renders_{setting}", digests)


@pytest.mark.parametrize("mode", ["frozen", "joint", "adversarial"])
def test_golden_quickstart_losses(tmp_path, bank_dir, mode):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dr_fdsl.config import load_config
    from dr_fdsl.engine import build_run, fit

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}", f"renderer.mode={mode}",
        "train.max_steps=5", "train.log_every=1", "train.eval_every=5", "train.image_every=5",
        "train.ckpt_every=5", "train.progress=false"])
    fit(build_run(cfg))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    trace = {tag: [repr(e.value) for e in events.Scalars(tag)] for tag in ("train/loss", "val/loss")}
    check_or_update(f"losses_{mode}", trace)
