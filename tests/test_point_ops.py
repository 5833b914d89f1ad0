"""The point operations as one pipeline (render/point_ops.py), the one registry type for every kind of part, and a
renderer that names no family."""

import dataclasses
import inspect
import io
import re
import tokenize
from pathlib import Path

import pytest
import torch

from dr_fdsl.bank import PointBank, build_bank
from dr_fdsl.errors import ConfigError
from dr_fdsl.families import FAMILIES
from dr_fdsl.families.svd2d.instances import MapJitterReplay
from dr_fdsl.objectives import OBJECTIVES
from dr_fdsl.registry import Registry
from dr_fdsl.render import PointRenderer, point_ops, renderer
from dr_fdsl.render.instances import build_instances
from dr_fdsl.render.point_ops import POINT_OPS, Points, SceneContext, pipeline
from dr_fdsl.render.rasterizers import RASTERIZERS
from dr_fdsl.render.settings import AugmentConfig, RendererConfig, ViewConfig, validate_renderer
from dr_fdsl.render.streams import Stream

DOCUMENTED = ("subsample", "instances", "corrupt", "pointwolf", "scale", "shift", "jitter", "view", "camera_shift",
              "project", "window", "depth_hue", "random_colors", "point_size")
CAMERA = {"view", "project"}  # always run: every image has a camera
# Every operation on, each at a setting that moves something (mix is part of the gather, not an operation).
ALL_ON = AugmentConfig(subsample=(0.4, 0.8), drop_local=30, add_global=10, add_local=20, pointwolf=True,
                       scale=(0.6, 1.3), shift=0.2, jitter=0.02, depth_hue=True, radius_scale=(0.5, 1.5),
                       window_shift=0.1, window_scale=(0.8, 1.2), dihedral=True, random_colors="point")
ROOT = Path(__file__).parent.parent


def tiny_bank(num_classes=4, num_points=200):
    points = torch.rand(num_classes, num_points, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return PointBank(points, {}, {"tiny": True}, 0)


def make(aug=None, bank=None):
    cfg = RendererConfig(image_size=24, points_per_pixel=4, radius_init=0.05, augment=aug or AugmentConfig())
    return PointRenderer(bank if bank is not None else tiny_bank(), cfg)


def scene_without(monkeypatch, r, skip):
    """The scene (points, colours, radii) with operation ``skip`` left out of the pipeline."""
    monkeypatch.setattr(point_ops, "pipeline", lambda: tuple(n for n in DOCUMENTED if n != skip))
    scene, _ = r.scene(torch.tensor([0, 1, 3]), torch.tensor([5, 6, 7]))
    monkeypatch.setattr(point_ops, "pipeline", lambda: DOCUMENTED)
    return scene


def test_the_pipeline_runs_the_documented_order_and_the_docs_list_it():
    assert pipeline() == DOCUMENTED and sorted(POINT_OPS) == sorted(DOCUMENTED)
    listed = ", ".join(f"`{n}`" for n in pipeline())
    for doc in ("docs/architecture.md", "docs/rendering.md"):
        assert listed in re.sub(r"\s+", " ", (ROOT / doc).read_text()), doc


@pytest.mark.parametrize("name, bad, key", [
    ("subsample", {"subsample": (0.0, 1.0)}, "subsample"), ("subsample", {"subsample_prob": 1.5}, "subsample_prob"),
    ("instances", {"map_jitter": (0.0, 1.0)}, "map_jitter"), ("corrupt", {"add_global": -1}, "add_global"),
    ("pointwolf", {"pointwolf_anchors": 0}, "pointwolf_anchors"), ("scale", {"scale_shift_prob": 2.0},
                                                                    "scale_shift_prob"),
    ("shift", {"shift": -0.1}, "shift"), ("jitter", {"jitter": -0.1}, "jitter"),
    ("view", {"fov": (10.0, 190.0)}, "renderer.view.fov"), ("window", {"window_shift": -1.0}, "window_shift"),
    ("depth_hue", {"depth_hue_value": (0.5, 2.0)}, "depth_hue_value"),
    ("point_size", {"radius_scale": (0.0, 1.0)}, "radius_scale"),
])
def test_each_operation_checks_its_own_keys(name, bad, key):
    """An operation's ``validate`` refuses a bad value of a key it owns, naming that key; ``validate_renderer``
    (load_config, ``PointRenderer``) runs it."""
    op = POINT_OPS[name]
    assert key in op.keys or key.startswith("renderer.view.") and op.keys == ("renderer.view.*",), (name, key)
    section = "view" if key.startswith("renderer.view.") else "augment"
    r = RendererConfig(**{section: (ViewConfig if section == "view" else AugmentConfig)(**bad)})
    dotted = key if section == "view" else f"renderer.augment.{key}"
    for check in (op.validate, validate_renderer):
        with pytest.raises(ConfigError, match=rf"^config key '{re.escape(dotted)}': "):
            check(r)
    op.validate(RendererConfig())  # the defaults pass


def test_every_operation_has_the_one_signature():
    for name, op in POINT_OPS.items():
        sig = inspect.signature(op.apply)
        assert list(sig.parameters) == ["points", "ctx"], name
        assert [p.annotation for p in sig.parameters.values()] == ["Points", "SceneContext"], name
        assert sig.return_annotation == "Points", name


def test_each_operation_names_real_keys_and_owns_its_streams():
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    view_fields = {f.name for f in dataclasses.fields(ViewConfig)}
    for name, op in POINT_OPS.items():
        assert op.keys, name
        for key in op.keys:
            if key.startswith("renderer.view."):
                assert key[len("renderer.view."):] in view_fields | {"*"}, (name, key)
            elif not key.startswith("bank."):
                assert key.rstrip("*").rstrip("_") in fields or any(f.startswith(key.rstrip("*")) for f in fields), \
                    (name, key)
    owners: dict[Stream, set[str]] = {}
    for name, op in POINT_OPS.items():
        for stream in op.streams:
            owners.setdefault(stream, set()).add(name)
    shared = {s: o for s, o in owners.items() if len(o) > 1}
    # One draw made at one of two places (renderer.augment.shift_frame), and the scale's coin that the shift shares.
    assert shared == {Stream.SHIFT: {"shift", "camera_shift"},
                      Stream.SCALE_SHIFT_GATE: {"scale", "shift", "camera_shift"}}


def test_each_operation_left_out_at_its_defaults_changes_nothing(monkeypatch):
    r = make()
    full = scene_without(monkeypatch, r, None)
    for name in set(DOCUMENTED) - CAMERA:
        scene = scene_without(monkeypatch, r, name)
        for got, want in zip(scene, full):
            assert torch.equal(got, want), name


def test_each_operation_does_something_when_on(monkeypatch):
    """With every operation on, leaving any one out changes the scene: none is dead code in the pipeline."""
    for frame, ops in (("camera", set(DOCUMENTED) - CAMERA - {"instances", "shift"}), ("object", {"shift"})):
        r = make(dataclasses.replace(ALL_ON, shift_frame=frame))
        full = scene_without(monkeypatch, r, None)
        for name in ops:
            scene = scene_without(monkeypatch, r, name)
            assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(scene, full)), name
    svd = build_bank(family="svd2d", num_classes=4, num_points=200, seed=3, cache_dir=None)
    r = make(AugmentConfig(map_jitter=(0.8, 1.1)), svd)
    assert isinstance(r.instances, MapJitterReplay)
    jittered, plain = (scene_without(monkeypatch, r, skip).points for skip in (None, "instances"))
    assert not torch.equal(jittered, plain)


def test_an_operation_reads_its_points_and_context_only():
    """Called alone on hand-made points, an operation gives what it gives inside the renderer's pipeline."""
    r = make(ALL_ON)
    ids, seeds = torch.tensor([0, 2]), torch.tensor([1, 2])
    keys = renderer.rnd.image_keys(ids, seeds)
    points, mixed, _ = r._gather(ids, keys)
    ctx = SceneContext(r.cfg, ids, keys, mixed, r.instances)
    once = point_ops.run_point_ops(points, ctx)
    by_hand = points
    for name in DOCUMENTED:
        by_hand = POINT_OPS[name].apply(by_hand, ctx)
    assert isinstance(once, Points) and all(torch.equal(a, b) for a, b in zip(once[:4], by_hand[:4]))


def test_the_renderer_names_no_family():
    """No family's name as a name, a module path or a whole string in the code of any module of render/ (a branch
    such as ``family == "svd2d"``, an import of a family's package); a message may still suggest one."""
    for path in sorted(Path(renderer.__file__).parent.glob("*.py")):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        named = {t.string.strip("'\"") for t in tokens if t.type in (tokenize.NAME, tokenize.STRING)}
        assert not named & set(FAMILIES), path.name


def test_map_jitter_is_svd2d_s_drawer_and_refused_elsewhere():
    with pytest.raises(ConfigError, match=r"^config key 'renderer.augment.map_jitter': needs a bank of family svd2d"):
        make(AugmentConfig(map_jitter=(0.8, 1.1)))
    svd = build_bank(family="svd2d", num_classes=3, num_points=200, seed=3, cache_dir=None)
    stale = PointBank(svd.points, {k: v for k, v in svd.params.items() if k != "maps"}, svd.settings, svd.num_points)
    with pytest.raises(ConfigError, match=r"this svd2d bank lacks \['maps'\].*--rebuild"):
        build_instances(stale, RendererConfig(augment=AugmentConfig(map_jitter=(0.8, 1.1))))
    assert build_instances(svd, RendererConfig()) is None


def test_one_registry_type_with_did_you_mean():
    for parts in (FAMILIES, OBJECTIVES, RASTERIZERS, POINT_OPS):
        assert isinstance(parts, Registry)
    with pytest.raises(ConfigError, match=r"^config key 'train.objective': unknown objective 'clasify' "
                                          r"\(did you mean 'classify'\?\); valid: classify, classify\+mim, mim, "):
        OBJECTIVES.get("clasify")
    with pytest.raises(ConfigError, match=r"^config key 'renderer.raster_backend': unknown rasteriser 'sorted' "
                                          r"\(did you mean 'sort'\?\); valid: auto, pytorch3d, sort$"):
        RASTERIZERS.get("sorted")


def test_each_family_s_registration_names_its_own_drawer():
    """A family's per-image drawer is in its own package, named by its ``Family.drawer`` (no registry in render/)."""
    drawers = {name: family.drawer for name, family in FAMILIES.items() if family.drawer}
    assert sorted(drawers) == ["fractaldb", "ofdb", "onepfrac", "svd2d", "visualatom"]
    for name, path in drawers.items():
        assert path == f"dr_fdsl.families.{name}.instances:build" and callable(FAMILIES[name].build_drawer)
    assert FAMILIES["ifs3d"].build_drawer is None
