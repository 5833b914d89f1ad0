"""Anderson & Farrell's window and flips, applied to projected points (``renderer.augment.window_*``, ``dihedral``).

Their ``IFSGenerator.render`` draws the fractal through a window around its bounding box: the window's centre moves
by ``U(-translate, translate)`` of its extent and its extent is scaled by ``U(scale)``, on each axis independently
(published 0.2 and [0.5, 2.0]); ``random_flips`` then transposes the image and flips it up-down and left-right,
each with probability 0.5. A window that spans the NDC square ``[-1, 1]^2`` maps a point ``p`` to ``(p - 2 t) / f``
per axis (``t`` the shift in extents, ``f`` the scale); a transpose swaps NDC x and y, a flip negates one. Point
radii are not scaled: the published points stay one pixel (or patch) whatever the window.
"""

from __future__ import annotations

import torch

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.settings import AugmentConfig
from dr_fdsl.render.streams import Stream


def window_and_flips(ndc: torch.Tensor, keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """``ndc (B, N, 3)`` float32 (x, y, depth) -> the same with x, y through the image's window and flips; the
    identity (the same tensor) at the defaults. Randomness from ``keys (B,)``."""
    xy = ndc[..., :2]
    changed = False
    if cfg.window_shift > 0 or cfg.window_scale != (1.0, 1.0):
        shift = rnd.uniform_range(keys, Stream.WINDOW_SHIFT, (-cfg.window_shift, cfg.window_shift), (2,))
        scale = rnd.uniform_range(keys, Stream.WINDOW_SCALE, cfg.window_scale, (2,))
        xy = (xy - 2 * shift[:, None]) / scale[:, None]
        changed = True
    if cfg.dihedral:
        flips = rnd.uniform(keys, Stream.DIHEDRAL, (3,)) < 0.5  # transpose, up-down, left-right
        xy = torch.where(flips[:, None, 0:1], xy.flip(-1), xy)
        # left-right negates NDC x, up-down negates y: (B, 1, 2)
        sign = torch.stack([torch.where(flips[:, 2], -1.0, 1.0), torch.where(flips[:, 1], -1.0, 1.0)], -1)[:, None]
        xy = xy * sign
        changed = True
    return torch.cat([xy, ndc[..., 2:]], dim=-1) if changed else ndc
