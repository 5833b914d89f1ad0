"""Settings are honoured or refused: mixed precision that a device would not run, a leakage probe that diverged."""

import math

import pytest
import torch

from dr_fdsl.checkpoint import list_checkpoints
from dr_fdsl.config import load_config
from dr_fdsl.engine import build_run, fit
from dr_fdsl.errors import ConfigError
from tests.conftest import tiny


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: a test with another precision clears it before and after."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_fp16_on_a_cpu_is_refused_with_the_alternative(tmp_path, bank_dir, fresh_accelerate_state, monkeypatch):
    # Accelerate accepts fp16 on a CPU and trains in float32, while config.yaml and the fingerprint say fp16
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    with pytest.raises(ConfigError, match=r"^config key 'train.mixed_precision': 'fp16' does not run on cpu \(it "
                                          r"would train in float32\); fp16 needs a CUDA GPU, here use "
                                          r"train.mixed_precision=no or bf16$"):
        build_run(tiny(tmp_path, bank_dir, "train.mixed_precision=fp16"))
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_bf16_on_a_cpu_computes_in_bfloat16(tmp_path, bank_dir, fresh_accelerate_state, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    run = build_run(tiny(tmp_path, bank_dir, "train.mixed_precision=bf16", "train.probe=false"))
    seen = []
    layer = run.accelerator.unwrap_model(run.objective.model).blocks[0].mlp.fc1  # a matmul (residuals stay float32)
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    images = run.renderer(torch.tensor([0, 1]), torch.tensor([0, 1]))
    out = run.objective.model(run.objective.normalize(images))
    assert seen == [torch.bfloat16]  # the layers compute in bf16; Accelerate casts the output back to float32
    assert out.dtype == torch.float32


def test_a_probe_lr_that_cannot_converge_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"^config key 'train.probe_lr': must be in \(0, 1.0\] .*got 1e\+30$"):
        load_config(None, ["train.probe_lr=1e30"])
    assert load_config(None, ["train.probe_lr=1.0"]).train.probe_lr == 1.0


def test_a_diverged_probe_is_reported_and_training_goes_on(tmp_path, bank_dir, capsys):
    from tests.test_train import tags  # its TensorBoard reader

    run = build_run(tiny(tmp_path, bank_dir, "train.max_steps=2"))
    with torch.no_grad():  # what a diverging probe leaves behind
        run.objective.probe.linear.weight[0, 0] = math.inf
    summary = fit(run)  # used to stop at the first checkpoint: "weights are not finite ... lower optim.lr"
    assert summary["step"] == 2 and math.isnan(summary["probe/val_acc"])
    err = capsys.readouterr()
    assert (err.out + err.err).count("warning: the leakage probe diverged (its weights are not finite)") == 1
    events = tags(tmp_path / "run")
    assert [e.value for e in events.Scalars("probe/diverged")] == [1.0]
    assert all(math.isnan(e.value) for e in events.Scalars("probe/train_acc"))
    assert all(math.isnan(e.value) for e in events.Scalars("probe/val_acc"))
    assert all(torch.isfinite(p).all() for p in run.objective.probe.parameters())  # restarted: checkpoints hold it
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000002"]


def test_a_probe_that_diverges_in_its_own_step_at_a_checkpoint_step_stops_nothing(tmp_path, bank_dir):
    """The probe notices non-finite weights at its next forward; a checkpoint due right after its step settles them
    first (Objective.before_checkpoint) instead of refusing the run's weights. The diverged flag survives resume."""
    from dr_fdsl.engine import resume

    run = build_run(tiny(tmp_path, bank_dir, "train.max_steps=2", "train.ckpt_every=1"))
    step = run.objective.probe_optimizer.step

    def diverging_step(*args, **kwargs):
        out = step(*args, **kwargs)
        with torch.no_grad():
            run.objective.probe.linear.weight[0, 0] = math.inf
        return out

    run.objective.probe_optimizer.step = diverging_step
    assert fit(run)["step"] == 2  # used to stop at step 1: "weights are not finite at step 1; not saved; ..."
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000001", "step_0000002"]
    again = build_run(tiny(tmp_path, bank_dir, "train.max_steps=3", "train.ckpt_every=1"), resume="latest")
    resume(again, "latest")
    assert again.objective.probe_diverged


def test_a_non_finite_probe_loss_gives_zero_gradients_and_nan_metrics(tmp_path, bank_dir):
    from dr_fdsl.objectives.classify import Classify

    cfg = tiny(tmp_path, bank_dir)
    objective = Classify(cfg, 4, 1e-3, torch.device("cpu"))
    images, ids = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    metrics = {}
    objective.probe_loss(images, ids, metrics)
    assert metrics["probe/diverged"] == 0 and math.isfinite(metrics["probe/loss"])
    with torch.no_grad():  # finite weights whose loss overflows: 3e38 - (-3e38) is inf in float32
        objective.probe.linear.weight.zero_()
        objective.probe.linear.bias.copy_(torch.tensor([3e38, -3e38, -3e38, -3e38]))
    loss = objective.probe_loss(images, ids, metrics)
    loss.backward()
    assert loss.item() == 0 and metrics["probe/diverged"] == 1
    assert math.isnan(metrics["probe/train_acc"]) and math.isnan(metrics["probe/loss"])
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in objective.probe.parameters())
