"""The published image pipelines on the device against their published definitions.

* timm's RandAugment ops: each batched op against timm's own function on a PIL image (tests call timm's
  ``auto_augment`` functions, which call PIL). PIL rounds every result to an integer level (it truncates blends and
  affine samples, and rounds the two passes of a resize, and its luma is an integer); ours keeps the fraction, so
  the tolerance is one level for lookup-table and geometric ops (lookup tables: exact), 1.1 for resizes (PIL rounds
  both passes) and 1.5 levels for the enhance blends, whose grey, luma or smoothed image PIL rounds before
  blending.
* The contest's albumentations operations against outputs of albumentations 1.3.1 with OpenCV 4.8.1
  (tests/fixtures/imgaug/): OpenCV samples at positions quantised to 1/32 pixel and with 15-bit weights (1.3 levels
  on the fixture's smooth image), and converts to HSV with hue in 180 integer steps (2 degrees: up to 8.5 levels of
  a saturated channel; 7 on the fixture, mean under one level).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as aa

from dr_fdsl import image_ops as ops
from dr_fdsl.config import ImageAugConfig, load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.image_augment import ImageAugment, crop_boxes
from dr_fdsl.randaugment import SUPPORTED, RandAugment, apply_op, op_argument, parse_randaugment

FIXTURE = Path(__file__).parent / "fixtures" / "imgaug" / "albumentations_1_3_1.npz"
H, W = 20, 24  # not square: a swapped axis shows
FILL = (124, 116, 104)  # timm's img_mean for ImageNet's mean


def _image(seed: int = 0) -> np.ndarray:
    """Noise over a smooth pattern: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = 128 + 90 * np.sin(xx / 3.0 + yy / 5.0)[..., None] * np.array([1.0, -0.7, 0.4])
    return np.clip(smooth + rng.normal(0, 30, (H, W, 3)), 0, 255).astype(np.uint8)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).double().numpy()


# ----------------------------------------------------------------------------------------------- RandAugment

def test_parse_randaugment_reads_timms_meaning():
    spec = parse_randaugment("rand-m9-mstd0.5-inc1")
    assert spec.names == tuple(aa._RAND_INCREASING_TRANSFORMS)
    assert (spec.magnitude, spec.magnitude_std, spec.magnitude_max, spec.num_layers, spec.prob) == (9, 0.5, 10, 2,
                                                                                                     0.5)
    assert spec.weights is None
    plain = parse_randaugment("rand-m7-n3-p0.3")
    assert plain.names == tuple(aa._RAND_TRANSFORMS) and (plain.num_layers, plain.prob, plain.magnitude_std) == (
        3, 0.3, 0.0)
    weighted = parse_randaugment("rand-m9-tweights")
    assert weighted.weights is not None and abs(sum(weighted.weights) - 1) < 1e-9


@pytest.mark.parametrize("text, message", [("rand-m9-x3", "timm cannot parse"), ("augmix-m5", "timm cannot parse"),
                                           ("rand-m9-t3a", "not implemented")])
def test_parse_randaugment_refuses(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_randaugment(text)
    with pytest.raises(ConfigError, match="image_aug.randaugment"):
        load_config(None, [f"image_aug.randaugment={text}"])


@pytest.mark.parametrize("name", SUPPORTED)
def test_op_argument_is_timms_level(name, monkeypatch):
    level_fn = aa.LEVEL_TO_ARG[name]
    magnitudes = torch.tensor([0.0, 0.3, 2.5, 4.99, 5.0, 7.77, 9.0, 9.5, 10.0], dtype=torch.float64)
    for negate in (False, True):
        # timm's _randomly_negate negates when random.random() > 0.5
        monkeypatch.setattr(random, "random", lambda negate=negate: 1.0 if negate else 0.0)
        ours = op_argument(name, magnitudes, torch.full((len(magnitudes),), negate), 0.45)
        if level_fn is None:
            assert ours is None
            continue
        expected = [level_fn(float(m), {"translate_pct": 0.45})[0] for m in magnitudes]
        assert ours.tolist() == pytest.approx(expected, abs=1e-12), name


def _timm_op(name: str, image: Image.Image, arg, kernel: str) -> Image.Image:
    resample = Image.BICUBIC if kernel == "bicubic" else Image.BILINEAR
    args = () if arg is None else (arg,)
    return aa.NAME_TO_OP[name](image, *args, fillcolor=FILL, resample=resample)


@pytest.mark.parametrize("name", SUPPORTED)
def test_randaugment_op_matches_timm_on_pil(name):
    base = _image(1)
    # one level (PIL truncates), plus float32 rounding of ours
    tolerance = 1.5 if any(k in name for k in ("Color", "Contrast", "Brightness", "Sharpness")) else 1.001
    magnitudes = torch.tensor([3.0, 9.0, 9.7], dtype=torch.float64)
    for negate in (False, True):
        args = op_argument(name, magnitudes, torch.full((3,), negate))
        for i in range(3):
            arg = None if args is None else args[i : i + 1]
            if "Posterize" in name and int(arg) == 0:
                continue  # Pillow >= 10 refuses 0 bits (timm's level 10 of PosterizeIncreasing); ours: black
            for kernel in ("bicubic", "bilinear"):
                expected = np.asarray(_timm_op(name, Image.fromarray(base), None if arg is None else arg.item(),
                                               kernel)).astype(np.float64)
                ours = _array(apply_op(name, _tensor(base), arg, kernel, torch.tensor([FILL], dtype=torch.float32)))
                diff = np.abs(ours - expected)
                assert diff.max() < tolerance, (name, kernel, arg, diff.max())
                if name in ("Equalize", "Invert") or "Posterize" in name or "Solarize" in name:
                    assert diff.max() == 0, name  # lookup tables: exact


def test_randaugment_batch_equals_one_image_at_a_time():
    """The batched pipeline (op choice, probability, magnitude, sign, resampling per image and layer) against a
    loop that applies the same draws to one image at a time."""
    spec = parse_randaugment("rand-m9-mstd0.5-inc1-n3-p0.8")
    augment = RandAugment(spec, "random", FILL)
    images = torch.cat([_tensor(_image(s)) for s in range(12)])
    torch.manual_seed(3)
    draws = augment.draw(12, images.device)
    batched = augment.apply(images, draws)
    fill = torch.tensor([FILL], dtype=torch.float32)
    for i in range(12):
        image = images[i : i + 1]
        for layer in range(spec.num_layers):
            if not draws["apply"][i, layer]:
                continue
            name = spec.names[int(draws["choice"][i, layer])]
            arg = op_argument(name, draws["magnitude"][i : i + 1, layer], draws["negate"][i : i + 1, layer])
            image = apply_op(name, image, arg, "bicubic" if draws["bicubic"][i, layer] else "bilinear", fill)
        torch.testing.assert_close(batched[i : i + 1], image, atol=1e-3, rtol=0)
    assert (batched - images).abs().amax(dim=(1, 2, 3)).gt(0).sum() >= 8  # most images changed


def test_randaugment_magnitudes_follow_timm():
    spec = parse_randaugment("rand-m9-mstd0.5-inc1")
    torch.manual_seed(0)
    draws = RandAugment(spec, "bicubic", FILL).draw(20000, "cpu")
    m = draws["magnitude"]
    assert abs(m.mean().item() - 9.0) < 0.02 and abs(m.std().item() - 0.5) < 0.03 and m.max().item() == 10.0
    assert abs(draws["apply"].double().mean().item() - 0.5) < 0.02
    counts = torch.bincount(draws["choice"].flatten(), minlength=len(spec.names)).double()
    assert counts.min() / counts.max() > 0.9  # uniform over the 15 ops, with replacement
    assert draws["bicubic"].all()


# ------------------------------------------------------------------------------------------ random resized crop

@pytest.mark.parametrize("kernel", ["bicubic", "bilinear"])
def test_resized_crop_matches_pil(kernel):
    base = _image(2)
    boxes = [(3, 2, 15, 11), (0, 0, H, W), (1, 4, 18, 19), (7, 9, 2, 3)]
    top, left, height, width = (torch.tensor(v) for v in zip(*boxes))
    ours = ops.pil_resized_crop(_tensor(base).expand(4, -1, -1, -1), top, left, height, width, (H, W), kernel)
    resample = Image.BICUBIC if kernel == "bicubic" else Image.BILINEAR
    for n, (i, j, h, w) in enumerate(boxes):
        expected = np.asarray(Image.fromarray(base).crop((j, i, j + w, i + h)).resize((W, H), resample))
        # PIL rounds each of its two passes to a level: 0.5 from the first, carried by the second's weights (whose
        # magnitudes sum to at most 1.2 for the cubic), plus 0.5 from the second
        assert np.abs(_array(ours[n : n + 1]) - expected).max() < 1.1


def test_crop_boxes_follow_timm_rules():
    torch.manual_seed(0)
    top, left, height, width = crop_boxes(4000, 64, 64, (0.08, 1.0), (3 / 4, 4 / 3), "cpu")
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 64).all() and (left + width <= 64).all()
    area = (height * width).double() / 64**2
    assert area.min() > 0.06 and area.max() <= 1.0 and (area < 0.3).any() and (area > 0.9).any()
    aspect = width.double() / height.double()
    assert aspect.min() > 0.6 and aspect.max() < 1.6
    # nothing fits: timm's fallback, the centre crop at the nearest allowed aspect ratio
    top, left, height, width = crop_boxes(3, 32, 32, (1.0, 1.0), (2.0, 3.0), "cpu")
    assert top.tolist() == [8] * 3 and left.tolist() == [0] * 3 and height.tolist() == [16] * 3
    assert width.tolist() == [32] * 3


# --------------------------------------------------------------------------------- the contest's operations

@pytest.fixture(scope="module")
def published():
    return np.load(FIXTURE)


def test_contest_geometry_matches_albumentations(published):
    smooth = _tensor(published["smooth"]).double()
    for i in range(2):
        angle, scale, dx, dy = published[f"ssr{i}_params"]
        forward = ops.rotation_matrix_2d(torch.tensor([angle]), torch.tensor([scale]), W / 2 - 0.5, H / 2 - 0.5)
        forward[:, 0, 2] += dx * W
        forward[:, 1, 2] += dy * H
        ours = _array(ops.cv2_warp_affine(smooth, forward))
        assert np.abs(ours - published[f"ssr{i}"]).max() < 1.3
        steps = torch.tensor(published[f"grid{i}_params"])
        ours = _array(ops.remap(smooth, *ops.grid_distortion_maps(steps[0:1], steps[1:2], H, W, 5)))
        assert np.abs(ours - published[f"grid{i}"]).max() < 1.3
    for i in range(3):
        k, dx, dy = (torch.tensor([v]) for v in published[f"optical{i}_params"])
        ours = _array(ops.remap(smooth, *ops.optical_distortion_maps(k, dx, dy, H, W)))
        assert np.abs(ours - published[f"optical{i}"]).max() < 1.3
    noise = published["noise"]
    x = _tensor(noise)
    assert (_array(x.transpose(2, 3)) == published["transpose"]).all()
    assert (_array(x.flip(3)) == published["hflip"]).all() and (_array(x.flip(2)) == published["vflip"]).all()


def test_contest_colour_matches_albumentations(published):
    for i in range(2):
        alpha, beta = published[f"rbc{i}_params"]
        ours = _array(ops.brightness_contrast(_tensor(published["noise"]), torch.tensor([alpha]),
                                              torch.tensor([beta])))
        assert np.abs(ours - published[f"rbc{i}"]).max() < 1.001  # albumentations truncates its lookup table
        shifts = [torch.tensor([v]) for v in published[f"hsv{i}_params"]]
        for name in ("smooth", "noise"):
            diff = np.abs(_array(ops.shift_hsv(_tensor(published[name]), *shifts)) - published[f"hsv{i}_{name}"])
            assert diff.max() < 7.0 and diff.mean() < 1.0, (name, diff.max(), diff.mean())


def _hsv_reference(pixel: np.ndarray, shifts) -> np.ndarray:
    """One pixel through the textbook HSV round trip (colorsys), in OpenCV's uint8 units."""
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(pixel / 255.0))
    h = (h * 180 + shifts[0]) % 180 / 180
    s = min(max(s * 255 + shifts[1], 0), 255) / 255
    v = min(max(v * 255 + shifts[2], 0), 255) / 255
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def test_hsv_shift_is_the_continuous_conversion():
    image = _image(4)
    shifts = (13.4, -21.7, 9.2)
    ours = _array(ops.shift_hsv(_tensor(image).double(), *(torch.tensor([s]) for s in shifts)))
    for y in range(0, H, 3):
        for x in range(0, W, 5):
            np.testing.assert_allclose(ours[y, x], _hsv_reference(image[y, x].astype(np.float64), shifts),
                                       atol=1e-6)


# -------------------------------------------------------------------------------------------- the pipeline

def _augment(**settings) -> ImageAugment:
    cfg = ImageAugConfig(mixup=0, cutmix=0, random_erasing=0, hflip=0, vflip=0)
    for key, value in settings.items():
        if "." in key:
            section, field = key.split(".")
            setattr(getattr(cfg, section), field, value)
        else:
            setattr(cfg, key, value)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    return ImageAugment(cfg, 10, torch.device("cpu"), mean, std)


SWITCHES = [{"random_resized_crop.enabled": True}, {"transpose": 1.0}, {"shift_scale_rotate.p": 1.0},
            {"brightness_contrast.p": 1.0}, {"hue_saturation_value.p": 1.0}, {"distortion.p": 1.0},
            {"randaugment": "rand-m9-mstd0.5-inc1"}]


def test_defaults_are_the_previous_pipeline():
    """New keys off: the images are flipped and normalised exactly as before (flips after normalisation)."""
    cfg = ImageAugConfig(mixup=0, cutmix=0, random_erasing=0, hflip=0.5, vflip=0.5)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    images = torch.rand(16, 3, 8, 8)
    torch.manual_seed(0)
    ours, _ = ImageAugment(cfg, 10, torch.device("cpu"), mean, std)(images, torch.zeros(16, dtype=torch.long))
    torch.manual_seed(0)
    before = (images - mean) / std
    for prob, dim in ((0.5, 3), (0.5, 2)):
        flip = (torch.rand(16) < prob).view(16, 1, 1, 1)
        before = torch.where(flip, before.flip(dim), before)
    assert torch.equal(ours, before)


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: next(iter(s)))
def test_each_switch_changes_images_and_passes_gradients(switch):
    images = torch.rand(6, 3, 16, 16, requires_grad=True)
    labels = torch.zeros(6, dtype=torch.long)
    torch.manual_seed(0)
    plain, _ = _augment()(images, labels)
    torch.manual_seed(0)
    out, _ = _augment(**switch)(images, labels)
    assert (out - plain).abs().amax(dim=(1, 2, 3)).gt(1e-3).any()
    torch.manual_seed(0)
    again, _ = _augment(**switch)(images, labels)
    assert torch.equal(out, again)  # the global generator decides everything: same seed, same images
    out.square().sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_contest_include_loads():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "image_aug" / "contest.yaml", validate=False)
    a = cfg.image_aug
    assert (a.transpose, a.hflip, a.vflip) == (0.5, 0.5, 0.5)
    assert (a.shift_scale_rotate.p, a.brightness_contrast.p, a.hue_saturation_value.p, a.distortion.p) == (
        0.5, 0.5, 0.5, 0.5)


@pytest.mark.parametrize("override, message", [
    ("image_aug.random_resized_crop.scale=[0.0,1.0]", "image_aug.random_resized_crop.scale"),
    ("image_aug.shift_scale_rotate.p=2", "image_aug.shift_scale_rotate.p"),
    ("image_aug.hue_saturation_value.hue_shift_limit=-1", "image_aug.hue_saturation_value.hue_shift_limit"),
    ("image_aug.distortion.grid_steps=0", "image_aug.distortion.grid_steps"),
    ("image_aug.transpose=1.5", "image_aug.transpose")])
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_include_takes_a_list_merged_in_order(tmp_path):
    (tmp_path / "fragments").mkdir()
    (tmp_path / "recipe.yaml").write_text("bank:\n  num_classes: 7\nimage_aug:\n  hflip: 0.0\n  vflip: 0.25\n")
    (tmp_path / "fragments" / "aug.yaml").write_text("image_aug:\n  hflip: 0.5\n  transpose: 0.5\n")
    (tmp_path / "run.yaml").write_text("include: [recipe.yaml, fragments/aug.yaml]\nimage_aug:\n  transpose: 0.1\n")
    a = load_config(tmp_path / "run.yaml").image_aug
    assert (a.hflip, a.vflip, a.transpose) == (0.5, 0.25, 0.1)  # later includes win, the file itself wins last
    (tmp_path / "bad.yaml").write_text("include: [recipe.yaml, 3]\n")
    with pytest.raises(ConfigError, match="'include' must name a YAML file or a list"):
        load_config(tmp_path / "bad.yaml")


def test_classify_trains_through_the_published_pipelines():
    """The objective with every pixel pipeline on: a finite loss whose gradient reaches the rendered images (the
    renderer's colours and radii learn through the augmentations)."""
    from dr_fdsl.objectives.classify import Classify

    cfg = load_config(Path(__file__).parents[1] / "configs" / "image_aug" / "contest.yaml", [
        "model.name=test_vit", "model.drop_path=0.0", "renderer.image_size=32", "train.batch_size=4",
        "image_aug.randaugment=rand-m9-mstd0.5-inc1", "image_aug.random_resized_crop.enabled=true",
        "image_aug.interpolation=random"])
    objective = Classify(cfg, 5, 1e-3, torch.device("cpu"))
    images = torch.rand(4, 3, 32, 32, requires_grad=True)
    torch.manual_seed(0)
    out = objective.loss(images, torch.tensor([0, 1, 2, 3]), torch.arange(4))
    out.total.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


@pytest.mark.parametrize("border", ["clamp", "reflect101"])
def test_bilinear_fast_path_equals_the_tap_by_tap_gather(border):
    """sample() reads bilinear values through grid_sample; the slow gather of each neighbour is the reference,
    positions far outside included (several reflections)."""
    torch.manual_seed(0)
    images = torch.rand(3, 2, 7, 9, dtype=torch.float64)
    x, y = torch.rand(3, 5, 6, dtype=torch.float64) * 40 - 15, torch.rand(3, 5, 6, dtype=torch.float64) * 30 - 10
    torch.testing.assert_close(ops.sample(images, x, y, "bilinear", border),
                               ops.gather_sample(images, x, y, "bilinear", border), atol=1e-9, rtol=0)


def test_contest_batch_equals_one_image_at_a_time():
    """The batched albumentations stage (per-image choices and parameters) against a loop applying the same draws
    to one image at a time."""
    from dr_fdsl.image_augment import AlbumentationsPipeline

    cfg = load_config(Path(__file__).parents[1] / "configs" / "image_aug" / "contest.yaml", validate=False)
    stage = AlbumentationsPipeline(cfg.image_aug)
    images = torch.cat([_tensor(_image(s)) for s in range(10)])
    torch.manual_seed(5)
    draws = stage.draw(10, images.device)
    batched = stage.apply(images, draws)
    for i in range(10):
        alone = stage.apply(images[i : i + 1], {key: value[i : i + 1] for key, value in draws.items()})
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-3, rtol=0)
    assert draws["ssr"].any() and draws["hsv"].any() and (draws["distort"] & draws["optical"]).any()
    assert (draws["distort"] & ~draws["optical"]).any()


def test_random_erasing_as_one_select_is_timms_in_place_erasing():
    """ImageAugment.erased against timm's RandomErasing on a copy, in place: the same images bit for bit, the same
    random state after (python's and torch's), and the gradient of the in-place version (0 where erased)."""
    augment = _augment(random_erasing=0.9)
    images = torch.rand(12, 3, 16, 16)
    outs = []
    for ours in (False, True):
        random.seed(3)
        torch.manual_seed(3)
        x = images.clone().requires_grad_()
        out = augment.erased(x) if ours else augment.erase(x.clone())
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        outs.append((out.detach(), x.grad, random.random(), torch.rand(1)))
    (ref, ref_grad, ref_py, ref_torch), (new, new_grad, new_py, new_torch) = outs
    assert torch.equal(new, ref) and torch.equal(new_grad, ref_grad)
    assert ref_py == new_py and torch.equal(ref_torch, new_torch)
    erased = ref != images
    assert erased.any() and not ref_grad[erased].any()


def test_flips_pass_the_gradient_of_where_and_flip():
    from dr_fdsl.image_augment import _Flip

    x = torch.rand(6, 3, 5, 7, requires_grad=True)
    chosen = torch.tensor([True, False, True, True, False, False]).view(6, 1, 1, 1)
    weight = torch.rand(6, 3, 5, 7)
    for dim in (2, 3):
        ours = _Flip.apply(x, chosen, dim)
        (ours * weight).sum().backward()
        grad, x.grad = x.grad, None
        reference = torch.where(chosen, x.flip(dim), x)
        (reference * weight).sum().backward()
        assert torch.equal(ours, reference) and torch.equal(grad, x.grad)
        x.grad = None
