"""A new user's view: long work says what it is doing (log.txt, progress lines), results have their own places,
settings can be discovered, and what the network sees can be looked at."""

import json
import re

import torch

from dr_fdsl.engine import build_run, fit
from tests.conftest import tiny


def test_training_writes_log_txt_and_prints_progress_lines_without_a_bar(tmp_path, bank_dir, capsys):
    """train.progress=false: the progress lines (step, rate, ETA, losses) and evaluations reach the console and
    output_dir/log.txt, which also holds the resolved settings."""
    fit(build_run(tiny(tmp_path, bank_dir, "train.max_steps=2", "train.log_every=1", "train.eval_every=2")))
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "its settings:\n" in log and "max_steps: 2" in log
    progress = re.findall(r"train \(frozen\) (\d)/2 \(\d+%\), [\d.]+ step/s, elapsed \d+s, eta [\dms?]+, loss [\d.]+",
                          log)
    assert progress == ["1", "2"]
    assert re.search(r"evaluation at step 2: val/loss [\d.]+, val/top1 [\d.]+", log)
    assert "checkpoint " in log and "done: 2 steps" in log
    printed = capsys.readouterr().out
    assert "train (frozen) 2/2 (100%)" in printed and "evaluation at step 2" in printed


def test_bank_generation_reports_each_group_and_groups_change_no_point(monkeypatch):
    """The full chaos game runs in groups of GAME_GROUP systems with a progress line after each (a bar sat at
    0/1000 for 200 s); any grouping gives the same bank, bit for bit."""
    import logging

    from dr_fdsl.bank import build_bank
    from dr_fdsl.families import ifs3d

    reference = build_bank(num_classes=6, num_points=200, seed=3, cache_dir=None)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("dr_fdsl")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(ifs3d, "GAME_GROUP", 16)
    try:
        grouped = build_bank(num_classes=6, num_points=200, seed=3, cache_dir=None)
    finally:
        logger.removeHandler(handler)
    assert torch.equal(grouped.points, reference.points)
    progress = [line for line in lines if line.startswith("fractal bank ") and "/6 (" in line]
    assert len(progress) >= 2 and progress[-1].startswith("fractal bank 6/6 (100%)") and "eta" in progress[0]


def _image_folder(root):
    """A two-class folder dataset (train/ and val/, 4 images of 8 px each), the cheapest real-data input."""
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                image = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
                write_png(image, str(root / split / name / f"{i}.png"))
    return f"folder:{root}"


def test_each_protocol_has_its_own_result_file_and_one_tensorboard_run(tmp_path, capsys):
    """finetune, linear and knn judged into one folder: three result files (none overwritten), three TensorBoard
    runs (one folder of events each, no second timestamped run for the hyper-parameters), one log.txt."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dr_fdsl.finetune import FinetuneSettings, finetune

    dataset, out = _image_folder(tmp_path / "data"), tmp_path / "ft"
    for protocol in ("finetune", "linear", "knn"):
        finetune(FinetuneSettings(dataset=dataset, epochs=2, batch_size=4, image_size=16, patch_size=8,
                                  protocol=protocol, progress=False, output_dir=str(out)))
    for protocol, tag in (("finetune", "finetune/test_top1"), ("linear", "linear/test_top1"),
                          ("knn", "knn/test_top1")):
        assert json.loads((out / f"{protocol}.json").read_text())["protocol" if protocol != "finetune" else
                                                                 "epochs"] == (protocol if protocol != "finetune"
                                                                               else 2)
        runs = [p for p in (out / protocol).rglob("*") if p.is_dir()]
        assert runs == [] and len(list((out / protocol).glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(out / protocol))
        events.Reload()
        assert tag in events.Tags()["scalars"]
        assert "_hparams_/experiment" in events.PluginTagToContent("hparams")  # the table, in this run
    log = (out / "log.txt").read_text()
    assert log.count("its settings:") == 3 and "finetune folder:" in log and "test_top1" in log
    assert "finetune folder:" in capsys.readouterr().out  # progress=false: the epoch lines on the console
