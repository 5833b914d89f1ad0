import csv
import json

import pytest
import torch
from torchvision.io import read_image

from dr_fdsl.bank import bank_from_config
from dr_fdsl.engine import build_run, evaluate, fit, resume, save_checkpoint, train_step
from dr_fdsl.errors import ConfigError, DatasetError
from dr_fdsl.manifest import digest_file
from dr_fdsl.render import PointRenderer
from dr_fdsl.static import StaticViews, export, image_path, quantize
from tests.conftest import tiny

VIEWS = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bank_dir):
    """A 4-category x 3-view dataset of the tiny config, and that config."""
    root = tmp_path_factory.mktemp("static")
    cfg = tiny(root, bank_dir, "renderer.augment.subsample=[0.5,1.0]", "renderer.color_init=palette")
    renderer = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
    counts = export(renderer, cfg, root / "data", VIEWS, batch_size=5, progress=False)
    assert counts["written"] == 4 * VIEWS
    return root / "data", cfg, renderer


def test_every_png_equals_the_in_loop_frozen_render(exported):
    root, _, renderer = exported
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * VIEWS and set(rows[0]) == {"path", "category", "view_seed", "sha256"}
    for row in rows:
        c, v = int(row["category"]), int(row["view_seed"])
        assert row["path"] == image_path(c, v)
        assert row["sha256"] == digest_file(root / row["path"])
        png = read_image(str(root / row["path"]))
        with torch.no_grad():
            loop = quantize(renderer(torch.tensor([c]), torch.tensor([v])))[0]
        assert torch.equal(png, loop), row["path"]
    info = json.loads((root / "dataset.json").read_text())
    assert info["views"] == VIEWS and info["bank"]["num_classes"] == 4 and info["image_size"] == 32


def test_export_resumes_and_refuses_other_settings(tmp_path, exported):
    _, cfg, renderer = exported
    out = tmp_path / "data"
    export(renderer, cfg, out, VIEWS, progress=False)
    before = (out / image_path(2, 1)).read_bytes()
    # An interrupted export: some images missing, a temporary file left behind, no manifest yet.
    (out / image_path(2, 1)).unlink()
    (out / image_path(3, 2)).unlink()
    (out / (image_path(3, 2) + ".tmp")).write_bytes(b"half a png")
    (out / "manifest.csv").unlink()
    with pytest.raises(DatasetError, match="incomplete export"):
        StaticViews(out)
    counts = export(renderer, cfg, out, VIEWS, progress=False)
    assert counts["written"] == 2 and counts["skipped"] == 4 * VIEWS - 2
    assert (out / image_path(2, 1)).read_bytes() == before
    assert len(StaticViews(out)) == 4 * VIEWS
    other = tiny(tmp_path, cfg.bank.cache_dir, "renderer.radius_init=0.03")
    with pytest.raises(DatasetError, match="other settings"):
        export(renderer, other, out, VIEWS, progress=False)
    with pytest.raises(DatasetError, match="other settings"):
        export(renderer, cfg, out, VIEWS + 1, progress=False)


def losses(run, steps):
    out = []
    while run.state.step < steps:
        out.append(float(train_step(run)["train/loss"]))
    return out


def assert_static_run_equals_in_loop(folder, bank_dir, same, data, views, steps, workers):
    """A static run from ``data`` and the in-loop run restricted to its ``views`` per category (8-bit, as exported)
    give the same losses over ``steps`` and the same evaluation; returns the static run."""
    in_loop = build_run(tiny(folder / "loop", bank_dir, *same, f"data.views_per_class={views}", "data.quantize=true"))
    a, a_eval = losses(in_loop, steps), evaluate(in_loop)
    static = build_run(tiny(folder / "static", bank_dir, *same, "data.source=static", f"data.path={data}",
                            f"data.workers={workers}"))
    b, b_eval = losses(static, steps), evaluate(static)
    assert a == b and len(set(a)) > 1
    assert a_eval == b_eval
    return static


def test_static_and_in_loop_frozen_runs_give_the_same_losses(tmp_path, bank_dir, exported):
    root, _, _ = exported
    same = ["renderer.augment.subsample=[0.5,1.0]", "renderer.color_init=palette", "renderer.mode=frozen",
            "image_aug.random_erasing=0.5"]
    # One after the other: augmentations draw from the process-wide generators each trainer seeds.
    assert_static_run_equals_in_loop(tmp_path, bank_dir, same, root, VIEWS, steps=4, workers=2)


def test_a_resumed_static_run_reads_on_from_the_checkpoint(tmp_path, bank_dir, exported):
    """The loader's iterator is opened at build and again at the restored stream position by resume: a static run
    resumed after 2 steps ends with the weights of the same run done in one go."""
    root, _, _ = exported
    args = ["renderer.augment.subsample=[0.5,1.0]", "renderer.color_init=palette", "data.source=static",
            f"data.path={root}", "image_aug.random_erasing=0.5", "train.eval_every=100", "train.image_every=100"]
    straight = build_run(tiny(tmp_path / "a", bank_dir, *args))
    fit(straight)
    interrupted = build_run(tiny(tmp_path / "b", bank_dir, *args))
    assert interrupted.state.batches is not None  # opened at build, at the stream's start
    while interrupted.state.step < 2:
        train_step(interrupted)
    save_checkpoint(interrupted)
    resumed = build_run(tiny(tmp_path / "b", bank_dir, *args), resume="latest")
    resume(resumed, "latest")
    fit(resumed)
    for a, b in zip(straight.objective.model.parameters(), resumed.objective.model.parameters()):
        assert torch.equal(a, b)


def test_static_source_bad_input(tmp_path, bank_dir, exported):
    root, _, _ = exported
    with pytest.raises(ConfigError, match="needs renderer.mode=frozen"):
        tiny(tmp_path, bank_dir, "data.source=static", f"data.path={root}", "renderer.mode=joint")
    with pytest.raises(ConfigError, match="'data.path': must name a dataset folder"):
        tiny(tmp_path, bank_dir, "data.source=static", "renderer.mode=frozen")
    with pytest.raises(DatasetError, match="not a dataset folder"):
        build_run(tiny(tmp_path, bank_dir, "data.source=static", f"data.path={tmp_path}", "renderer.mode=frozen"))
    with pytest.raises(ConfigError, match=r"exported with other settings than this config \(renderer\.[a-z_.]+: "
                                          r"dataset "):
        build_run(tiny(tmp_path, bank_dir, "data.source=static", f"data.path={root}", "renderer.mode=frozen"))


@pytest.mark.parametrize("objective", ["classify", "sit"])
def test_grouped_draws_agree_between_static_and_in_loop_runs(tmp_path_factory, bank_dir, objective):
    """data.views_per_category and data.repeated_aug: the static loader follows the grouped stream, so a static
    run and the in-loop run restricted to its views give the same losses; under sit the corruptions, drawn from
    each image's key and copy, agree too. (Two views per category, euler views: sit's rotation can be learnt.)"""
    root = tmp_path_factory.mktemp(f"grouped_{objective}")
    same = ["renderer.view.rotation=euler", "renderer.view.roll=[0,0]", "renderer.mode=frozen"]
    if objective == "sit":
        same += ["train.objective=sit", "data.views_per_category=2", "renderer.view.elevation=[-45,45]"]
    else:  # 2 categories x 2 view seeds x 2 copies per micro-batch of 8
        same += ["data.views_per_category=2", "data.repeated_aug=2", "image_aug.random_erasing=0.5"]
    cfg = tiny(root, bank_dir, *same)
    export(PointRenderer(bank_from_config(cfg.bank), cfg.renderer), cfg, root / "data", 2, progress=False)
    static = assert_static_run_equals_in_loop(root, bank_dir, same, root / "data", 2, steps=3, workers=1)
    group = 4 if objective == "classify" else 2  # adjacent images of one category
    ids = static.order.batch(0, 8)[0].view(-1, group)
    assert (ids == ids[:, :1]).all()
    if objective == "classify":  # more view seeds per category than the dataset holds: refused when it is read
        with pytest.raises(ConfigError, match="'data.views_per_category': 3 different view seeds"):
            build_run(tiny(root / "three", bank_dir, *same[:3], "data.views_per_category=3", "train.batch_size=6",
                           "data.source=static", f"data.path={root / 'data'}"))


FLAT = ["renderer.view.rotation=none", "renderer.view.projection=orthographic", "renderer.view.ortho_scale=[1,1]"]


@pytest.mark.parametrize("family", [["bank.family=ofdb", "bank.seed=42"], ["bank.family=fractaldb", *FLAT],
                                    ["bank.family=visualatom", "renderer.color_init=bank", *FLAT],
                                    ["bank.family=svd2d", "renderer.color_init=bank", *FLAT]],
                         ids=["ofdb", "fractaldb", "visualatom", "svd2d"])
def test_every_family_exports_the_in_loop_frozen_renders(tmp_path, bank_dir, family):
    """The static dataset of any family holds exactly the frozen renderer's images (the proof above, per family)."""
    cfg = tiny(tmp_path, bank_dir, "bank.num_classes=2", *family)
    renderer = PointRenderer(bank_from_config(cfg.bank), cfg.renderer)
    assert export(renderer, cfg, tmp_path / "data", 2, batch_size=3, progress=False)["written"] == 4
    for c in range(2):
        for v in range(2):
            with torch.no_grad():
                loop = quantize(renderer(torch.tensor([c]), torch.tensor([v])))[0]
            assert loop.float().std() > 0  # a drawing, not a blank image
            assert torch.equal(read_image(str(tmp_path / "data" / image_path(c, v))), loop)
