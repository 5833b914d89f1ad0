"""What the config loader reads of an objective (no torch): :class:`ObjectiveSpec`, and the checks several share.

An objective ``<name>`` has a torch-free ``objectives/<name>_settings.py`` with its spec (a subclass of
:class:`ObjectiveSpec`: its name, its config sections, its checks) and the module with its networks,
``objectives/<name>.py``, whose class subclasses that spec; ``objectives/__init__.py`` registers the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from dr_fdsl.settings import need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


class ObjectiveSpec:
    """An objective as the config sees it."""

    name: ClassVar[str]
    # Sections of the config this objective owns (``{"mim": MIMConfig}``): composed into ``Config`` from the
    # registry, under these names. An objective that reads another's section (classify+mim reads mim) owns none.
    sections: ClassVar[dict[str, type]] = {}
    # How descending this objective's loss lets the renderer trivialise it ("descends the reconstruction loss: the
    # renderer could empty the image, ..."), or "" when it cannot: the renderer modes that descend it (joint,
    # match with match.joint) refuse a non-empty one (dr_fdsl/modes/)
    joint_trap: ClassVar[str] = ""
    has_probe: ClassVar[bool] = False  # trains the leakage probe (with train.probe), which renderer.leak_penalty needs

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """Checks the settings this objective depends on; raises ``ConfigError`` naming the key."""


def refuse_pixel_pipelines(cfg: Config, objective: str) -> None:
    """For an objective that does not run ``image_aug``: its pixel pipelines, if configured, would be silently
    ignored, so they are a ``ConfigError``."""
    a = cfg.image_aug
    on = [key for key, active in (
        ("image_aug.random_resized_crop.enabled", a.random_resized_crop.enabled),
        ("image_aug.randaugment", bool(a.randaugment)), ("image_aug.transpose", a.transpose > 0),
        ("image_aug.shift_scale_rotate.p", a.shift_scale_rotate.p > 0),
        ("image_aug.brightness_contrast.p", a.brightness_contrast.p > 0),
        ("image_aug.hue_saturation_value.p", a.hue_saturation_value.p > 0),
        ("image_aug.distortion.p", a.distortion.p > 0))
        if active]
    need(not on, on[0] if on else "image_aug", f"objective {objective} does not apply image_aug's pixel pipelines "
         f"({', '.join(on)} set): switch them off or use objective classify")
