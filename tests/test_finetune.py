import csv
import json
import pickle
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torchvision.io import write_png

from dr_fdsl import datasets
from dr_fdsl.checkpoint import list_checkpoints
from dr_fdsl.engine import build_run, fit
from dr_fdsl.errors import ConfigError
from dr_fdsl.finetune import FinetuneSettings, cumulative_error, finetune, load_pretrained
from tests.conftest import tiny


@pytest.fixture(scope="module")
def fashion_root():
    if not (datasets.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Debian's dataset-fashion-mnist is missing: `make setup` installs it "
                    "(apt-get install dataset-fashion-mnist)")
    return str(datasets.DEBIAN_FASHION_MNIST)


def test_real_fashion_mnist_files(fashion_root):
    train = datasets.load("fashion_mnist", True, fashion_root, 32)
    test = datasets.load("fashion_mnist", False, fashion_root, 32)
    assert train.images.shape == (60000, 3, 28, 28) and test.images.shape == (10000, 3, 28, 28)
    assert train.images.dtype == torch.uint8 and train.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    few = train.few_shot(5, seed=3)
    assert torch.bincount(few.labels).tolist() == [5] * 10
    assert torch.equal(few.images, train.few_shot(5, seed=3).images)
    assert not torch.equal(few.images, train.few_shot(5, seed=4).images)


def test_cifar_format_fixture_through_torchvision(tmp_path, monkeypatch):
    """A CIFAR-10 folder in the real format (pickled batches), read by torchvision's own CIFAR10 class."""
    import torchvision.datasets.cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)  # rows: 1024 red, 1024 green, 1024 blue
        batches[name] = (data, rng.integers(0, 10, 4).tolist())
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": batches[name][1]}, f)  # keys as latin1 reads them
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # The fixture's MD5 sums are not the real files': skip torchvision's checksum test, keep its reader.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    test = datasets.load("cifar10", False, tmp_path, 32, download=False)
    assert test.images.shape == (4, 3, 32, 32) and test.num_classes == 10
    data, labels = batches["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert test.labels.tolist() == labels
    assert len(datasets.load("cifar10", True, tmp_path, 32, download=False)) == 20


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DataError, match="could not be downloaded"):
        datasets.load("cifar100", True, tmp_path, 32, download=False)
    with pytest.raises(datasets.DataError, match="train. is missing: a folder dataset holds PATH/train/<class>/"):
        datasets.load(f"folder:{tmp_path}", True, tmp_path, 32)
    with pytest.raises(datasets.DataError, match="unknown dataset 'mnist'"):
        datasets.load("mnist", True, tmp_path, 32)


def test_image_folder(tmp_path):
    for split in ("train", "val"):
        for c, name in enumerate(["cat", "dog"]):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                flat = torch.full((3, 20, 24), 40 * c + i, dtype=torch.uint8)
                write_png(flat, str(tmp_path / split / name / f"{i}.png"))
    train = datasets.load(f"folder:{tmp_path}", True, "unused", 16)
    assert train.images.shape == (6, 3, 16, 16) and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.images[4].float().mean() == 41  # resizing a flat image keeps its value


def test_cumulative_error():
    assert cumulative_error([0.5, 0.6, 0.7, 0.8]) == pytest.approx(30 + 20)
    assert cumulative_error([0.1, 0.2, 0.9]) == pytest.approx(80 + 10)
    # measured after epochs 2, 4 and 5 of 5: the second half is epochs 3-5; epoch 4's measurement stands for 3 and 4
    assert cumulative_error([0.0, 0.5, 0.9], [2, 4, 5]) == pytest.approx(2 * 50 + 10)
    assert cumulative_error([0.5, 0.6, 0.7, 0.8], [1, 2, 3, 4]) == cumulative_error([0.5, 0.6, 0.7, 0.8])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    fit(build_run(tiny(root, root / "banks", "renderer.mode=joint")))
    return root / "run"


def test_finetune_from_a_pretraining_run_and_from_scratch(tmp_path, pretrained_run, fashion_root):
    model, size = load_pretrained(str(pretrained_run))
    weights = load_file(str(list_checkpoints(pretrained_run)[-1] / "model.safetensors"))
    assert size == 32 and all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    common = dict(dataset="fashion_mnist", data_root=fashion_root, epochs=2, per_class=5, max_test=100,
                  batch_size=16, progress=False)
    result = finetune(FinetuneSettings(pretrained=str(pretrained_run), output_dir=str(tmp_path / "ft"), **common))
    assert result["train_images"] == 50 and result["test_images"] == 100 and len(result["top1"]) == 2
    assert result["cumulative_error"] == pytest.approx(100 - 100 * result["top1"][1])
    assert (tmp_path / "ft" / "finetune.json").is_file()
    assert any((tmp_path / "ft" / "finetune").glob("events.out.tfevents.*"))
    scratch = finetune(FinetuneSettings(pretrained=None, output_dir=str(tmp_path / "scratch"), **common))
    assert scratch["top1"] != result["top1"]  # the pre-trained weights were used (same seed otherwise)


def test_evaluating_every_few_epochs_changes_no_step(tmp_path, fashion_root):
    """eval_every=2 over 3 epochs measures after epochs 2 and 3 and trains exactly as evaluating after every epoch
    does (an evaluation's loader would draw from the stream of the training flips, but runs on a copy of it); a
    scratch ViT takes model.patch_size's patches."""
    common = dict(dataset="fashion_mnist", data_root=fashion_root, epochs=3, per_class=4, max_test=64,
                  batch_size=8, progress=False, patch_size=8)
    every = finetune(FinetuneSettings(output_dir=str(tmp_path / "every"), **common))
    sparse = finetune(FinetuneSettings(output_dir=str(tmp_path / "sparse"), eval_every=2, **common))
    assert every["eval_epochs"] == [1, 2, 3] and sparse["eval_epochs"] == [2, 3]
    assert sparse["train_loss"] == every["train_loss"] and sparse["top1"] == every["top1"][1:]
    assert sparse["cumulative_error"] == pytest.approx(every["cumulative_error"])  # epochs 2 and 3 either way
    with pytest.raises(ConfigError, match="'patch_size'.*a pre-trained run brings its own"):
        FinetuneSettings(pretrained="runs/x", patch_size=8).validate()


def test_bad_pretrained_path(tmp_path):
    with pytest.raises(ConfigError, match="expected a pre-training output_dir"):
        load_pretrained(str(tmp_path))


@pytest.mark.slow
def test_compare_tool_end_to_end(tmp_path, fashion_root):
    from tools.compare import main

    out = tmp_path / "cmp"
    assert main(["--preset", "cpu", "--out", str(out), "--steps", "4", "--epochs", "2", "--per-class", "5",
                 "--max-test", "100", "--seeds", "0", "--data-root", fashion_root]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["none", "frozen", "joint", "adversarial"]
    assert rows[0]["pretrain_top1"] == "" and rows[1]["pretrain_top1"] != ""
    table = (out / "results.md").read_text()
    for mode in ("none", "frozen", "joint", "adversarial"):
        assert f"| {mode} | 1 |" in table
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # log.txt (and the console): the plan first, then a progress line with an ETA after every job
    log = (out / "log.txt").read_text()
    assert "plan: 4 arms (none frozen joint adversarial) x 1 seeds (0) x 1 protocols (finetune): 3 pre-trainings" \
        in log.splitlines()[0]
    assert "progress: 1/7 jobs done (0/3 pre-trainings, 1/4 judgements)" in log and "progress: 7/7 jobs done" in log
    assert "seed 0 adversarial finetune: top-1" in log and "(estimated total " in log


@pytest.mark.slow
def test_compare_tool_runs_seeds_in_parallel_workers(tmp_path, fashion_root):
    """--jobs 2: each seed in its own process; the parent's tables (one per protocol, both judging the same
    pre-trainings) hold both seeds of every arm, and each seed's rows are those its worker wrote."""
    from tools.compare import main

    out = tmp_path / "cmp"
    assert main(["--preset", "study", "--out", str(out), "--steps", "2", "--epochs", "1", "--per-class", "2",
                 "--max-test", "40", "--seeds", "0", "1", "--data-root", fashion_root, "--arms", "frozen",
                 "joint_shared", "--jobs", "2", "--protocol", "finetune", "knn"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["seed"], r["mode"], r["protocol"]) for r in rows] == [
        (s, m, p) for s in "01" for m in ("none", "frozen", "joint_shared") for p in ("finetune", "knn")]
    for seed in (0, 1):
        worker = json.loads((out / "seeds" / str(seed) / "rows.json").read_text())
        assert [r["final_top1"] for r in worker] == [float(r["final_top1"]) for r in rows if r["seed"] == str(seed)]
    results = (out / "results.md").read_text()
    # one row per protocol table, one in the table of what the renderers learnt
    assert results.count("| joint_shared | 2 |") == 3 and "## Protocol: knn" in results
    assert (out / "differences.png").read_bytes()[:4] == b"\x89PNG"
    config = (out / "seeds" / "0" / "pretrain" / "joint_shared_s0" / "config.yaml").read_text()
    assert "share_colors: true" in config and "patch_size: 8" in config


def test_compare_tool_stops_every_worker_when_a_seed_fails(tmp_path, capsys):
    from tools.compare import main

    out = tmp_path / "cmp"
    assert main(["--preset", "study", "--out", str(out), "--steps", "1", "--epochs", "1", "--seeds", "0", "1",
                 "--dataset", f"folder:{tmp_path / 'nothing'}", "--arms", "frozen", "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: seed [01] failed \(exit code 2\); see .*seeds/[01]\.log", err)
    assert "nothing" in (out / "seeds" / "0.log").read_text() + (out / "seeds" / "1.log").read_text()
    with pytest.raises(SystemExit):  # a seed counts once in a paired difference
        main(["--preset", "study", "--out", str(tmp_path / "twice"), "--seeds", "0", "0"])


@pytest.mark.slow
def test_bench_tool_writes_the_ratios(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--batch", "8", "--size", "32",
                          "--points", "300", "--classes", "4", "--steps", "1", "--warmup", "1",
                          "--json", str(tmp_path / "b.json")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["ratio_frozen"] > 0 and result["ratio_learnable"] > 0
    low, median, high = result["spread_ms"]["(c) learnable step"]  # min, median, max
    assert low <= median <= high and "min    median       max" in out.stdout
    assert set(result["stage_ms"]) == {"points_and_camera", "rasterise", "composite_fwd_bwd",
                                       "composite_fwd_bwd_reference", "render_batch", "forward_backward",
                                       "optimizer_step"}
    assert set(result["render_memory"]) == {"pytorch3d", "sort"}
    assert all(m["saved_mib_per_image"] > 0 for m in result["render_memory"].values())


def test_export_loads_in_timm_with_the_training_logits(tmp_path, pretrained_run):
    import json

    import timm

    from tools.export import main

    assert main([str(pretrained_run), "--out", str(tmp_path / "exp")]) == 0
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["architecture"] == "test_vit" and config["num_classes"] == 4
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]  # what the backbone takes, not timm's default
    # The run's own tag, none of the hub id, tag or licence of the weights timm publishes for test_vit
    assert config["pretrained_cfg"]["tag"] == "dr_fdsl.run"
    assert not {"license", "hf_hub_id", "url"} & set(config["pretrained_cfg"])
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "# Model card for test_vit.dr_fdsl.run" in card and "**Steps:** 4 optimiser steps" in card
    assert "4 categories of formula family ifs3d (300 points each" in card and str(pretrained_run.resolve()) in card
    assert (pretrained_run / "config.yaml").read_text() in card  # the settings, whole
    trained, size = load_pretrained(str(pretrained_run))
    weights = str(tmp_path / "exp" / "model.safetensors")
    by_file = timm.create_model(config["architecture"], pretrained=True, num_classes=4, img_size=size,
                                pretrained_cfg_overlay=dict(file=weights, num_classes=4))
    by_folder = timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True)  # config.json's arguments
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained.eval()(x)
        assert torch.equal(by_file.eval()(x), expected) and torch.equal(by_folder.eval()(x), expected)
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_knn_votes_as_a_slow_obvious_loop_does():
    import math

    from dr_fdsl.frozen_eval import knn_predict

    g = torch.Generator().manual_seed(0)
    train, labels, test = torch.randn(60, 8, generator=g), torch.randint(0, 4, (60,), generator=g), torch.randn(9, 8)
    k, temperature = 7, 0.1
    expected = []
    for q in test:
        sims = [(float(torch.dot(q / q.norm(), t / t.norm())), int(y)) for t, y in zip(train, labels)]
        votes = [0.0] * 4
        for sim, y in sorted(sims, reverse=True)[:k]:
            votes[y] += math.exp(sim / temperature)
        expected.append(max(range(4), key=lambda c: (votes[c], -c)))
    assert knn_predict(train, labels, test, 4, k, temperature, chunk=4).tolist() == expected


def test_linear_probe_separates_separable_features():
    from dr_fdsl.frozen_eval import linear_probe

    g = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 16, generator=g) * 4
    labels = torch.randint(0, 3, (300,), generator=g)
    features = centres[labels] + torch.randn(300, 16, generator=g)
    top1 = linear_probe(features[:200], labels[:200], features[200:], labels[200:], 3, epochs=5, lr=1e-2,
                        weight_decay=0.0, batch_size=32, seed=0)
    assert len(top1) == 5 and top1[-1] == 1.0
    noise = torch.randn(300, 16, generator=g)  # features that carry no label: near chance (1/3)
    assert linear_probe(noise[:200], labels[:200], noise[200:], labels[200:], 3, 5, 1e-2, 0.0, 32, 0)[-1] < 0.6


@pytest.mark.parametrize("protocol", ["linear", "knn"])
def test_frozen_feature_protocols_on_real_data(tmp_path, pretrained_run, fashion_root, protocol):
    common = dict(dataset="fashion_mnist", data_root=fashion_root, epochs=2, per_class=5, max_test=100,
                  batch_size=16, progress=False, protocol=protocol)
    result = finetune(FinetuneSettings(pretrained=str(pretrained_run), output_dir=str(tmp_path / "p"), **common))
    assert result["protocol"] == protocol and result["test_images"] == 100 and result["feature_dim"] == 64
    assert len(result["top1"]) == (2 if protocol == "linear" else 1)
    assert result["final_top1"] > 0.2  # 10 classes: a pipeline that ignored the features would sit near 0.1
    assert (tmp_path / "p" / f"{protocol}.json").is_file() and not (tmp_path / "p" / "finetune.json").exists()


def test_intervals_and_paired_differences_by_hand():
    import math

    from dr_fdsl.stats import mean_interval, paired_difference, t975

    values = [70.0, 72.0, 74.0]
    iv = mean_interval(values)
    assert iv.mean == 72.0 and iv.half_width == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    # Arms whose own intervals overlap, with a consistent per-seed difference of 1 point +- 0.1.
    a = {0: 70.0, 1: 75.0, 2: 80.0, 3: 72.0, 4: 77.0}
    b = {s: v - 1.0 + 0.1 * (-1) ** s for s, v in a.items()}
    assert mean_interval(list(a.values())).half_width > 1.0
    diff = paired_difference(a, b)
    assert diff.n == 5 and diff.mean == pytest.approx(0.98) and diff.excludes_zero
    assert t975(31) == pytest.approx(2.040, abs=1e-3) and t975(1000) == pytest.approx(1.962, abs=1e-3)
    assert not mean_interval([1.0]).excludes_zero  # one seed says nothing
