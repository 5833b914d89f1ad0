"""Renderer mode ``teach`` (dr_fdsl/modes/teach.py, TeachAugment): where each gradient goes, the EMA teacher, the
update interval, the colour regulariser, the replay of past tables, resume, and the checks at load."""

import pytest
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from dr_fdsl.engine import build_run, fit, resume, save_checkpoint, train_step
from dr_fdsl.engine.step import forward_backward, optimizer_step, render_batch
from dr_fdsl.errors import ConfigError
from dr_fdsl.modes.teach import sliced_wasserstein
from tests.conftest import tiny

# Colours that can move (the default white sits where the squash is flat) and a step without random pixel draws
PLAIN = ["renderer.color_init=grey", "optim.clip_grad=0", "train.probe=false"]


def backbone(run):
    return run.accelerator.unwrap_model(run.objective.model)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def dense_grads(run):
    return [None if p.grad is None else p.grad.to_dense().clone() for p in run.renderer.parameters()]


def smoothed_non_saturating(logits, ids, epsilon=0.1):
    """-sum_k t_k log(1 - p_k), t the label-smoothed one-hot: written out here, apart from the mode's."""
    targets = torch.full_like(logits, epsilon / logits.shape[1])
    targets[torch.arange(len(ids)), ids] += 1 - epsilon
    return -(targets * torch.log(1 - torch.softmax(logits, 1) + 1e-12)).sum(1).mean()


def test_teach_gradients_go_to_the_backbone_teacher_and_renderer_as_they_should(tmp_path, bank_dir):
    weights = ["teach.adversarial_weight=1.0", "teach.teacher_weight=0.5", "teach.interval=2",
               "teach.ema_decay=0.75"]
    frozen = build_run(tiny(tmp_path / "frozen", bank_dir, "renderer.mode=frozen", *PLAIN))
    run = build_run(tiny(tmp_path / "teach", bank_dir, "renderer.mode=teach", *PLAIN, *weights))
    batch, frozen_batch = render_batch(run), render_batch(frozen)
    assert torch.equal(batch.images, frozen_batch.images)  # the same tables at the start: the same renders
    net, teacher = backbone(run), run.mode.teacher
    start, teacher_start = params(net), params(teacher)
    x = run.objective.normalize(batch.images)
    student_logits, teacher_logits = net(x).float(), teacher(x).float()
    tables = list(run.renderer.parameters())
    g_adversarial = torch.autograd.grad(smoothed_non_saturating(student_logits, batch.class_ids), tables,
                                        retain_graph=True)
    g_teacher = torch.autograd.grad(F.cross_entropy(teacher_logits, batch.class_ids), tables, retain_graph=True)
    g_student_ce = torch.autograd.grad(F.cross_entropy(student_logits, batch.class_ids), tables, retain_graph=True)
    set_seed(0)  # the image augmentations draw from the global generator: the same draws for both
    forward_backward(frozen, frozen_batch)
    set_seed(0)
    out = forward_backward(run, batch)

    # The backbone: its ordinary loss only, the frozen mode's step on the same renders.
    for a, b in zip(backbone(frozen).parameters(), net.parameters()):
        assert torch.equal(a.grad, b.grad)
    # The teacher: no gradient at all.
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # The renderer: descends the non-saturating loss (an ascent of the backbone's cross-entropy) plus the
    # teacher's cross-entropy, weighted; the colour term is 0 at the initial tables.
    assert out.metrics["teach/color_reg"].item() == 0.0
    for got, a, t, ce in zip(dense_grads(run), g_adversarial, g_teacher, g_student_ce):
        torch.testing.assert_close(got, 1.0 * a.to_dense() + 0.5 * t.to_dense(), rtol=1e-4, atol=1e-7)
        assert (a.to_dense() * ce.to_dense()).sum() < 0  # what the renderer descends, the backbone's loss ascends
    assert out.metrics["teach/teacher_acc"].item() == (teacher_logits.argmax(1) == batch.class_ids).float().mean()

    # Step 1 is not a renderer step (teach.interval=2): no gradient reaches the tables; the teacher only follows
    # the backbone by EMA, at the start of the step.
    optimizer_step(run)
    run.state.step += 1
    moved = params(net)
    assert any(not torch.equal(a, b) for a, b in zip(start, moved))
    assert all(torch.equal(a, b) for a, b in zip(teacher_start, params(teacher)))  # the step itself: untouched
    forward_backward(run, render_batch(run))
    assert dense_grads(run) == [None, None]
    for t0, p1, now in zip(teacher_start, moved, teacher.parameters()):
        assert torch.equal(now, 0.75 * t0 + (1 - 0.75) * p1)
    assert all(p.grad is None for p in teacher.parameters())


def test_the_colour_regulariser_is_the_published_sliced_wasserstein_distance():
    """Constant images: every sorted projection is the colour's, so the distance is the mean squared projected
    colour difference; equal images are at 0."""
    proj = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=0)
    a = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(4, 3, 5, 5)
    b = torch.tensor([0.6, 0.1, 0.3]).view(1, 3, 1, 1).expand(4, 3, 5, 5)
    expected = ((torch.tensor([0.2 - 0.6, 0.5 - 0.1, 0.9 - 0.3]) @ proj) ** 2).mean()
    torch.testing.assert_close(sliced_wasserstein(a, b, proj), expected)
    assert sliced_wasserstein(a, a.clone(), proj).item() == 0.0
    # Sorted along the batch (as published): the order of the images in a batch does not matter
    c = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sliced_wasserstein(c, b, proj), sliced_wasserstein(c.flip(0), b, proj))


def test_the_colour_term_pulls_moved_tables_back_and_replay_reuses_past_tables(tmp_path, bank_dir):
    run = build_run(tiny(tmp_path, bank_dir, "renderer.mode=teach", *PLAIN, "teach.adversarial_weight=0",
                         "teach.teacher_weight=0", "teach.replay_every=1", "teach.replay_group=4"))
    train_step(run)  # step 0: a renderer step
    train_step(run)  # step 1 stores the tables after step 0
    assert len(run.mode.replay) == 1
    stored = run.mode.replay[0]
    with torch.no_grad():  # the tables move away from the stored copy and from the initial ones
        for p in run.renderer.parameters():
            p += 0.3
    assert all(not torch.equal(stored[k], p) for k, p in run.renderer.named_parameters())
    run.state.step, run.mode.micro_batches = 2, 2  # as if at step 2 (interval 5: no renderer step)
    batch = render_batch(run)
    images = run.mode._backbone_images(batch)
    with torch.no_grad():
        past = torch.func.functional_call(run.renderer, stored, (batch.class_ids, batch.view_seeds))
    groups = [("past" if torch.equal(i, p) else "now" if torch.equal(i, n) else "neither")
              for i, p, n in zip(images.chunk(2), past.chunk(2), batch.images.chunk(2))]
    assert "neither" not in groups
    assert run.mode.last["teach/replayed"].item() == groups.count("past") / 2
    # Only the colour term: its gradient moves the tables back towards the initial render's colours
    run.mode.micro_batches = 0  # a renderer step
    run.renderer.zero_grad()
    run.mode._augmenter_loss(batch).backward()
    assert run.mode.last["teach/color_reg"].item() > 0
    shift = [p.detach() - run.mode.initial[k] for k, p in run.renderer.named_parameters()]
    assert sum((g * s).sum() for g, s in zip(dense_grads(run), shift) if g is not None) > 0


def test_teach_resumes_exactly_with_its_teacher_and_replay(tmp_path, bank_dir):
    args = ["renderer.mode=teach", *PLAIN, "teach.interval=1", "teach.replay_every=1", "teach.replay_size=2",
            "teach.replay_group=4", "teach.ema_decay=0.5", "train.max_steps=4", "train.ckpt_every=2",
            "train.eval_every=2"]
    straight = build_run(tiny(tmp_path / "a", bank_dir, *args))
    summary = fit(straight)
    interrupted = build_run(tiny(tmp_path / "b", bank_dir, *args))
    while interrupted.state.step < 2:
        train_step(interrupted)
    save_checkpoint(interrupted)
    resumed = build_run(tiny(tmp_path / "b", bank_dir, *args), resume="latest")
    resume(resumed, "latest")
    assert len(resumed.mode.replay) == 1 and resumed.mode.micro_batches == 2
    fit(resumed)
    a, b = straight.mode.state_tensors(), resumed.mode.state_tensors()
    assert a.keys() == b.keys() and len(straight.mode.replay) == 2
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(params(backbone(straight)) + params(straight.renderer),
                    params(backbone(resumed)) + params(resumed.renderer)):
        assert torch.equal(x, y)
    # The teacher's held-out top-1 is logged beside the backbone's
    ids, seeds = straight.eval_views
    with torch.no_grad():
        logits = straight.mode.teacher.eval()(straight.objective.normalize(straight.renderer(ids, seeds)))
    assert summary["teach/val_top1"] == pytest.approx((logits.argmax(1) == ids).float().mean().item(), abs=1e-6)


@pytest.mark.parametrize("override, message", [
    ("train.objective=mim", r"'renderer.mode': teach needs a teacher that classifies .* got 'mim'"),
    ("teach.ema_decay=1.0", r"'teach.ema_decay': must be in \[0, 1\)"),
    ("teach.interval=0", r"'teach.interval': must be >= 1"),
    ("teach.teacher_weight=-1.0", r"'teach.teacher_weight': must be a number >= 0"),
    ("teach.replay_decay=0.0", r"'teach.replay_decay': must be in \(0, 1\]"),
])
def test_teach_refuses_what_it_cannot_do_at_load(tmp_path, bank_dir, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny(tmp_path, bank_dir, "renderer.mode=teach", override)


def test_teach_anchor_tool_states_why_its_claim_fails():
    """tools/teach_anchor.py's verdict: the claim needs both halves, teach at the bound and the adversary collapsed."""
    from tools.teach_anchor import verdict

    good = {"teach": {0: 0.50, 1: 0.41}, "adversarial_unanchored": {0: 0.10, 1: 0.12}}
    assert verdict(good, 0.35, 0.15)[0]
    assert verdict({**good, "adversarial_unanchored": {0: 0.15000000596}}, 0.35, 0.15)[0]  # float32 at the bound
    holds, line = verdict({**good, "teach": {0: 0.50, 1: 0.30}}, 0.35, 0.15)
    assert not holds and "teach below 0.35 on seeds [1]" in line
    holds, line = verdict({**good, "adversarial_unanchored": {0: 0.40, 1: 0.12}}, 0.35, 0.15)
    assert not holds and "did not collapse" in line and "[0]" in line
