import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dr_fdsl.bank import bank_from_config
from dr_fdsl.checkpoint import list_checkpoints
from dr_fdsl.config import load_config
from dr_fdsl.engine import build_run, fit, resume, save_checkpoint, train_step
from dr_fdsl.errors import CheckpointError, ConfigError, IntegrityError, NonFiniteLossError
from dr_fdsl.render import PointRenderer
from tests.conftest import BIN, ROOT, run_processes, tiny


def renderer_params(run):
    return [p.detach().clone() for p in run.renderer.parameters()]


def model_params(run):
    return [p.detach().clone() for p in run.accelerator.unwrap_model(run.objective.model).parameters()]


def tags(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("mode", ["frozen", "joint", "adversarial"])
def test_each_mode_trains_logs_and_checkpoints(tmp_path, bank_dir, mode):
    cfg = tiny(tmp_path, bank_dir, f"renderer.mode={mode}")
    run = build_run(cfg)
    before = renderer_params(run)
    summary = fit(run)
    after = renderer_params(run)
    if mode == "frozen":
        assert all(torch.equal(a, b) for a, b in zip(before, after))
        fresh = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
        assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), after))
    else:
        assert not any(torch.equal(a, b) for a, b in zip(before, after))

    folder = tmp_path / "run"
    events = tags(folder)
    expected = {"train/loss", "train/acc", "lr/backbone", "perf/images_per_s", "perf/render_share",
                "grad_norm/backbone", "val/loss", "val/top1", "val/top5", "probe/val_acc", "probe/train_acc",
                "probe/color_val_acc", "probe/size_val_acc", "probe/color_train_acc", "probe/size_train_acc",
                *(f"renderer/{part}_{what}" for part in ("color", "radius") for what in ("drift", "between", "code"))}
    if mode != "frozen":
        expected |= {"lr/renderer", "grad_norm/renderer"}
    assert expected <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/top1")] == [2, 4]
    assert "renders" in events.Tags()["images"]
    assert {"renderer/radii", "renderer/colors"} <= set(events.Tags()["histograms"])
    assert [p.name for p in list_checkpoints(folder)] == ["step_0000002", "step_0000004"]
    assert load_config(folder / "config.yaml") == cfg
    assert summary["step"] == 4
    drifts = [summary[f"renderer/{part}_drift"] for part in ("color", "radius")]  # what the tables learnt
    assert drifts == [0, 0] if mode == "frozen" else min(drifts) > 0
    assert [e.value for e in events.Scalars("renderer/color_drift")][-1] == pytest.approx(drifts[0])
    # The logged evaluation is the model's accuracy on the held-out views, recomputed here without the engine.
    ids, seeds = run.eval_views
    with torch.no_grad():
        logits = run.objective.model.eval()(run.objective.normalize(run.renderer(ids, seeds)))
    assert summary["val/top1"] == pytest.approx((logits.argmax(1) == ids).float().mean().item(), abs=1e-6)
    assert json.loads((folder / "summary.json").read_text())["mode"] == mode


def test_joint_descends_and_adversarial_ascends(tmp_path, bank_dir):
    """Same start, same batch: the two modes move the rendering parameters in exactly opposite directions."""
    plain = ["image_aug.mixup=0", "image_aug.cutmix=0", "image_aug.random_erasing=0", "image_aug.hflip=0",
             "renderer.anchor_penalty=0", "optim.clip_grad=0", "train.probe=false", "renderer.color_init=grey"]
    deltas, grads = {}, {}
    for mode in ("joint", "adversarial"):
        run = build_run(tiny(tmp_path / mode, bank_dir, f"renderer.mode={mode}", *plain))
        start = renderer_params(run)
        # The gradient of the loss itself, from the same batch the step will draw.
        ids, seeds = run.order.batch(run.order.index, 8)
        images = run.renderer(ids, seeds)
        loss = torch.nn.functional.cross_entropy(run.objective.model(run.objective.normalize(images)), ids,
                                                 label_smoothing=0.1)
        grads[mode] = torch.autograd.grad(loss, list(run.renderer.parameters()))
        train_step(run)
        deltas[mode] = [a - b for a, b in zip(renderer_params(run), start)]
    for j, a in zip(deltas["joint"], deltas["adversarial"]):
        torch.testing.assert_close(j, -a)
    for g, j in zip(grads["joint"], deltas["joint"]):
        assert (g * j).sum() < 0  # joint: a descent direction of the classification loss
    for g, a in zip(grads["adversarial"], deltas["adversarial"]):
        assert (g * a).sum() > 0  # adversarial: an ascent direction


def test_resume_is_exact(tmp_path, bank_dir):
    args = ["renderer.mode=joint", "train.max_steps=6", "train.ckpt_every=3", "train.eval_every=3",
            "image_aug.random_erasing=0.5", "renderer.augment.subsample=[0.5,1.0]"]
    straight = build_run(tiny(tmp_path / "a", bank_dir, *args))
    fit(straight)
    interrupted = build_run(tiny(tmp_path / "b", bank_dir, *args))  # the same 6-step run, stopped after 3
    while interrupted.state.step < 3:
        train_step(interrupted)
    save_checkpoint(interrupted)
    resumed = build_run(tiny(tmp_path / "b", bank_dir, *args), resume="latest")
    resume(resumed, "latest")
    assert resumed.state.step == 3
    fit(resumed)
    for a, b in zip(model_params(straight) + renderer_params(straight),
                    model_params(resumed) + renderer_params(resumed)):
        assert torch.equal(a, b)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, bank_dir):
    fit(build_run(tiny(tmp_path, bank_dir, "train.max_steps=2")))
    broken = build_run(tiny(tmp_path, bank_dir, "train.max_steps=4"), resume="latest")
    resume(broken, "latest")
    with torch.no_grad():
        next(broken.accelerator.unwrap_model(broken.objective.model).parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 3; .*last good checkpoint: .*step_0000002.*lower optim.lr"):
        fit(broken)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000002"]


def test_bad_checkpoints_are_clear_errors(tmp_path, bank_dir):
    with pytest.raises(CheckpointError, match="no checkpoint under"):
        resume(build_run(tiny(tmp_path, bank_dir), resume="latest"), "latest")
    fit(build_run(tiny(tmp_path, bank_dir, "train.max_steps=2")))
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    with pytest.raises(CheckpointError, match=r"other settings \(bank.num_classes: checkpoint 4, config 3\)"):
        resume(build_run(tiny(tmp_path, bank_dir, "bank.num_classes=3"), resume="latest"), "latest")
    # An interrupted save leaves only a temporary folder, which is never taken for a checkpoint.
    shutil.copytree(ckpt, ckpt.parent / ".incomplete_step_0000009")
    assert list_checkpoints(tmp_path / "run") == [ckpt]
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="'model.safetensors' does not match the digest recorded"):
        resume(build_run(tiny(tmp_path, bank_dir), resume=str(ckpt)), str(ckpt))
    (ckpt / "content_hashes.json").unlink()
    with pytest.raises(IntegrityError, match="content_hashes.json is missing although its trainer_state.json says"):
        resume(build_run(tiny(tmp_path, bank_dir), resume=str(ckpt)), str(ckpt))
    (ckpt / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        resume(build_run(tiny(tmp_path, bank_dir), resume=str(ckpt)), str(ckpt))


@pytest.mark.parametrize("overrides, pattern", [
    (["model.name=vit_tiny_patch16_2244"], r"unknown timm model 'vit_tiny_patch16_2244' \(did you mean"),
    (["model.name=vit_tiny_patch16_224", "renderer.image_size=40"],
     r"image_size=40 is not a multiple of .*patch size \(16, 16\)"),
    (["model.name=resnet18", "model.patch_size=8"], r"'model.patch_size': 'resnet18' has no patch size to set"),
])
def test_bad_models_fail_before_the_bank_is_built(tmp_path, bank_dir, overrides, pattern):
    cfg = tiny(tmp_path, bank_dir, *overrides, f"bank.cache_dir={tmp_path / 'banks'}")
    with pytest.raises(ConfigError, match=pattern):
        build_run(cfg)
    assert not (tmp_path / "banks").exists()


def test_train_py_rejects_unknown_keys_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/quickstart.yaml"),
                          "train.max_step=5", f"output_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "unknown config key 'train.max_step' (did you mean 'train.max_steps'?)" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_render_different_streams_and_share_the_renderer(tmp_path, bank_dir):
    """A real 2-process CPU run (gloo) through torchrun; accelerate's --cpu launcher would start one process."""
    cfg_args = [f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}", "bank.num_classes=4",
                "bank.num_points=300", "renderer.image_size=32", "renderer.mode=joint", "model.name=test_vit",
                "train.batch_size=8", "train.max_steps=4", "train.eval_every=2", "train.eval_images=16",
                "train.ckpt_every=2", "train.progress=false"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    out = run_processes([os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2",
                         str(ROOT / "train.py"), "--config", str(ROOT / "configs/quickstart.yaml"), *cfg_args],
                        timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["total_batch"] == 16
    first, second = summary["first_view_seeds"]
    assert first != second  # every rank renders its own stream
    a, b = summary["renderer_checksums"]
    assert a == b  # synchronised gradients keep the rendering parameters identical
    start = PointRenderer(bank_from_config(load_config(tmp_path / "run" / "config.yaml").bank),
                            load_config(tmp_path / "run" / "config.yaml").renderer)
    assert a != sum(float(p.detach().double().sum()) * (i + 1) for i, p in enumerate(start.parameters()))  # moved


@pytest.mark.slow
def test_readme_main_command(tmp_path, bank_dir):
    """The README's main job (`accelerate launch train.py --config configs/quickstart.yaml`), shortened."""
    out = run_processes([os.path.join(BIN, "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
                         "--mixed_precision", "no", "--dynamo_backend", "no", "train.py",
                         "--config", "configs/quickstart.yaml", "train.max_steps=20", "train.eval_every=10",
                         f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}"], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: 20 steps" in out.stdout
    assert "train (joint)" in out.stderr  # the progress bar
    assert any((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state; a test with another precision needs it cleared (as Accelerate's
    own tests do), and cleared again for the tests after it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_bf16_classifier_float32_renderer_and_accumulation(tmp_path, bank_dir, fresh_accelerate_state):
    run = build_run(tiny(tmp_path, bank_dir, "train.mixed_precision=bf16", "train.grad_accum=2",
                         "renderer.mode=joint"))
    with run.accelerator.autocast():
        images = run.renderer(torch.tensor([0, 1]), torch.tensor([0, 1]))
        assert images.dtype == torch.float32  # PyTorch3D's kernels run outside autocast
        # Accelerate casts outputs back to float32
        assert run.objective.model(run.objective.normalize(images)).dtype == torch.float32
    summary = fit(run)
    assert summary["step"] == 4 and summary["total_batch"] == 16  # 4 optimiser steps of 2 micro-batches


def test_example_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    found = {p.stem: load_config_from_file(str(p)) for p in (ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert set(found) == {"one_gpu", "multi_gpu", "multi_node"}
    assert found["multi_node"].num_machines == 2 and found["multi_gpu"].num_processes == 8


def test_a_joint_step_moves_only_the_categories_it_drew(tmp_path, bank_dir):
    run = build_run(tiny(tmp_path, bank_dir, "renderer.mode=joint", "bank.num_classes=20", "train.probe=false",
                         "optim.warmup_steps=0", "renderer.color_init=grey"))
    before = renderer_params(run)
    drawn = set(run.order.batch(run.order.index, 8)[0].tolist())
    out = train_step(run)
    assert out["perf/renderer_rows_synced"] == 2 * len(drawn)  # colour and radius rows of the drawn categories
    for old, new in zip(before, renderer_params(run)):
        moved = {c for c in range(20) if not torch.equal(old[c], new[c])}
        assert moved == drawn


@pytest.mark.slow
def test_ctrl_c_leaves_a_whole_checkpoint_to_resume_from(tmp_path, bank_dir):
    import time

    args = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/quickstart.yaml"),
            f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}", "bank.num_classes=4",
            "bank.num_points=300", "model.name=test_vit", "train.batch_size=8", "train.max_steps=100000",
            "train.ckpt_every=3", "train.eval_every=1000", "train.progress=false"]
    # SIGINT as a terminal gives it, even where this test runs as a background job (started with SIGINT ignored)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list_checkpoints(tmp_path / "run") and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # no-op once it has exited; a child that ignored the signal must not outlive the test
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and "--resume latest" in err
    resumed = build_run(load_config(tmp_path / "run" / "config.yaml"), resume="latest")  # its resolved config
    resume(resumed, "latest")  # whole and loadable
    assert resumed.state.step % 3 == 0 and resumed.state.step >= 3


def test_stream_seeds_are_the_first_versions_and_python_independent():
    import random

    from dr_fdsl.view_order import counter_seed

    rng = random.Random(0)
    for _ in range(2000):
        values = tuple(rng.choice([rng.randint(-3, 3), rng.randint(0, 2**40), rng.randint(-2**70, 2**70)])
                       for _ in range(3))
        assert counter_seed(*values) == hash(values) & (2**63 - 1)  # 64-bit CPython >= 3.8


def test_objectives_and_families_are_chosen_by_config_key():
    from dr_fdsl.families import FAMILIES
    from dr_fdsl.objectives import OBJECTIVES
    from dr_fdsl.objectives.base import Objective

    assert set(OBJECTIVES) == {"classify", "mim", "classify+mim", "sit", "multilabel"}
    assert set(FAMILIES) == {"ifs3d", "ofdb", "fractaldb", "visualatom", "svd2d", "onepfrac"}
    assert all(issubclass(o, Objective) and o.name == n for n, o in OBJECTIVES.items())
    with pytest.raises(ConfigError, match=r"unknown objective 'simclr'; valid: classify, classify\+mim, mim, "
                                          r"multilabel, sit"):
        load_config(None, ["train.objective=simclr"])


@pytest.mark.slow
def test_compare_runs_several_trainings_in_one_two_process_launch(tmp_path, bank_dir):
    """The entry script, not fit() or finetune(), tears the process group down: a 2-process launch of compare.py
    pre-trains three times and fine-tunes four times."""
    fashion = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(fashion):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make setup installs it)")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    out = run_processes([os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2",
                         str(ROOT / "tools" / "compare.py"), "--preset", "cpu", "--out", str(tmp_path / "cmp"),
                         "--steps", "2", "--epochs", "1", "--per-class", "4", "--max-test", "40", "--seeds", "0",
                         "--ft-batch", "16"],
                        timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (tmp_path / "cmp" / "results.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == ["none", "frozen", "joint", "adversarial"]
    for mode in ("frozen", "joint", "adversarial"):
        summary = json.loads((tmp_path / "cmp" / "pretrain" / f"{mode}_s0" / "summary.json").read_text())
        assert summary["num_processes"] == 2 and summary["step"] == 2


def test_patch_size_gives_small_images_more_tokens_and_travels_with_the_run(tmp_path, bank_dir):
    """model.patch_size=8 at 32 px: 16 tokens instead of test_vit's 4; fine-tuning rebuilds the same model from the
    run's config, and a resume with another patch size is refused."""
    from dr_fdsl.checkpoint import fingerprint
    from dr_fdsl.finetune import load_pretrained

    run = build_run(tiny(tmp_path, bank_dir, "model.patch_size=8", "train.max_steps=2", "train.ckpt_every=2"))
    assert run.objective.modules()[0].patch_embed.num_patches == 16
    fit(run)
    model, size = load_pretrained(run.cfg.output_dir)
    assert (model.patch_embed.num_patches, size) == (16, 32)
    assert "model.patch_size" not in fingerprint(tiny(tmp_path, bank_dir), 1)["required"]  # unset: not recorded
    for other in ("model.patch_size=4", "model.patch_size=0"):  # another size, or none: either way refused
        with pytest.raises(CheckpointError, match=r"other settings \(model.patch_size: checkpoint 8, config "
                                                  r"(4|default)\)"):
            resume(build_run(tiny(tmp_path, bank_dir, other, "train.max_steps=4"), resume="latest"), "latest")
