"""Objective ``sit``'s settings (section ``sit``) and checks, read at load (no torch; the networks are in
:mod:`dr_fdsl.objectives.sit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dr_fdsl.objectives.base_settings import ObjectiveSpec, refuse_pixel_pipelines
from dr_fdsl.settings import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


@dataclass
class SiTConfig:
    """Objective ``sit``: SiT, self-supervised vision transformer (Atito, Awais & Kittler 2021), as its public code
    (Sara-Ahmed/SiT at 1aacd6a, the paper's version) computes it: rotation prediction (4 classes) and a contrastive
    task (NT-Xent) on two tokens of their own, reconstruction of the clean image from a corrupted one by a linear
    pixel decoder (L1), the three losses weighted by learned uncertainties. Defaults are the published values
    (dr_fdsl/objectives/sit.py says where each comes from)."""

    temperature: float = 0.5  # NT-Xent temperature (losses.py ContrastiveLoss)
    projection_dim: int = 512  # contrastive head output (vision_transformer_SiT.py contrastive_head)
    # Colour changes of each view: brightness, contrast and saturation factors in [1 - j, 1 + j], in a random order
    # (torchvision's ColorJitter(0.4, 0.4, 0.4), timm's create_transform default, which SiT's views go through).
    color_jitter: float = 0.4
    max_drop: float = 0.3  # rectangles of noise cover up to this fraction of the pixels (drop_rand_patches)
    max_replace: float = 0.3  # rectangles taken from another image cover up to this fraction
    max_block: float = 0.25  # side of a dropped or replaced rectangle: up to this fraction of the image side
    min_block: float = 0.05  # and at least this fraction ("tolr"; also the smallest grey or blurred rectangle)
    max_kernel: int = 15  # blur: odd kernel sizes 3..max_kernel (smooth_patch)
    max_sigma: float = 5.0  # blur: sigma in [0.1, 0.1 + max_sigma)


class SiTSpec(ObjectiveSpec):
    name = "sit"
    sections = {"sit": SiTConfig}
    joint_trap = ("descends sit's losses: the renderer could empty the images (trivial to reconstruct) or colour each "
                  "category apart (contrastive positives found by colour)")

    @classmethod
    def validate(cls, cfg: Config) -> None:
        s, d, view = cfg.sit, cfg.data, cfg.renderer.view
        need(d.views_per_category * d.repeated_aug == 2, "data.views_per_category",
             f"sit's contrastive task takes two views of each source, adjacent in the micro-batch: set "
             f"data.views_per_category=2 (two view seeds of a category) or data.repeated_aug=2 (two copies of one "
             f"render, jittered, turned and corrupted apart), not {d.views_per_category} x {d.repeated_aug}")
        need(cfg.train.batch_size >= 4, "train.batch_size",
             f"sit's contrastive task needs at least two pairs of views (negatives), got {cfg.train.batch_size}")
        need(view.rotation != "so3", "renderer.view.rotation",
             "so3 covers every in-plane rotation, so sit's rotation labels cannot be learnt; use euler with a "
             "roll range of at most 90 degrees (e.g. renderer.view.roll=[0,0]) or none")
        width = view.roll[1] - view.roll[0]
        need(view.rotation != "euler" or width <= 90, "renderer.view.roll",
             f"spans {width} degrees: a view turned by a quarter-turn is then also an unturned view of another roll"
             f"{' (every one, at 360 degrees)' if width >= 360 else ''}, so sit's rotation labels are ambiguous; "
             "keep it within 90 degrees, e.g. [0, 0]")
        need(view.rotation != "euler" or max(abs(e) for e in view.elevation) <= 45, "renderer.view.elevation",
             f"reaches {max(abs(e) for e in view.elevation)} degrees: near the poles the azimuth turns the image in "
             "its plane, so sit's rotation labels are ambiguous; keep it within [-45, 45]")
        need(not cfg.renderer.augment.dihedral, "renderer.augment.dihedral",
             "transposes and flips include quarter-turns, so sit's rotation labels are ambiguous; set it false")
        refuse_pixel_pipelines(cfg, cls.name)
        size = cfg.renderer.image_size
        tol, largest = int(s.min_block * size), int(s.max_block * size)
        need(0 < s.min_block < s.max_block <= 1, "sit.min_block",
             f"need 0 < sit.min_block < sit.max_block <= 1, got {s.min_block}, {s.max_block}")
        need(1 <= tol < largest, "sit.min_block",
             f"the smallest corrupted rectangle, int({s.min_block} x {size}) px, must be at least 1 px and below "
             f"int(sit.max_block x {size}) = {largest}: raise renderer.image_size (>= 20 with the defaults)")
        for key in ("max_drop", "max_replace"):
            need(0 <= getattr(s, key) <= 1, f"sit.{key}", f"is a fraction of the pixels: must be in [0, 1], got "
                 f"{getattr(s, key)}")
        need(0 <= s.color_jitter < 1, "sit.color_jitter", f"must be in [0, 1), got {s.color_jitter}")
        need(s.temperature > 0, "sit.temperature", f"must be positive, got {s.temperature}")
        need(s.projection_dim >= 1, "sit.projection_dim", f"must be positive, got {s.projection_dim}")
        need(s.max_kernel >= 3 and s.max_kernel % 2 == 1, "sit.max_kernel", f"must be odd and >= 3, got {s.max_kernel}")
        need(s.max_sigma > 0, "sit.max_sigma", f"must be positive, got {s.max_sigma}")
