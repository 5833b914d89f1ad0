"""Masked pre-training on the target's training images before fine-tuning (dr_fdsl/target_mim.py)."""

import pytest
import torch
from accelerate import Accelerator

from dr_fdsl import datasets
from dr_fdsl.config import ModelConfig, load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.finetune import FinetuneSettings, finetune
from dr_fdsl.models import create_classifier, normalization
from dr_fdsl.target_mim import TargetMIMSettings, masked_pretrain


def _backbone():
    torch.manual_seed(0)
    return create_classifier(ModelConfig(name="test_vit", drop_path=0.0), 10, 32)


def test_masked_pretraining_learns_is_keyed_and_leaves_the_global_generator_alone():
    """On 24 images (two overlapping shapes), the reconstruction error falls below half its first epoch's; two runs
    with one seed give the same weights (masks keyed by image index and epoch, data order seeded); the global
    generator is where it was, so the fine-tuning after it draws as it would without it."""
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(24, 3, 28, 28, dtype=torch.uint8)
    for i in range(24):  # a bright square and a grey bar at random places
        y, x = torch.randint(0, 18, (2,), generator=g).tolist()
        images[i, :, y:y + 10, x:x + 10] = 220
        images[i, :, (y + 5) % 28, :] = 120
    accelerator = Accelerator(cpu=True)
    settings = TargetMIMSettings(epochs=20, batch_size=8, lr=2e-3, final_lr=1e-3, warmup_epochs=2, final_epochs=5,
                                 ratio=0.4)
    weights = []
    for _ in range(2):
        model = _backbone()
        mean, std = normalization(model)
        before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
        state = torch.get_rng_state()
        result = masked_pretrain(model, images, 32, mean, std, settings, seed=3, accelerator=accelerator)
        assert torch.equal(torch.get_rng_state(), state)
        assert result["steps"] == 20 * 3 and len(result["loss"]) == 20
        assert result["loss"][-1] < 0.5 * result["loss"][0]
        assert not isinstance(model.head, torch.nn.Linear)  # head removed; fine-tuning puts a new one
        assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
        weights.append(model.state_dict())
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


@pytest.mark.parametrize("overrides, pattern", [
    (["target_mim.epochs=10", "target_mim.final_epochs=8", "target_mim.warmup_epochs=5"],
     r"'target_mim.final_epochs': warmup_epochs \+ final_epochs must fit"),
    (["target_mim.epochs=50", "target_mim.ratio=0"], r"'target_mim.ratio'"),
    (["target_mim.epochs=50", "target_mim.final_lr=1.0"], r"'target_mim.final_lr'"),
    (["target_mim.epoch=10"], r"unknown config key 'target_mim.epoch' \(did you mean 'target_mim.epochs'"),
])
def test_target_mim_settings_fail_at_load(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides, cls=FinetuneSettings)


def test_a_patch_that_does_not_divide_the_input_is_an_error():
    model = _backbone()
    mean, std = normalization(model)
    with pytest.raises(ConfigError, match=r"'target_mim.patch': must divide the model's input size 32"):
        masked_pretrain(model, torch.zeros(8, 3, 28, 28, dtype=torch.uint8), 32, mean, std,
                        TargetMIMSettings(epochs=1, patch=5, batch_size=4), 0, Accelerator(cpu=True))


def test_fine_tuning_after_masked_pretraining_on_fashion_mnist(tmp_path):
    """The chain through finetune(): masked pre-training on the few-shot training images, then fine-tuning from
    its backbone (from scratch here; a pretrained= run is loaded first when given: tests/test_objectives.py)."""
    if not (datasets.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Debian's dataset-fashion-mnist is missing: `make setup` installs it")
    common = dict(dataset="fashion_mnist", data_root=str(datasets.DEBIAN_FASHION_MNIST), model="test_vit", epochs=1,
                  per_class=3, max_test=50, batch_size=10, progress=False)
    plain = finetune(FinetuneSettings(output_dir=str(tmp_path / "plain"), **common))
    masked = finetune(FinetuneSettings(output_dir=str(tmp_path / "masked"), **common,
                                       target_mim=TargetMIMSettings(epochs=2, batch_size=10, warmup_epochs=1,
                                                                    final_epochs=0, lr=1e-3)))
    assert "target_mim" not in plain and masked["target_mim"]["steps"] == 2 * 3
    assert masked["train_images"] == 30 and masked["top1"] != plain["top1"]
    knn = finetune(FinetuneSettings(output_dir=str(tmp_path / "knn"), protocol="knn", **common,
                                    target_mim=TargetMIMSettings(epochs=1, batch_size=10, warmup_epochs=0,
                                                                 final_epochs=0)))
    assert knn["target_mim"]["epochs"] == 1 and 0 <= knn["final_top1"] <= 1


@pytest.mark.slow
def test_compare_target_mim_study_end_to_end(tmp_path):
    import csv

    from tools.compare import main

    out = tmp_path / "cmp"
    assert main(["--study", "target_mim", "--out", str(out), "--steps", "4", "--epochs", "1", "--per-class", "3",
                 "--max-test", "50", "--seeds", "0", "--ft-batch", "10", "--tm-epochs", "2", "--tm-batch", "10",
                 "--data-root", str(datasets.DEBIAN_FASHION_MNIST)]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["none", "target_mim", "fractal", "fractal+target_mim"]
    assert [r["target_mim_loss"] != "" for r in rows] == [False, True, False, True]
    assert [r["pretrain_top1"] != "" for r in rows] == [False, False, True, True]
    assert "| fractal+target_mim | 1 |" in (out / "results.md").read_text()
