"""Family onepfrac (1p-frac): the published generator's fractal, probabilities, chaos game, drawing and fill filter
against a fixture recorded from its own functions, the keyed perturbation draws, one fractal's memory for every
category, and the per-image replay on the device (frozen export equal to the in-loop render)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import read_image

from dr_fdsl.bank import PointBank, build_bank, content_digest, load_bank, save_bank
from dr_fdsl.config import load_config
from dr_fdsl.errors import BankError, ConfigError
from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.onepfrac import generator as op
from dr_fdsl.families.onepfrac.instances import OnePFracReplay
from dr_fdsl.render import PointRenderer
from dr_fdsl.static import export, image_path, quantize

PUBLISHED = np.load(Path(__file__).parent / "fixtures" / "onepfrac" / "published.npz")
ITERATION, CANVAS, PAD, THRESHOLD = PUBLISHED["config"]
ITERATION, CANVAS, PAD = int(ITERATION), int(CANVAS), int(PAD)
CLASSES = sorted(int(k[5:-len("_accepted")]) for k in PUBLISHED if k.endswith("_accepted"))
FLAT = ["renderer.view.rotation=none", "renderer.view.projection=orthographic", "renderer.view.ortho_scale=[1.0,1.0]"]


def case(k: int) -> tuple[int, dict]:
    c = int(PUBLISHED[f"class{k}_case"])
    seed, sigma, delta = PUBLISHED[f"case{c}_meta"]
    return c, {"seed": int(seed), "sigma": float(sigma), "delta": float(delta)}


@pytest.fixture(scope="module")
def small_bank():
    return build_bank(family="onepfrac", num_classes=5, num_points=2000, seed=0, canvas=128, cache_dir=None)


def test_the_fractal_and_its_probabilities_are_the_published_ones():
    for c in range(3):
        seed, sigma, _ = PUBLISHED[f"case{c}_meta"]
        base = op.base_system(int(seed), float(sigma), 0.1, 2)
        assert np.array_equal(base["system"], PUBLISHED[f"case{c}_system"])
        assert base["alpha"] == PUBLISHED[f"case{c}_alpha"]
        assert np.array_equal(np.concatenate([base["rows"], base["probs"][:, None]], 1), PUBLISHED[f"case{c}_params"])


def test_abs_dets_round_as_numpys_det():
    mats = np.random.default_rng(3).uniform(-1, 1, (4000, 2, 2))
    mats[:5, 0, 0] = 0.0  # a zero first pivot: the rows swap
    assert np.array_equal(op.abs_dets(mats), np.abs(np.linalg.det(mats)))
    plain = np.abs(mats[:, 0, 0] * mats[:, 1, 1] - mats[:, 0, 1] * mats[:, 1, 0])
    assert (plain != op.abs_dets(mats)).mean() > 0.3  # why it is emulated


@pytest.mark.parametrize("k", CLASSES)
def test_chaos_game_pixels_drawing_and_filter_are_the_published_ones(k):
    c, _ = case(k)
    params = PUBLISHED[f"case{c}_params"]
    rows, probs = params[:, :6], params[:, 6]
    sel, found = op.map_sequence(probs, ITERATION)
    raw = op.chaos_games((rows * PUBLISHED[f"class{k}_noise"])[None], probs, sel, found)[0]
    assert np.array_equal(raw, PUBLISHED[f"class{k}_raw"])
    pixels = fdb.pixel_coords(raw, CANVAS, PAD)
    assert np.array_equal(pixels, PUBLISHED[f"class{k}_pixels"])
    lit = op.patch_image(pixels, PUBLISHED[f"class{k}_masks"], CANVAS)
    assert np.array_equal(lit[::-1], PUBLISHED[f"class{k}_image"])  # saved flipped top to bottom
    assert (op.fill_rate(lit) > THRESHOLD) == bool(PUBLISHED[f"class{k}_accepted"])


def test_the_device_replay_lands_on_the_published_pixels_and_patch_centres():
    k = CLASSES[0]
    c, _ = case(k)
    params = torch.from_numpy(PUBLISHED[f"case{c}_params"])
    noise = torch.from_numpy(PUBLISHED[f"class{k}_noise"])[None]
    bank = PointBank(torch.zeros(1, ITERATION, 3), {"system": params[None, :, :6], "probs": params[None, :, 6],
                                                    "factors": noise}, {"onepfrac": {"canvas": CANVAS, "pad": PAD}}, 1)
    replay = OnePFracReplay(bank)
    pixels = replay.canvas_pixels(torch.tensor([0]))[0]
    assert torch.equal(pixels.to(torch.int64), torch.from_numpy(PUBLISHED[f"class{k}_pixels"].astype(np.int64)))
    ndc = replay.points(torch.tensor([0]))[0]
    # each point at the centre of its patch in the saved image: column x + 2, row canvas - 1 - (y + 2)
    col = torch.round((1 - ndc[:, 0]) * CANVAS / 2 - 0.5)
    row = torch.round((1 - ndc[:, 1]) * CANVAS / 2 - 0.5)
    lit = torch.from_numpy(PUBLISHED[f"class{k}_image"])
    published = torch.from_numpy(PUBLISHED[f"class{k}_pixels"].astype(np.int64))
    assert torch.equal(col.long(), published[:, 0] + 2) and torch.equal(row.long(), CANVAS - 1 - (published[:, 1] + 2))
    assert lit.any() and ndc[:, 2].abs().max() == 0


def test_categories_are_keyed_perturbations_of_one_fractal_and_the_filter_redraws(small_bank, monkeypatch):
    bank = small_bank
    assert bank.points.stride(0) == 0 and bank.params["system"].stride(0) == 0  # one fractal for all
    f = bank.params["factors"]
    assert f.shape == (5, 2, 6) and float(f.min()) >= 0.9 and float(f.max()) <= 1.1
    assert len(set(f[:, 0, 0].tolist())) == 5
    assert (bank.params["fill"] > 0.05).all() and bank.draws == int(bank.params["attempts"].sum())
    fewer = build_bank(family="onepfrac", num_classes=3, num_points=2000, seed=0, canvas=128, cache_dir=None)
    assert torch.equal(fewer.params["factors"], f[:3])  # category c draws from its own generator
    # a fill threshold few first draws meet: categories are drawn again, and the accepted ones meet it
    strict = build_bank(family="onepfrac", num_classes=4, num_points=3000, seed=0, canvas=128, fill_rate=0.18,
                        cache_dir=None)
    attempts = strict.params["attempts"]
    assert (strict.params["fill"] > 0.18).all() and int(attempts.max()) > 1
    i = int(attempts.argmax())  # its first draw, replayed from its generator, was refused by the published rule
    first, masks = op.draw_attempt(np.random.default_rng([0, i]), 2, 0.1, 3000, "random")
    rows, probs = strict.params["system"][0].numpy(), strict.params["probs"][0].numpy()
    pts = op.chaos_games((rows * first)[None], probs, *op.map_sequence(probs, 3000))[0]
    assert op.fill_rate(op.patch_image(fdb.pixel_coords(pts, 128, 6), masks, 128)) <= 0.18
    monkeypatch.setattr(op, "MAX_ATTEMPTS", 3)
    with pytest.raises(BankError, match="no draw in 3 filled more than bank.onepfrac.fill_rate=0.9"):
        build_bank(family="onepfrac", num_classes=1, num_points=300, seed=0, canvas=128, fill_rate=0.9,
                   cache_dir=None)


def test_a_saved_bank_holds_one_fractal_and_the_renderer_one_row(tmp_path, small_bank):
    path = save_bank(small_bank, tmp_path / "bank.pt")
    one = small_bank.points[0].numel() * 4
    assert path.stat().st_size < 2 * one  # 5 categories' points cost one set
    loaded = load_bank(path)  # its digest checked
    assert loaded.points.stride(0) == 0 and torch.equal(loaded.points, small_bank.points)
    # the digest reads the one row of an expanded tensor (never a C-row copy): it differs from a contiguous copy's
    args = (small_bank.settings, small_bank.draws)
    assert content_digest(*args, small_bank.points, small_bank.params) != content_digest(
        *args, small_bank.points.contiguous(), small_bank.params)
    cfg = load_config(None, ["bank.family=onepfrac", "renderer.share_colors=true", "renderer.share_radii=true"])
    renderer = PointRenderer(loaded, cfg.renderer)
    assert renderer.points.shape == (1, 2000, 3) and isinstance(renderer.instances, OnePFracReplay)


def test_frozen_export_equals_the_in_loop_render_and_categories_differ(tmp_path, small_bank):
    overrides = ["bank.family=onepfrac", "bank.num_classes=5", "bank.num_points=2000", "bank.onepfrac.canvas=128",
                 "renderer.image_size=32", "renderer.points_per_pixel=4", "renderer.radius_init=0.04",
                 "renderer.mode=frozen", f"output_dir={tmp_path / 'run'}", *FLAT]
    cfg = load_config(None, overrides)
    renderer = PointRenderer(small_bank, cfg.renderer)
    export(renderer, cfg, tmp_path / "data", 1, batch_size=5, progress=False)
    images = []
    for c in range(5):
        for v in range(1):
            png = read_image(str(tmp_path / "data" / image_path(c, v)))
            with torch.no_grad():
                loop = quantize(renderer(torch.tensor([c]), torch.tensor([v])))[0]
            assert torch.equal(png, loop)
        images.append(png)
    assert len({img.float().sum().item() for img in images}) == 5  # every category its own perturbation


@pytest.mark.parametrize("overrides, pattern", [
    (["renderer.augment.mix=0.2"], "'renderer.augment.mix': must be 0 with bank.family=onepfrac"),
    (["bank.onepfrac.delta=1.0"], "'bank.onepfrac.delta'"),
    (["bank.onepfrac.sigma=5.95"], "'bank.onepfrac.sigma'"),
    (["bank.onepfrac.canvas=12"], "'bank.onepfrac.canvas'"),
    (["bank.onepfrac.mask=none"], "'bank.onepfrac.mask'"),
])
def test_settings_refuse(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, ["bank.family=onepfrac", *overrides])


@pytest.mark.parametrize("name", ["onepfrac-cpu", "onepfrac-gpu"])
def test_the_delta_sweep_presets_load_one_config_per_delta(name, tmp_path):
    from tools.compare import PRESETS, arms_of, pretrain_config

    preset = PRESETS[name]
    arms = {k: a for k, a in arms_of(preset).items() if a.pretrain is not None}
    assert sorted(arms) == ["delta_0.01", "delta_0.05", "delta_0.1", "delta_0.2", "fixed_unsnapped", "learnt"]
    budgets = {"learnt": (0.05, 0.2), "fixed_unsnapped": (0.1, 0.1)}  # its control: the same drawing, m fixed
    for arm_name, arm in arms.items():
        cfg = pretrain_config(preset, arm.pretrain, 0, tmp_path / arm_name, arm.config)
        learnt = arm_name in budgets
        assert cfg.bank.family == "onepfrac" and cfg.bank.onepfrac.delta == (0.1 if learnt else
                                                                           float(arm_name.split("_")[1]))
        assert cfg.renderer.mode == ("adversarial" if learnt else "frozen")
        assert cfg.renderer.perturbation.budget == budgets.get(arm_name, (0.0, 0.0))
        assert not cfg.renderer.perturbation.tables and arm.config == arms["delta_0.1"].config
    if name == "onepfrac-gpu":
        assert (cfg.bank.num_classes, cfg.renderer.image_size, cfg.model.name, preset["dataset"]) == (
            1000, 224, "vit_tiny_patch16_224", "cifar100")


def test_the_map_limit_is_the_lockstep_games_table_width():
    """settings.py (torch-free) states the limit as a number; it must stay the published FractalDB port's."""
    assert op.MAX_MAPS == fdb.MAX_MAPS_EXCLUSIVE - 1


# --- The learnt perturbation (renderer.perturbation; OnePFracReplay's learnt mode) ---------------------------------
LEARNT = ["renderer.mode=adversarial", "renderer.perturbation.budget=[0.05,0.2]"]
TINY = dict(num_classes=5, num_points=400, canvas=64)  # the learnt tests' bank: a scan of 400 steps takes ms
SMALL = ["bank.family=onepfrac", "bank.num_classes=5", "bank.num_points=400", "bank.onepfrac.canvas=64",
         "renderer.image_size=32", "renderer.radius_init=0.04", "renderer.share_colors=true",
         "renderer.share_radii=true", *FLAT]


@pytest.fixture(scope="module")
def tiny_bank():
    return build_bank(family="onepfrac", seed=0, cache_dir=None, **TINY)


def learnt_renderer(bank, *overrides):
    return PointRenderer(bank, load_config(None, [*SMALL, *LEARNT, *overrides]).renderer)


def test_learnt_size_at_delta_is_the_banks_categories_without_the_pixel_snap(tiny_bank):
    replay = learnt_renderer(tiny_bank).instances
    ids = torch.arange(5)
    m = replay.magnitude()
    assert m.dtype == torch.float64 and torch.equal(m, torch.full((2, 6), 0.1, dtype=torch.float64))
    assert torch.equal(replay.learnt_factors(ids, m), tiny_bank.params["factors"])  # bit for bit at m = delta
    snapped = replay.points(ids)[..., :2].double()
    # the snap removed: each point within half a canvas pixel (1 / canvas in NDC) of its published patch centre
    assert (replay.continuous_points(ids, m) - snapped).abs().max() <= 1 / 64 + 1e-6
    assert list(OnePFracReplay(tiny_bank).parameters()) == []  # off: no parameter, the snapped points


@pytest.mark.parametrize("per", ["all", "parameter"])
def test_learnt_points_gradients_match_finite_differences_in_float64(tiny_bank, per):
    """Through the factors, the prefix scan of affine maps, the min-max rescale and the placement."""
    replay = learnt_renderer(tiny_bank, f"renderer.perturbation.per={per}").instances
    ids = torch.tensor([1, 3])
    weights = torch.randn(3, 2, 400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = torch.full((1,) if per == "all" else (2, 6), 0.1, dtype=torch.float64, requires_grad=True)

    def projected(m):
        xy = replay.continuous_points(ids, m.expand(2, 6))
        return (weights * xy).sum(dim=(1, 2, 3))  # three random projections: three backward passes, not 8,000

    assert torch.autograd.gradcheck(projected, (start,), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_one_adversarial_step_moves_the_size_up_the_loss_and_leaves_the_tables(tiny_bank):
    """The renderer's image gradient (positions through the compositor) agrees with a finite difference of the
    float32 render, and one step of mode adversarial moves m the way that gradient says: up the loss."""
    from dr_fdsl.engine import Batch
    from dr_fdsl.modes import MODES
    from dr_fdsl.objectives.base import ObjectiveOutput
    from tests.test_modes import Accelerator

    renderer = learnt_renderer(tiny_bank)
    ids, seeds = torch.tensor([0, 2]), torch.zeros(2, dtype=torch.long)
    weights = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits = renderer.instances.perturbation_logits

    def loss_at(logit):
        with torch.no_grad():
            logits.fill_(logit)
            return float((weights * renderer(ids, seeds)).sum())

    # m moves by 1e-5: the chaos game is strongly non-linear in m (the difference at 1e-3 is twice the derivative)
    h = 1e-5 / 0.15
    difference = (loss_at(h) - loss_at(-h)) / (2 * h)
    with torch.no_grad():
        logits.zero_()
    cfg = load_config(None, [*SMALL, *LEARNT, "renderer.lr=0.01"])
    mode = MODES.get("adversarial")(cfg, None, None)
    optimizer = mode.prepare(renderer, Accelerator())
    colors, radii = renderer.color_logits.clone(), renderer.radius_logits.clone()
    rendered = renderer.render(ids, seeds)

    def objective_loss(x):
        loss = (weights * x).sum()
        return ObjectiveOutput(loss, loss, {})

    _, total = mode.losses(Batch(rendered.images, ids, seeds, rendered.rows), objective_loss, None)
    total.backward()
    grad = -float(renderer.instances.perturbation_logits.grad.to_dense())  # reversed: minus dL/dp
    assert grad == pytest.approx(difference, rel=0.02) and abs(difference) > 1.0
    optimizer.step()
    renderer.project_()
    moved = renderer.table_statistics()["renderer/perturbation"] - 0.1
    assert moved * difference > 0 and abs(moved) == pytest.approx(0.01 * 0.15, rel=1e-3)  # Adam: lr of the budget
    assert torch.equal(renderer.color_logits, colors) and torch.equal(renderer.radius_logits, radii)
    assert renderer.color_logits.grad is None and renderer.radius_logits.grad is None


@pytest.mark.parametrize("per", ["all", "map"])
def test_the_learnt_size_stays_in_its_budget_and_keeps_its_gradient_there(tiny_bank, per):
    renderer = learnt_renderer(tiny_bank, f"renderer.perturbation.per={per}")
    logits = renderer.instances.perturbation_logits
    for push, bound in ((100.0, 0.2), (-100.0, 0.05)):
        with torch.no_grad():
            logits.fill_(push)
        renderer.project_()
        m = renderer.instances.magnitude()
        assert torch.equal(m, torch.full((2, 6), bound, dtype=torch.float64))
        stats = renderer.table_statistics()
        assert stats["renderer/perturbation"] == bound
        logits.grad = None
        m.sum().backward()  # straight through at the bound: the slope is the budget's span
        assert torch.allclose(logits.grad.to_dense(), torch.full_like(logits, 0.15 * 12 / logits.numel()))
    if per == "map":
        assert stats["renderer/perturbation_min"] == stats["renderer/perturbation_max"] == 0.05


def test_a_learnt_perturbation_is_refused_outside_its_family_and_mode():
    with pytest.raises(ConfigError, match=r"'renderer.perturbation.budget': learns the size .* only "
                                          r"bank.family=onepfrac has; got bank.family='ifs3d'"):
        load_config(None, LEARNT)
    for overrides, pattern in (
            (["renderer.perturbation.budget=[0.05,0.2]"], "is learnt by renderer.mode=adversarial .* got "
                                                          "renderer.mode=frozen"),
            (["renderer.mode=joint", "renderer.perturbation.budget=[0.05,0.2]"], "got renderer.mode=joint"),
            (["renderer.mode=adversarial", "renderer.perturbation.budget=[0.2,0.05]"], "need 0 <= low <= high < 1"),
            (["renderer.mode=adversarial", "renderer.perturbation.budget=[0.2,0.3]"],
             r"starts at bank.onepfrac.delta=0.1, which must be > 0 and inside the budget"),
            ([*LEARNT, "renderer.perturbation.per=layer"], "'renderer.perturbation.per'")):
        with pytest.raises(ConfigError, match=pattern):
            load_config(None, ["bank.family=onepfrac", *overrides])
