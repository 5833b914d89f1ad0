"""Renderer mode ``teach``'s settings (section ``teach``) and checks, read at load (no torch; the mode is
:mod:`dr_fdsl.modes.teach`, its equations docs/rendering.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dr_fdsl.modes.base_settings import ModeSpec
from dr_fdsl.settings import finite, need

if TYPE_CHECKING:
    from dr_fdsl.config import Config


@dataclass
class TeachConfig:
    """Renderer mode ``teach`` (dr_fdsl/modes/teach.py): TeachAugment's objective (Suzuki, CVPR 2022) with the
    rendering tables as the augmenter. Defaults are the published code's (main.py's arguments)."""

    ema_decay: float = 0.999  # the teacher: teacher <- ema_decay * teacher + (1 - ema_decay) * backbone, each step
    adversarial_weight: float = 1.0  # weight of the non-saturating loss -log(1 - p_y) of the backbone (ascent)
    teacher_weight: float = 1.0  # weight of the teacher's cross-entropy (descent)
    color_weight: float = 10.0  # c_reg_coef: sliced Wasserstein distance of colours to the initial tables' render
    label_smoothing: float = 0.1  # epsilon of the non-saturating loss's targets
    interval: int = 5  # n_inner: the tables get their gradient every this many optimiser steps (from step 0)
    # Replay of past tables: every replay_every steps (0: off) a copy of the tables joins the buffer; the backbone's
    # images come, per group of replay_group images, from a copy drawn with priority replay_decay^age (current: 1).
    replay_every: int = 0
    replay_decay: float = 0.9
    replay_size: int = 0  # copies kept (the newest); 0: all
    replay_group: int = 8


def validate_teach(cfg: Config) -> None:
    """The teach section's checks (renderer.mode=teach)."""
    t = cfg.teach
    need(finite(t.ema_decay) and 0 <= t.ema_decay < 1, "teach.ema_decay", f"must be in [0, 1), got {t.ema_decay}")
    for key in ("adversarial_weight", "teacher_weight", "color_weight"):
        value = getattr(t, key)
        need(finite(value) and value >= 0, f"teach.{key}", f"must be a number >= 0, got {value}")
    need(finite(t.label_smoothing) and 0 <= t.label_smoothing < 1, "teach.label_smoothing",
         f"must be in [0, 1), got {t.label_smoothing}")
    need(t.interval >= 1, "teach.interval", f"must be >= 1 (1: a renderer update every step), got {t.interval}")
    need(t.replay_every >= 0, "teach.replay_every", f"must be >= 0 (0: no replay), got {t.replay_every}")
    need(finite(t.replay_decay) and 0 < t.replay_decay <= 1, "teach.replay_decay",
         f"must be in (0, 1], got {t.replay_decay}")
    need(t.replay_size >= 0, "teach.replay_size", f"must be >= 0 (0: keep every copy), got {t.replay_size}")
    need(t.replay_group >= 1, "teach.replay_group", f"must be >= 1, got {t.replay_group}")


class TeachSpec(ModeSpec):
    name = "teach"
    sections = {"teach": TeachConfig}

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        need(cfg.train.objective == "classify", "renderer.mode",
             f"teach needs a teacher that classifies the rendered images: train.objective=classify, got "
             f"{cfg.train.objective!r}; use renderer.mode=adversarial (with renderer.anchor_penalty) for it")
        validate_teach(cfg)

    @classmethod
    def buffers(cls, cfg: Config) -> list[tuple[str, float, str, str]]:
        t, r, b = cfg.teach, cfg.renderer, cfg.bank
        table_bytes = 4 * b.num_points * (3 * (1 if r.share_colors else b.num_classes)
                                          + (1 if r.share_radii else b.num_classes))
        copies = 1  # the initial tables (the colour regulariser's reference render)
        if t.replay_every:
            stored = cfg.train.max_steps // t.replay_every
            copies += min(stored, t.replay_size) if t.replay_size else stored
        return [("teach.replay_size", copies * table_bytes,
                 f"{copies} copies of the rendering tables (the initial ones and the replay buffer's)",
                 "lower teach.replay_size or raise teach.replay_every (0: no replay)")]
