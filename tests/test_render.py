import dataclasses
import math

import pytest
import torch

from dr_fdsl.bank import PointBank
from dr_fdsl.config import AugmentConfig, RendererConfig, ViewConfig
from dr_fdsl.errors import ConfigError
from dr_fdsl.render import PointRenderer, Scene, fragment_weights, render_grid, render_scene, save_grid
from dr_fdsl.render.composite import composite, draw_fragments
from dr_fdsl.render.raster_pytorch3d import bin_occupancy_bound, rasterize
from dr_fdsl.render.raster_sort import rasterize_sorted_list
from dr_fdsl.render.structures import OFFSCREEN, FragmentList, Fragments
from tests.reference_render import pixel_centres, reference_render

SIZE = 32


def random_scene(b=3, n=40, seed=0, noise_background=False):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(b, n, 3, generator=g) * 2.2 - 1.1  # some points fall outside the image
    points[..., 2] = torch.rand(b, n, generator=g) * 3 + 0.1  # distinct depths in front of the camera
    colors = torch.rand(b, n, 3, generator=g)
    radii = torch.rand(b, n, generator=g) * 0.25 + 0.05
    size = SIZE if noise_background else 1
    background = torch.rand(b, 3, size, size, generator=g)
    return Scene(points, colors, radii, background)


def with_grad(scene):
    return scene._replace(colors=scene.colors.clone().requires_grad_(),
                          radii=scene.radii.clone().requires_grad_())


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
@pytest.mark.parametrize("k, seed, noise", [(4, 0, False), (8, 1, True), (2, 2, False)])
def test_pytorch3d_path_matches_reference_images_and_gradients(compositor, k, seed, noise):
    scene = with_grad(random_scene(seed=seed, noise_background=noise))
    fast = render_scene(scene, SIZE, k, compositor)
    ref_scene = with_grad(scene._replace(colors=scene.colors.detach(), radii=scene.radii.detach()))
    ref = reference_render(*ref_scene, SIZE, k, compositor)
    assert (fast - ref).abs().max() < 1e-5
    assert fast.min() >= 0 and fast.max() <= 1
    probe = torch.rand(fast.shape, generator=torch.Generator().manual_seed(9))
    (fast * probe).sum().backward()
    (ref * probe).sum().backward()
    assert scene.radii.grad.abs().max() > 0 and scene.colors.grad.abs().max() > 0
    torch.testing.assert_close(scene.colors.grad, ref_scene.colors.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scene.radii.grad, ref_scene.radii.grad, atol=1e-4, rtol=1e-3)


def test_reference_gradients_are_true_derivatives():
    """The reference's autograd, in float64, against finite differences (torch's gradcheck)."""
    scene = random_scene(b=1, n=12, seed=3)
    points, colors, radii, bg = (t.double() for t in scene)

    def image(colors, radii):
        return reference_render(points, colors, radii, bg, 12, 12)

    assert torch.autograd.gradcheck(image, (colors.requires_grad_(), radii.requires_grad_()), eps=1e-6, atol=1e-5)


def test_fast_gradients_match_finite_differences():
    # K = N: every covering point is kept, so the image is continuous in the radii (w = 0 at a disk's edge).
    scene = with_grad(random_scene(b=2, n=10, seed=4))
    probe = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    (render_scene(scene, SIZE, 10) * probe).sum().backward()

    def loss(colors, radii):
        return float((render_scene(Scene(scene.points, colors, radii, scene.background), SIZE, 10) * probe).sum())

    for b, n in [(0, 0), (0, 3), (1, 5), (1, 9)]:
        eps = 1e-3
        r_hi, r_lo = scene.radii.detach().clone(), scene.radii.detach().clone()
        r_hi[b, n] += eps
        r_lo[b, n] -= eps
        numeric = (loss(scene.colors.detach(), r_hi) - loss(scene.colors.detach(), r_lo)) / (2 * eps)
        assert numeric == pytest.approx(float(scene.radii.grad[b, n]), rel=2e-2, abs=5e-3)
        c_hi, c_lo = scene.colors.detach().clone(), scene.colors.detach().clone()
        c_hi[b, n, 1] += eps
        c_lo[b, n, 1] -= eps
        numeric = (loss(c_hi, scene.radii.detach()) - loss(c_lo, scene.radii.detach())) / (2 * eps)
        assert numeric == pytest.approx(float(scene.colors.grad[b, n, 1]), rel=2e-2, abs=5e-3)


def test_empty_slots_send_no_gradient_to_point_zero():
    scene = with_grad(random_scene(b=1, n=5, seed=5))
    points = scene.points.clone()
    points[0, 0, :2] = OFFSCREEN  # point 0 covers nothing: every -1 slot must leave it alone
    fragments = rasterize(points, scene.radii, SIZE, 4)
    assert (fragments.idx < 0).any()
    fragment_weights(fragments, scene.radii).sum().backward()
    assert scene.radii.grad[0, 0] == 0 and scene.radii.grad[0, 1:].abs().sum() > 0


def test_one_point_batch_of_one_and_nothing_in_view():
    bg = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    one = Scene(torch.tensor([[[0.0, 0.0, 1.0]]]), torch.ones(1, 1, 3), torch.tensor([[0.3]]), bg)
    image = render_scene(one, SIZE, 8)
    torch.testing.assert_close(image, reference_render(*one, SIZE, 8), atol=1e-6, rtol=0)
    xs, ys = pixel_centres(SIZE)
    inside = (xs**2 + ys**2 < 0.09).view(SIZE, SIZE)
    assert (image[0, :, ~inside] == bg.view(3, 1)).all()  # uncovered pixels are exactly the background
    nothing = one._replace(points=torch.tensor([[[OFFSCREEN, OFFSCREEN, 1.0]]]))
    assert torch.equal(render_scene(nothing, SIZE, 8), bg.expand(1, 3, SIZE, SIZE))
    behind = one._replace(points=torch.tensor([[[0.0, 0.0, -1.0]]]))
    assert torch.equal(render_scene(behind, SIZE, 8), bg.expand(1, 3, SIZE, SIZE))


def test_kernels_are_float32_only():
    scene = random_scene()
    with pytest.raises(TypeError, match="float32 only"):
        rasterize(scene.points.double(), scene.radii, SIZE, 4)


def test_bin_occupancy_bound_counts_every_overlap():
    """Against a brute-force count of padded footprints per 8x8-pixel bin, pixel by pixel."""
    scene = random_scene(b=2, n=60, seed=6)
    bound = bin_occupancy_bound(scene.points, scene.radii, SIZE, 8)
    xs, ys = pixel_centres(SIZE)
    pixel = 2 / SIZE
    best = 0
    for b in range(2):
        p, r = scene.points[b], scene.radii[b] + pixel  # footprint padded by one pixel
        near = ((xs[:, None] - p[:, 0]).abs() <= r + pixel / 2) & ((ys[:, None] - p[:, 1]).abs() <= r + pixel / 2)
        near = near.view(SIZE // 8, 8, SIZE // 8, 8, -1).any(dim=(1, 3))
        best = max(best, int(near.sum(-1).max()))
    assert bound >= best and bound <= best + 6  # an upper bound, and a tight one


# ------------------------------------------------------------------------------------------------------------
# The module
# ------------------------------------------------------------------------------------------------------------


def tiny_bank(num_classes=4, num_points=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(num_classes, num_points, 3, generator=g) * 2 - 1
    return PointBank(points, {}, {"tiny": True}, 0)


def cfg(**kw):
    base = dict(image_size=SIZE, points_per_pixel=4, radius_init=0.04)
    return RendererConfig(**{**base, **kw})


ALL_AUGMENTATIONS = AugmentConfig(scale=(0.7, 1.2), shift=0.2, subsample=(0.3, 0.9), jitter=0.02, pointwolf=True,
                                  mix=0.2)


def test_default_construction_and_contract(small_bank):
    renderer = PointRenderer(small_bank)
    assert renderer.cfg == RendererConfig() and renderer.image_size == 224
    assert renderer.color_logits.shape == (6, 1800) and renderer.radius_logits.shape == (6, 600)
    assert not any(p.requires_grad for p in renderer.parameters())  # default mode: frozen
    small = PointRenderer(small_bank, cfg())
    images = small(torch.tensor([0, 5]), torch.tensor([1, 2]))
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9  # white points on black
    assert "points" not in small.state_dict()  # rebuilt from the bank, never checkpointed


@pytest.mark.parametrize("augment", [AugmentConfig(), ALL_AUGMENTATIONS])
@pytest.mark.parametrize("background", ["color", "random_color", "noise"])
def test_frozen_images_are_reproducible_and_batch_independent(augment, background):
    renderer = PointRenderer(tiny_bank(), cfg(augment=augment, background=background, color_init="random"))
    ids, seeds = torch.tensor([0, 1, 3, 1]), torch.tensor([5, 5, 9, 123456789012])
    batch = renderer(ids, seeds)
    assert torch.equal(batch, renderer(ids, seeds))
    for i in range(4):  # each alone, and in another order
        assert torch.equal(renderer(ids[i:i + 1], seeds[i:i + 1])[0], batch[i])
    assert torch.equal(renderer(ids.flip(0), seeds.flip(0)), batch.flip(0))
    assert not torch.equal(batch[0], batch[1])  # another category, same seed
    assert not torch.equal(batch[1], renderer(ids[1:2], seeds[1:2] + 1)[0])  # same category, another seed


def test_each_augmentation_switches_alone():
    renderer = PointRenderer(tiny_bank(), cfg())
    ids, seeds = torch.tensor([0, 2]), torch.tensor([3, 4])
    plain = renderer.scene(ids, seeds)[0].points
    for name, value in [("scale", (0.5, 0.8)), ("shift", 0.3), ("subsample", (0.2, 0.5)), ("jitter", 0.05),
                        ("pointwolf", True), ("mix", 0.5)]:
        one = PointRenderer(tiny_bank(), cfg(augment=AugmentConfig(**{name: value})))
        assert not torch.equal(one.scene(ids, seeds)[0].points, plain), name
    sub = PointRenderer(tiny_bank(), cfg(augment=AugmentConfig(subsample=(0.25, 0.25))))
    kept = (sub.scene(ids, seeds)[0].points[..., 0] != OFFSCREEN).float().mean()
    assert 0.18 < kept < 0.32


def test_mixing_takes_points_and_colours_from_another_category():
    bank = tiny_bank(num_classes=3)
    renderer = PointRenderer(bank, cfg(augment=AugmentConfig(mix=0.3), color_init="palette", palette_size=1))
    scene, _ = renderer.scene(torch.tensor([1]), torch.tensor([7]))
    own = (scene.colors[0] - renderer.colors()[1]).abs().sum(-1) < 1e-6
    assert 0.55 < own.float().mean() < 0.85  # ~70% own colour, the rest one other category's


def by_hand(p, rotation, distance, focal, orthographic):
    """NDC of cloud points ``p (N, 3)`` seen through ``x_cam = R p``, the camera ``distance`` away."""
    cam = p.double() @ rotation.T.double()
    depth = cam[:, 2] + distance
    xy = cam[:, :2] * focal if orthographic else cam[:, :2] * focal / depth[:, None]
    return torch.cat([xy, depth[:, None]], 1).float()


@pytest.mark.parametrize("view, rotation, distance, focal", [
    # Azimuth 90 degrees about y: (x, y, z) -> (z, y, -x).
    (ViewConfig(rotation="euler", azimuth=(90, 90), elevation=(0, 0), distance=(3.0, 3.0), fov=(60, 60)),
     [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], 3.0, 1 / math.tan(math.radians(30))),
    # Elevation 90 about x: (x, y, z) -> (x, -z, y); orthographic, 0.7 NDC units per cloud unit.
    (ViewConfig(rotation="euler", azimuth=(0, 0), elevation=(90, 90), projection="orthographic",
                distance=(2.0, 2.0), ortho_scale=(0.7, 0.7)), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], 2.0, 0.7),
    # Roll 180 about the optical axis: (x, y, z) -> (-x, -y, z).
    (ViewConfig(rotation="euler", azimuth=(0, 0), elevation=(0, 0), roll=(180, 180), distance=(4.0, 4.0),
                fov=(90, 90)), [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], 4.0, 1.0),
])
def test_view_options_project_as_computed_by_hand(view, rotation, distance, focal):
    bank = tiny_bank(num_classes=1, num_points=7)
    ndc = PointRenderer(bank, cfg(view=view)).scene(torch.tensor([0]), torch.tensor([3]))[0].points[0]
    expected = by_hand(bank.points[0], torch.tensor(rotation, dtype=torch.float64), distance, focal,
                       view.projection == "orthographic")
    torch.testing.assert_close(ndc, expected, atol=2e-6, rtol=1e-5)


def test_view_ranges_are_drawn_inside_them_and_vary():
    from dr_fdsl.render.keyed_random import image_keys
    from dr_fdsl.render.views import sample_views

    view = ViewConfig(rotation="euler", azimuth=(0, 90), roll=(-10, 10), distance=(2.5, 4.0), fov=(30, 60))
    views = sample_views(image_keys(torch.zeros(500, dtype=torch.long), torch.arange(500)), view)
    fov = torch.rad2deg(2 * torch.atan(1 / views.focal))
    assert 2.5 <= views.distance.min() < 2.6 and 3.9 < views.distance.max() < 4.0
    assert 30 <= fov.min() < 31 and 59 < fov.max() <= 60
    det = torch.linalg.det(views.rotation)
    torch.testing.assert_close(det, torch.ones(500))


def test_rotation_none_projects_by_hand():
    bank = tiny_bank(num_classes=1, num_points=5)
    renderer = PointRenderer(bank, cfg(view=ViewConfig(rotation="none", distance=(3.0, 3.0), fov=(90.0, 90.0))))
    ndc = renderer.scene(torch.tensor([0]), torch.tensor([0]))[0].points[0]
    p = bank.points[0]
    torch.testing.assert_close(ndc[:, :2], p[:, :2] / (p[:, 2:] + 3.0))  # focal 1 at 90 degrees
    torch.testing.assert_close(ndc[:, 2], p[:, 2] + 3.0)


@pytest.mark.parametrize("init", ["white", "grey", "random", "palette"])
def test_initialisation_and_bounds(init):
    renderer = PointRenderer(tiny_bank(), cfg(color_init=init, mode="joint", radius_min=0.01, radius_max=0.05,
                                              color_param="squash", radius_param="squash"))  # residual: test_learnt
    colors = renderer.colors()
    assert colors.shape == (4, 300, 3) and colors.min() > 0 and colors.max() < 1
    if init == "white":
        assert (colors * 255).round().min() == 255
    if init == "palette":
        assert len(torch.unique(colors[0].reshape(-1, 3), dim=0)) <= 4
    torch.testing.assert_close(renderer.radii(), torch.full((4, 300), 0.04))
    with torch.no_grad():  # the parameterisation keeps any value in range
        renderer.radius_logits.fill_(1e4)
        renderer.color_logits.fill_(-1e4)
    assert renderer.radii().max() <= 0.05 and renderer.colors().min() >= 0
    with torch.no_grad():
        renderer.radius_logits.fill_(-1e4)
    assert renderer.radii().min() >= 0.01


@pytest.mark.parametrize("r", [(0.01, 0.01, 0.05), (0.05, 0.01, 0.05), (0.03, 0.03, 0.03)])
def test_radius_at_its_bounds(r):
    init, lo, hi = r
    renderer = PointRenderer(tiny_bank(), cfg(radius_init=init, radius_min=lo, radius_max=hi, mode="joint"))
    assert renderer.radii().min() >= lo - 1e-7 and renderer.radii().max() <= hi + 1e-7
    images = renderer(torch.tensor([0, 1]), torch.tensor([0, 0]))
    images.mean().backward()
    assert all(torch.isfinite(p.grad.coalesce().values()).all() for p in renderer.parameters())


def test_shared_tables_and_joint_gradients():
    shared = PointRenderer(tiny_bank(), cfg(share_colors=True, share_radii=True, mode="joint"))
    assert shared.color_logits.shape == (1, 900) and shared.radius_logits.shape == (1, 300)
    shared(torch.tensor([0, 3]), torch.tensor([0, 1])).mean().backward()
    assert shared.color_logits.grad.to_dense().abs().sum() > 0
    per_class = PointRenderer(tiny_bank(), cfg(mode="joint", color_init="grey"))
    per_class(torch.tensor([2]), torch.tensor([0])).mean().backward()
    for table in (per_class.color_logits, per_class.radius_logits):
        grad = table.grad.coalesce()
        assert grad.is_sparse and grad.indices()[0].tolist() == [2]  # only the rendered category's row
        assert grad.values().abs().sum() > 0


def test_gradients_touch_only_the_drawn_and_mixed_in_rows():
    renderer = PointRenderer(tiny_bank(num_classes=6), cfg(mode="joint", augment=AugmentConfig(mix=0.3)))
    images, rows = renderer.render(torch.tensor([1, 4]), torch.tensor([0, 0]))
    images.mean().backward()
    rows = rows.tolist()
    assert 1 in rows and 4 in rows and 2 <= len(rows) <= 4  # own categories plus one mixed-in each
    assert renderer.color_logits.grad.coalesce().indices()[0].tolist() == rows


@pytest.mark.parametrize("key, value, pattern", [
    ("radius_init", 0.5, "renderer.radius_init"),
    ("points_per_pixel", 0, "renderer.points_per_pixel"),
    ("augment", AugmentConfig(subsample=(0.0, 1.0)), "renderer.augment.subsample"),
    ("augment", AugmentConfig(mix=1.0), "renderer.augment.mix"),
    ("view", ViewConfig(fov=(10.0, 190.0)), "renderer.view.fov"),
    ("view", ViewConfig(distance=(3.0, 2.0)), "renderer.view.distance"),
])
def test_bad_settings_name_the_key(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        PointRenderer(tiny_bank(), dataclasses.replace(cfg(), **{key: value}))


def test_bad_inputs():
    renderer = PointRenderer(tiny_bank(), cfg())
    with pytest.raises(ValueError, match=r"class_ids must lie in \[0, 4\)"):
        renderer(torch.tensor([4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="must both be"):
        renderer(torch.tensor([0, 1]), torch.tensor([0]))


def test_grid_png(tmp_path):
    renderer = PointRenderer(tiny_bank(), cfg())
    grid = render_grid(renderer, torch.arange(4), torch.zeros(4, dtype=torch.long), nrow=2)
    assert grid.shape == (3, 2 * SIZE + 6, 2 * SIZE + 6)
    path = save_grid(grid, tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------------------
# The sort backend
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, seed", [(1, 0), (4, 1), (8, 2), (30, 3)])
def test_sort_backend_gives_pytorch3d_fragments(k, seed):
    from dr_fdsl.render.raster_sort import rasterize_sorted

    scene = random_scene(b=3, n=80, seed=seed)  # points partly outside the image, radii up to 0.3
    points = scene.points.clone()
    points[0, :5, 2] = -0.5  # behind the camera
    points[1, :5, :2] = OFFSCREEN
    expected = rasterize(points, scene.radii, SIZE, k)
    got = rasterize_sorted(points, scene.radii, SIZE, k)
    assert torch.equal(got.idx, expected.idx)
    assert torch.equal(got.zbuf, expected.zbuf) and torch.equal(got.dists, expected.dists)


def test_sort_backend_edge_cases():
    from dr_fdsl.render.raster_sort import rasterize_sorted

    nothing = torch.tensor([[[OFFSCREEN, OFFSCREEN, 1.0]]])
    assert (rasterize_sorted(nothing, torch.tensor([[0.1]]), SIZE, 4).idx == -1).all()
    one = torch.tensor([[[0.3, -0.2, 1.0]]])
    for got, ref in zip(rasterize_sorted(one, torch.tensor([[0.2]]), SIZE, 2),
                        rasterize(one, torch.tensor([[0.2]]), SIZE, 2)):
        assert torch.equal(got, ref)


def test_sort_backend_sorts_minus_zero_depth_like_plus_zero():
    from dr_fdsl.render.raster_sort import rasterize_sorted

    points = torch.tensor([[[0.0, 0.0, -0.0], [0.0, 0.0, 0.5]]])
    radii = torch.tensor([[0.5, 0.5]])
    for got, ref in zip(rasterize_sorted(points, radii, 4, 2), rasterize(points, radii, 4, 2)):
        assert torch.equal(got[0, 1, 1], ref[0, 1, 1]) and torch.equal(got, ref)


def test_an_unknown_rasteriser_is_an_error_not_a_fallback():
    from dr_fdsl.render import RASTERIZERS

    assert set(RASTERIZERS) == {"auto", "pytorch3d", "sort"}
    with pytest.raises(ConfigError, match="unknown rasteriser 'cuda'; valid: auto, pytorch3d, sort"):
        RASTERIZERS.get("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the binned PyTorch3D path runs on CUDA only")
@pytest.mark.parametrize("k, size", [(4, 64), (8, 224)])
def test_binned_pytorch3d_path_equals_the_sort_backend_on_crowded_scenes(k, size):
    from dr_fdsl.render.raster_sort import rasterize_sorted

    g = torch.Generator().manual_seed(k)
    points = torch.randn(4, 20000, 3, generator=g) * 0.15  # most points in a few bins: crowded
    points[..., 2] = torch.rand(4, 20000, generator=g) * 2 + 0.5
    radii = torch.rand(4, 20000, generator=g) * 0.02 + 0.005
    points, radii = points.cuda(), radii.cuda()
    binned = rasterize(points, radii, size, k)
    for got, ref in zip(rasterize_sorted(points, radii, size, k), binned):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
def test_sort_backend_images_and_gradients(compositor):
    aug = AugmentConfig(subsample=(0.5, 1.0), scale=(0.8, 1.2))
    ids, seeds = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    images, grads = [], []
    for backend in ("pytorch3d", "sort"):
        renderer = PointRenderer(tiny_bank(), cfg(raster_backend=backend, mode="joint", compositor=compositor,
                                                    augment=aug, color_init="random"))
        image = renderer(ids, seeds)
        image.pow(2).mean().backward()
        images.append(image)
        grads.append([p.grad.to_dense() for p in renderer.parameters()])
    assert torch.equal(images[0], images[1])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def _scene_and_fragments(compositor_k=4, noise=False, seed=3):
    scene = random_scene(b=2, n=60, seed=seed, noise_background=noise)
    return scene, rasterize(scene.points, scene.radii, SIZE, compositor_k)


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
@pytest.mark.parametrize("k, noise", [(1, False), (4, True), (8, False)])
def test_draw_fragments_equals_the_reference_compositing(compositor, k, noise):
    """The occupied-pixel compositor with its own backward gives PyTorch3D's compositors' images bit for bit and
    the same gradients (other roundings), to colours, radii and background."""
    scene, fragments = _scene_and_fragments(k, noise)
    inputs = [[t.clone().requires_grad_() for t in (scene.colors, scene.radii, scene.background)] for _ in "ab"]
    (c1, r1, b1), (c2, r2, b2) = inputs
    ref = composite(fragments, fragment_weights(fragments, r1), c1, b1, compositor)
    new = draw_fragments(fragments, r2, c2, b2, compositor)
    assert torch.equal(new, ref)
    # PyTorch3D's norm_weighted backward differentiates the 1e-4 floor of the weight sum as if it were the sum
    # (draw_fragments: the true derivative); leave out the pixels it holds
    total = fragment_weights(fragments, scene.radii).sum(-1)
    weight = torch.rand(ref.shape, generator=torch.Generator().manual_seed(0)) * (total >= 1e-4)[:, None]
    (ref * weight).sum().backward()
    (new * weight).sum().backward()
    for a, b in zip((c1, r1, b1), (c2, r2, b2)):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
def test_draw_fragments_backward_passes_gradcheck(compositor):
    g = torch.Generator().manual_seed(4)
    points = torch.rand(1, 12, 3, generator=g) * 2 - 1
    points[..., 2] = torch.rand(1, 12, generator=g) + 0.1
    radii = torch.rand(1, 12, generator=g) * 0.3 + 0.2  # 8 px images: pixels with several fragments
    fragments = rasterize(points, radii, 8, 4)
    assert (fragments.idx >= 0).sum(-1).max() > 1
    fragments = fragments._replace(dists=fragments.dists.double())
    colors = (torch.rand(1, 12, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    background = (torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, r, bg: draw_fragments(fragments, r, c, bg, compositor),
                                    (colors, radii.double().requires_grad_(), background), eps=1e-7, atol=1e-6)


def test_draw_fragments_holds_the_weight_floor_constant():
    """Two fragments whose weights sum to 4e-5 (< 1e-4): t is the constant 1e-4, gradcheck in float64."""
    idx = torch.tensor([0, 1, -1]).view(1, 1, 1, 3)
    d = torch.tensor([0.25 * (1 - 2e-5), 0.25 * (1 - 2e-5), -1.0], dtype=torch.float64).view(1, 1, 1, 3)
    fragments = Fragments(idx, d, d)
    colors = torch.rand(1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    radii = torch.full((1, 2), 0.5, dtype=torch.float64, requires_grad=True)
    background = torch.full((1, 3, 1, 1), 0.3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c, r: draw_fragments(fragments, r, c, background, "norm_weighted"),
                                    (colors, radii), eps=1e-9, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_fragment_lists_are_the_occupied_slots_of_pytorch3ds_fragments(k):
    """The sort backend's list equals the listing of PyTorch3D's dense fragments field by field, in pixel-major,
    front-to-back order, and a list's dense form is those fragments bit for bit."""
    scene = random_scene(b=2, n=80, seed=5)
    dense = rasterize(scene.points, scene.radii, SIZE, k)
    listed = FragmentList.of(dense)
    sort = rasterize_sorted_list(scene.points, scene.radii, SIZE, k)
    assert listed.shape == sort.shape == (2, SIZE, SIZE, k)
    for a, b in zip(listed[:5], sort[:5]):
        assert torch.equal(a, b)
    assert bool((listed.pixel[1:] >= listed.pixel[:-1]).all())
    for a, b in zip(listed.dense(), dense):
        assert torch.equal(a, b)
    # ranks run 0, 1, ... within each pixel (what the slot-by-slot compositing relies on)
    counts = (dense.idx >= 0).sum(-1).reshape(-1)
    assert torch.equal(torch.bincount(listed.pixel, minlength=counts.numel()), counts)
    assert bool((listed.rank < counts[listed.pixel]).all())


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
def test_draw_fragments_with_nothing_on_screen_is_the_background(compositor):
    scene = random_scene(b=2, n=10, seed=6, noise_background=True)
    scene = scene._replace(points=torch.full_like(scene.points, OFFSCREEN))
    listed = rasterize_sorted_list(scene.points, scene.radii, SIZE, 4)
    assert listed.idx.numel() == 0
    colors, radii, background = (t.clone().requires_grad_() for t in (scene.colors, scene.radii, scene.background))
    image = draw_fragments(listed, radii, colors, background, compositor)
    assert torch.equal(image, scene.background.clamp(0, 1))
    image.sum().backward()
    assert not colors.grad.any() and not radii.grad.any() and torch.equal(background.grad, torch.ones_like(background))


def test_sort_backend_finds_every_pixel_on_the_edge_of_a_disk():
    """Centres on pixel centres, pixel edges and between, radii whole and fractional multiples of the pixel pitch
    (and a hair either side), one radius per batch (the candidate square's span follows the largest): the
    squares miss no pixel PyTorch3D's kernel finds, and the edge itself (distance = radius, not drawn) is
    refused alike."""
    size, pitch = 16, 2 / 16
    offsets = torch.tensor([0.0, 0.5, 0.25, 1 / 3, 0.1, 0.6, 0.9]) * pitch + pitch * 0.5  # + pitch / 2: a centre
    x, y = torch.meshgrid(offsets, offsets.flip(0), indexing="ij")
    points = torch.stack([x.reshape(-1), y.reshape(-1), torch.ones(x.numel())], -1)[None]
    drawn = 0
    for radius in [0.5, 0.75, 1.0, 1.2, 1.5, 1.8, 2.0, 2.5]:
        for scale in (1, 1 + 1e-6, 1 - 1e-6):
            radii = torch.full((1, x.numel()), radius * scale * pitch)
            dense = rasterize(points, radii, size, 16)
            for a, b in zip(rasterize_sorted_list(points, radii, size, 16).dense(), dense):
                assert torch.equal(a, b)
            drawn += int((dense.idx >= 0).sum())
    assert drawn > 1000


@pytest.mark.parametrize("compositor", ["alpha", "norm_weighted"])
@pytest.mark.parametrize("k", [31, 32, 40, 64])
def test_draw_fragments_equals_the_reference_with_many_fragments_per_pixel(compositor, k):
    """K slots all full on one pixel, weights 0.02-0.1: torch.prod's vectorised reduction multiplies in another
    order from 32 values on (AVX2), so T must be taken by torch.prod as the reference takes it, not as a running
    product (which differed by 1 ulp in about half the trials)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        angle = torch.rand(k, generator=g) * 6.28
        dist = 0.5 * (0.9 + 0.08 * torch.rand(k, generator=g)).sqrt()
        points = torch.stack([dist * angle.cos(), dist * angle.sin(), torch.rand(k, generator=g)], -1)[None]
        radii = torch.full((1, k), 0.5)
        colors, background = torch.rand(1, k, 3, generator=g), torch.rand(1, 3, 1, 1, generator=g)
        fragments = rasterize(points, radii, 1, k)
        assert int((fragments.idx >= 0).sum()) == k
        ref = composite(fragments, fragment_weights(fragments, radii), colors, background, compositor)
        assert torch.equal(draw_fragments(fragments, radii, colors, background, compositor), ref)
