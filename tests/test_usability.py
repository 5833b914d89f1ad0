"""A new user's view: long work says what it is doing (log.txt, progress lines), results have their own places,
settings can be discovered, and what the network sees can be looked at."""

import json
import re

import pytest
import torch

from dr_fdsl.bank import bank_from_config
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
    from dr_fdsl.families.ifs3d import generator as ifs3d

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


def test_auto_raster_backend_is_the_default_sort_on_cpu_and_keys_nothing_new(small_bank):
    """renderer.raster_backend: auto (the default) rasterises with sort on the CPU and pytorch3d on CUDA; every
    choice renders the same images and keys caches, static datasets and checkpoints as 'pytorch3d' always did."""
    from dataclasses import replace

    from dr_fdsl.config import Config, RendererConfig, content_settings
    from dr_fdsl.render import PointRenderer
    from dr_fdsl.render.rasterizers import auto_backend

    assert Config().renderer.raster_backend == "auto"
    assert auto_backend("cpu") == "sort" and auto_backend("cuda") == "pytorch3d"
    base = RendererConfig(image_size=32, points_per_pixel=4, radius_init=0.03)
    keys = [content_settings(replace(base, raster_backend=b)) for b in ("auto", "sort", "pytorch3d")]
    assert keys[0] == keys[1] == keys[2] and keys[0]["raster_backend"] == "pytorch3d"
    ids, seeds = torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    with torch.no_grad():
        images = [PointRenderer(small_bank, replace(base, raster_backend=b))(ids, seeds) for b in ("auto", "pytorch3d")]
    assert torch.equal(images[0], images[1])


QUICKSTART = "configs/quickstart.yaml"


def test_print_config_shows_types_defaults_and_comments_of_the_used_sections_only(capsys):
    """--print-config: the resolved config, each key with its type, default and dataclass comment, only the
    sections the run uses; it loads back to the same config. One section with --print-config SECTION."""
    import yaml

    import train
    from dr_fdsl.config import from_dict, load_config

    assert train.main(["--config", QUICKSTART, "--print-config", "train.objective=classify+mim"]) == 0
    text = capsys.readouterr().out
    assert "  max_steps: 400  # int, default 1000\n" in text
    assert "  keep_checkpoints: 3  # int, default 3; this run's newest checkpoints kept; 0 keeps every one" in text
    assert "\nmim:" in text and "\nmatch:" not in text and "\nsit:" not in text  # the objective's, not the mode's
    assert "  ifs3d:" in text and "  ofdb:" not in text and "  svd2d:" not in text  # the chosen family's only
    cfg = load_config(QUICKSTART, ["train.objective=classify+mim"])
    assert from_dict(type(cfg), yaml.safe_load(text)) == cfg
    assert train.main(["--config", QUICKSTART, "--print-config", "bank.ifs3d"]) == 0
    assert capsys.readouterr().out.startswith("bank:\n  ifs3d:\n    sampler: ")
    assert train.main(["--config", QUICKSTART, "--print-config", "sit"]) == 2
    assert "error: --print-config sit: not used by this run; sections: output_dir" in capsys.readouterr().err


def test_dry_run_checks_and_sizes_without_building_or_writing(tmp_path, capsys):
    import train

    common = ["--config", QUICKSTART, "--dry-run", f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={tmp_path / 'b'}"]
    assert train.main(common) == 0
    out = capsys.readouterr().out
    assert f"dry run: the config is valid; would write to {tmp_path / 'run'}" in out
    assert "bank: 10 categories x 2000 points of family ifs3d" in out and "model: test_vit, 0.30 M parameters" in out
    assert list(tmp_path.iterdir()) == []  # no bank, no folder, no log
    assert train.main([*common, "model.name=vit_tiny_patch16_2244"]) == 2
    assert "error: config key 'model.name': unknown timm model" in capsys.readouterr().err


def test_saved_config_holds_only_what_the_run_uses_and_loads_back(tmp_path):
    from dr_fdsl.config import load_config, save_config

    for overrides, kept, left_out in ((["renderer.mode=frozen"], [], ["mim", "match", "sit"]),
                                      (["train.objective=classify+mim"], ["mim"], ["match", "sit"]),
                                      (["renderer.mode=match", "match.dataset=fashion_mnist"], ["match"], ["mim"])):
        cfg = load_config(QUICKSTART, overrides)
        text = save_config(cfg, tmp_path / "config.yaml").read_text()
        sections = {line.rstrip(":") for line in text.splitlines() if line and not line.startswith(" ")}
        assert set(kept) <= sections and not set(left_out) & sections
        assert "  ofdb:" not in text and "  ifs3d:" in text
        assert load_config(tmp_path / "config.yaml") == cfg


def test_tensorboard_run_is_the_output_folder_with_full_hparams_and_a_refused_start_adds_none(tmp_path, bank_dir):
    """Events live in output_dir itself (TensorBoard names the run after the folder), in one run with the
    hyper-parameter table (seed, objective, family, raster backend, mode) whose metrics are the evaluation's own
    tags (no one-point hparam/ charts); a resume refused after the run was built leaves no events behind."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from dr_fdsl.engine import resume
    from dr_fdsl.errors import CheckpointError

    folder = tmp_path / "run"
    fit(build_run(tiny(tmp_path, bank_dir, "train.max_steps=2", "train.probe=false")))
    assert [p.name for p in folder.iterdir() if p.is_dir()] == ["checkpoints"]  # no tensorboard/ nor hparams run
    events = EventAccumulator(str(folder))
    events.Reload()
    assert not [t for t in events.Tags()["scalars"] if t.startswith("hparam")]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert {"seed", "objective", "family", "raster_backend", "mode"} <= set(hparams)
    assert hparams["raster_backend"].string_value == "auto" and hparams["family"].string_value == "ifs3d"
    files = sorted(folder.glob("events.out.tfevents.*"))
    run = build_run(tiny(tmp_path, bank_dir, "train.max_steps=2", "train.probe=false", "bank.num_classes=3"),
                    resume="latest")
    with pytest.raises(CheckpointError, match="other settings"):
        resume(run, "latest")
    assert sorted(folder.glob("events.out.tfevents.*")) == files


def test_resume_names_a_missing_checkpoint_as_missing_and_the_run_folder_as_no_checkpoint(tmp_path):
    """A path that does not exist is reported as missing (not as "newer checkpoints exist"); the run's folder or
    its checkpoints/ folder given for a checkpoint is named as such, with the newest to use."""
    from dr_fdsl.checkpoint import refuse_to_overwrite
    from dr_fdsl.errors import CheckpointError

    (tmp_path / "checkpoints" / "step_0000004").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"step_0000009: no such checkpoint folder \(it does not exist\)"):
        refuse_to_overwrite(tmp_path, str(tmp_path / "checkpoints" / "step_0000009"))
    for given in (tmp_path, tmp_path / "checkpoints"):
        with pytest.raises(CheckpointError, match=r"that is the run's folder, not one of its checkpoints; give "
                                                  r"--resume latest \(its newest: step_0000004\)"):
            refuse_to_overwrite(tmp_path, str(given))


def test_bench_spread_and_load_warn_that_figures_are_noise(monkeypatch):
    """tools/bench.py's figures come as min / median / max; a spread above 1.5x or a load average above the core
    count is a warning that they are noise (a loaded machine once showed the learnable renderer 7x faster)."""
    import os

    from dr_fdsl import timing

    calls = iter([0.0, 0.001, 0.0, 0.003, 0.0, 0.002])  # perf_counter pairs: 1, 3 and 2 ms
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(calls))
    spread = timing.time_spread(lambda: None, 3, 0, torch.device("cpu"))
    assert spread == pytest.approx(timing.Spread(0.001, 0.002, 0.003))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    steady = timing.Spread(0.010, 0.011, 0.012)
    assert timing.noise_warning({"(b) frozen step": steady}) is None
    assert "max/min above 1.5 for (c) learnable step" in timing.noise_warning({"(b) frozen step": steady,
                                                                            "(c) learnable step": spread})
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert "load average 9.0 on 2 cores" in timing.noise_warning({"(b) frozen step": steady})


def test_readme_python_snippet_runs_as_written(tmp_path, bank_dir, monkeypatch):
    """The README's Python API block, executed as it stands. Its bank (the quickstart's) is cached under the current
    folder's cache/banks: there, the session's bank cache, so that it is built once per session."""
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = text.split("Python API:\n\n```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "banks").symlink_to(bank_dir)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (2, 3, 224, 224) and namespace["bank"].points.shape == (10, 2000, 3)


def test_preview_augmented_applies_the_configured_image_augmentations(small_bank):
    """--augmented: the images through image_aug as configured; with every image flipped and the rest off, the
    grid is the plain one mirrored (FractalDB's preview columns were identical: no augmentation was applied)."""
    from dr_fdsl.config import load_config
    from dr_fdsl.preview import augmented
    from dr_fdsl.render import PointRenderer

    cfg = load_config(None, ["renderer.image_size=32", "renderer.points_per_pixel=4", "renderer.radius_init=0.03",
                             "model.name=test_vit", "image_aug.hflip=1.0", "image_aug.mixup=0", "image_aug.cutmix=0",
                             "image_aug.random_erasing=0"])
    ids, seeds = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0])
    with torch.no_grad():
        images = PointRenderer(small_bank, cfg.renderer)(ids, seeds)
    assert torch.allclose(augmented(images, ids, cfg, small_bank.num_classes), images.flip(3), atol=1e-6)
    erased = load_config(None, ["renderer.image_size=32", "model.name=test_vit", "image_aug.random_erasing=1.0",
                                "image_aug.mixup=0", "image_aug.cutmix=0", "image_aug.hflip=0"])
    assert not torch.equal(augmented(images, ids, erased, small_bank.num_classes), images)


def test_preview_of_a_run_draws_with_its_learnt_tables(tmp_path, bank_dir):
    """--run RUN: the run's config and the rendering tables of its newest checkpoint, equal to what the run's own
    renderer draws after training (joint: the tables moved away from their initial values)."""
    from dr_fdsl.preview import run_renderer
    from tools.preview import main

    run = build_run(tiny(tmp_path, bank_dir, "renderer.mode=joint", "train.max_steps=2", "train.probe=false"))
    fit(run)
    cfg, renderer, folder = run_renderer(str(tmp_path / "run"))
    assert folder.name == "step_0000002" and cfg.renderer.mode == "frozen" and cfg.renderer.tables == str(folder)
    trained = {k: v.cpu() for k, v in run.renderer.state_dict().items()}
    assert all(torch.equal(renderer.state_dict()[k], v) for k, v in trained.items())
    ids, seeds = torch.tensor([0, 1, 2, 3]), torch.tensor([7, 7, 7, 7])
    with torch.no_grad():
        assert torch.equal(renderer(ids, seeds), run.renderer(ids, seeds))
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "p.png"), "--classes", "2",
                 "--views", "2"]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bank_dir):
    """A joint run of two steps (checkpoints at steps 1 and 2, tables moved) and its frozen-equivalent export."""
    from tools.render_dataset import main

    root = tmp_path_factory.mktemp("learnt")
    run = build_run(tiny(root, bank_dir, "renderer.mode=joint", "train.max_steps=2", "train.ckpt_every=1",
                         "train.eval_every=2", "train.probe=false", "renderer.color_init=grey"))
    fit(run)
    assert main(["--run", str(root / "run"), "--out", str(root / "data"), "--views", "3", "--batch", "5"]) == 0
    return root, run


def test_render_dataset_of_a_run_equals_the_trained_renderers_in_loop_renders(trained, capsys):
    """render_dataset.py --run RUN: every PNG is the trained renderer's in-loop render of its (category, view),
    quantised as a static run reads it; dataset.json records the tables' digest as the checkpoint's manifest does."""
    import csv

    from torchvision.io import read_image

    from dr_fdsl.manifest import read_manifest
    from dr_fdsl.static import quantize

    root, run = trained
    with open(root / "data" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3
    ids, seeds = torch.tensor([int(r["category"]) for r in rows]), torch.tensor([int(r["view_seed"]) for r in rows])
    with torch.no_grad():
        loop = quantize(run.renderer(ids, seeds))
        initial = quantize(type(run.renderer)(bank_from_config(run.cfg.bank), run.cfg.renderer)(ids, seeds))
    pngs = torch.stack([read_image(str(root / "data" / r["path"])) for r in rows])
    assert torch.equal(pngs, loop) and not torch.equal(pngs, initial)  # the learnt tables, not the initial ones
    step2 = root / "run" / "checkpoints" / "step_0000002"
    info = json.loads((root / "data" / "dataset.json").read_text())
    assert info["tables"] == {"sha256": read_manifest(step2)["files"]["renderer.safetensors"]["sha256"],
                              "from": str(step2)}


def test_a_static_training_accepts_a_run_export_only_with_the_same_tables(trained):
    """The printed overrides make a frozen training that accepts the export (and draws the same tables in the loop);
    the config's initial tables, or another checkpoint's, are refused by name."""
    from dr_fdsl.config import load_config
    from dr_fdsl.errors import ConfigError
    from dr_fdsl.static import StaticViews
    from dr_fdsl.tables import build_renderer, frozen_overrides, run_config

    root, run = trained
    data = StaticViews(root / "data")
    cfg, folder = run_config(str(root / "run"))
    saved = root / "run" / "config.yaml"
    same = load_config(saved, frozen_overrides(load_config(saved), cfg) + ["data.source=static",
                                                                          f"data.path={root / 'data'}"])
    assert data.check_matches(same) == 3
    assert torch.equal(build_renderer(same, bank_from_config(same.bank)).colors(), run.renderer.colors().detach())
    for other, named in (([f"renderer.tables={root / 'run' / 'checkpoints' / 'step_0000001'}"], "step_0000001"),
                         (["renderer.tables="], "config's initial tables")):
        differ = load_config(saved, frozen_overrides(load_config(saved), cfg) + other)
        with pytest.raises(ConfigError, match=rf"renderer\.tables: dataset learnt tables sha256 .*{named}"):
            data.check_matches(differ)


def test_render_dataset_run_names_a_missing_or_damaged_checkpoint_in_one_line(trained, tmp_path, capsys):
    import shutil

    from tools.render_dataset import main

    root, _ = trained
    out = ["--out", str(tmp_path / "data"), "--views", "1"]
    assert main(["--run", str(tmp_path / "nothing"), *out]) == 2
    assert f"error: --run: '{tmp_path / 'nothing'}' does not exist" in capsys.readouterr().err
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy, ignore=shutil.ignore_patterns("step_0000001", "tensorboard"))
    tables = copy / "checkpoints" / "step_0000002" / "renderer.safetensors"
    data = bytearray(tables.read_bytes())
    data[-1] ^= 0xFF
    tables.write_bytes(bytes(data))
    assert main(["--run", str(copy), *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and "'renderer.safetensors' does not match" in err
    assert err.count("\n") == 1 and not (tmp_path / "data").exists()


def _image_folder(root):
    """A folder dataset of two classes, two 8 px images each in train/ and val/ (what a dry run reads is cheap)."""
    from torchvision.io import write_png

    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                write_png(torch.full((3, 8, 8), 60 * i, dtype=torch.uint8), str(root / split / label / f"{i}.png"))
    return f"folder:{root}"


def test_finetune_print_config_and_dry_run_check_without_training_or_writing(tmp_path, capsys):
    import yaml

    from dr_fdsl.config import load_config
    from dr_fdsl.finetune import FinetuneSettings
    from dr_fdsl.settings import from_dict
    from tools.finetune import main

    common = ["--config", "configs/finetune/fashion_mnist.yaml", f"output_dir={tmp_path / 'ft'}", "per_class=5"]
    assert main([*common, "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "per_class: 5  # int, default 0; limited data: k training images per class (0: all)" in text
    settings = load_config("configs/finetune/fashion_mnist.yaml", [f"output_dir={tmp_path / 'ft'}", "per_class=5"],
                           cls=FinetuneSettings)
    assert from_dict(FinetuneSettings, yaml.safe_load(text)) == settings
    data = _image_folder(tmp_path / "images")
    assert main([*common, "--dry-run", "protocol=knn", f"dataset={data}", "per_class=1"]) == 0
    out = capsys.readouterr().out
    assert f"dry run: the settings are valid; would write {tmp_path / 'ft' / 'knn.json'}" in out
    assert "2 training images (2 classes), 4 test images" in out and not (tmp_path / "ft").exists()
    assert main([*common, "--dry-run", f"pretrained={tmp_path / 'none'}"]) == 2
    assert f"error: config key 'pretrained': '{tmp_path / 'none'}' does not exist" in capsys.readouterr().err


def test_compare_print_config_and_dry_run_plan_and_check_every_arm_without_training(tmp_path, capsys):
    import yaml

    from tools.compare import entry

    out = ["--out", str(tmp_path / "cmp"), "--arms", "frozen", "joint", "--seeds", "0", "1",
           "--dataset", _image_folder(tmp_path / "images")]
    assert entry([*out, "--print-config", "--protocol", "finetune", "knn"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["arms_run"] == ["none", "frozen", "joint"] and shown["protocols"] == ["finetune", "knn"]
    assert entry([*out, "--dry-run", "--protocol", "finetune", "knn"]) == 0
    text = capsys.readouterr().out
    assert "plan: 3 arms (none frozen joint) x 2 seeds (0 1) x 2 protocols (finetune knn): 4 pre-trainings" in text
    assert not (tmp_path / "cmp").exists()
    assert entry([*out, "--dry-run", "--pretrain-set", "renderer.raster_backend=fast"]) == 2
    assert "error: config key 'renderer.raster_backend'" in capsys.readouterr().err
