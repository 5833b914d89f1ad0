"""Diamond-square backgrounds, coloured in HSV, drawn per image from its key (``renderer.background:
diamond_square``).

Two published versions (``renderer.diamond_square_variant``):

* ``anderson``: Anderson & Farrell, "Improving Fractal Pre-training" (WACV 2022), code catalys1/fractal-pretraining
  ``fractal_learning/fractals/diamondsquare.py`` (commit b87adf2). ``n = ceil(log2(size))``, a ``2^n + 1`` square
  grid, random corners in [0, 1), decay ``U(0.4, 0.8)``; at level ``k = 1..n`` every new node is the mean of its
  four neighbours (wrapping round the edges) plus ``U(-m, m)``, ``m = 0.5 exp(decay (1 - k))``. Colouring: hue
  ``uint8(x * U(0.25, 1) * 255 + U(0, 1) * 255)`` (wrapping modulo 256), saturation ``min(x * U(0.1, 0.3) * 255 +
  U(0.4, 0.6) * 255, 255)``, value ``min(x * U(0.3, 0.6) * 255 + U(0.4, 0.6) * 255, 255)``, as bytes through
  OpenCV's HSV -> RGB. The top-left ``size x size`` crop.
* ``contest``: the SIGNATE contest solution's port of it (hiranoko/PIDModuleContest_4thPlaceSolution
  ``notebooks/_diamondsquare.py``, its ablation row "Add Background Diamond"). Its vectorised square step visits
  only rows and columns ``0 .. s - 1 - ss``, so the last row and column keep 0 except at the corners (and their
  neighbours average those zeros in); its colouring clips ``x * scale + shift`` to [0, 255] before the byte
  conversion (no hue wrap), with scales ``U([0.25, 0.1, 0.3], [1, 0.3, 0.6]) * 255`` and shifts
  ``U([0, 0.4, 0.4], [1, 0.6, 0.6]) * 255`` for (H, S, V).

The random numbers are ours, not numpy's: one uniform per grid node (the node's noise at the level where it first
appears; the corners' values), the decay and six colouring numbers per image. The field is float64 as published.
A float that does not fit a byte (the Anderson version's hue, or a value below 0) is converted as C truncates it
to an integer, keeping its low byte (numba's ``np.uint8`` on x86; the published comment says "implicit MOD(256)").
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.hsv import hsv8_to_rgb8
from dr_fdsl.render.streams import Stream

VARIANTS = ("contest", "anderson")
_CHUNK = 16  # images per chunk: a 513 x 513 grid's hashing holds a few int64 temporaries per node


@lru_cache(maxsize=64)
def _level_nodes(n: int, k: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The nodes a level sets and their four neighbours, as flat indices into the ``s x s`` grid.

    Returns ``(diamond, square)``, each ``(5, M)`` int64: row 0 the node, rows 1-4 the neighbours in the published
    summation order (diamond: up-left, up-right, down-left, down-right; square: up, left, right, down).
    """
    s = 2**n + 1
    ss = s // 2**k
    centres = torch.arange(0, 2**k, 2) * ss + ss
    r, c = torch.meshgrid(centres, centres, indexing="ij")
    r, c = r.reshape(-1), c.reshape(-1)
    diamond = torch.stack([r * s + c, (r - ss) * s + c - ss, (r - ss) * s + c + ss, (r + ss) * s + c - ss,
                           (r + ss) * s + c + ss])
    steps = 2**k + (1 if variant == "anderson" else 0)  # the contest's port stops one row and column short
    i, j = torch.meshgrid(torch.arange(steps), torch.arange(steps), indexing="ij")
    odd = (i + j) % 2 == 1
    r, c = i[odd] * ss, j[odd] * ss
    up = torch.where(r > 0, r - ss, s - ss - 1)
    down = torch.where(r < s - 1, r + ss, ss)
    left = torch.where(c > 0, c - ss, s - ss - 1)
    right = torch.where(c < s - 1, c + ss, ss)
    square = torch.stack([r * s + c, up * s + c, r * s + left, r * s + right, down * s + c])
    return diamond, square


def diamond_square_field(corners: torch.Tensor, noise: torch.Tensor, decay: torch.Tensor, variant: str) -> torch.Tensor:
    """The published diamond-square iteration, batched.

    Args:
        corners: ``(B, 4)`` float64 corner values (top-left, top-right, bottom-left, bottom-right).
        noise: ``(B, s, s)`` float64 uniforms in [0, 1), ``s = 2^n + 1``: node ``(r, c)`` gets ``-m + 2m u[r, c]``
            at the level where it is set.
        decay: ``(B,)`` float64.
        variant: ``"contest"`` or ``"anderson"``.
    Returns:
        ``(B, s, s)`` float64.
    """
    b, s = noise.shape[0], noise.shape[1]
    n = int(round(math.log2(s - 1)))
    field = torch.zeros(b, s * s, dtype=torch.float64, device=noise.device)
    field[:, [0, s - 1, (s - 1) * s, s * s - 1]] = corners
    flat = noise.reshape(b, -1)
    for k in range(1, n + 1):
        m = 0.5 * torch.exp(decay * (1 - k))[:, None]  # (B, 1)
        for nodes in _level_nodes(n, k, variant):
            nodes = nodes.to(noise.device)
            a = field[:, nodes[1:]]  # (B, 4, M)
            mean = 0.25 * (a[:, 0] + a[:, 1] + a[:, 2] + a[:, 3])
            field[:, nodes[0]] = mean + (-m + (m + m) * flat[:, nodes[0]])
    return field.view(b, s, s)


def _byte(x: torch.Tensor) -> torch.Tensor:
    """Float -> byte as C's truncation to an integer, low 8 bits kept."""
    return torch.trunc(x).long() & 255


def colorize(field: torch.Tensor, draws: torch.Tensor, variant: str) -> torch.Tensor:
    """HSV bytes from a field and six uniforms per image, then RGB.

    Args:
        field: ``(B, H, W)`` float64. draws: ``(B, 6)`` float64 uniforms in [0, 1): for ``contest`` the H, S, V
            scales then the H, S, V shifts; for ``anderson`` hue scale, hue shift, saturation scale and shift,
            value scale and shift (the published order of draws in each).
    Returns:
        ``(B, 3, H, W)`` uint8 RGB.
    """
    if variant == "contest":
        low_scale = field.new_tensor([0.25, 0.1, 0.3])
        high_scale = field.new_tensor([1.0, 0.3, 0.6])
        low_shift = field.new_tensor([0.0, 0.4, 0.4])
        high_shift = field.new_tensor([1.0, 0.6, 0.6])
        scale = (low_scale + (high_scale - low_scale) * draws[:, :3]) * 255
        shift = (low_shift + (high_shift - low_shift) * draws[:, 3:]) * 255
        hsv = _byte((field[..., None] * scale[:, None, None] + shift[:, None, None]).clamp(0, 255))
    elif variant == "anderson":
        d = draws.unbind(1)
        # numpy's uniform(low, high) is low + (high - low) * u, with (high - low) rounded as written here
        hue_scale, hue_shift = (0.25 + (1 - 0.25) * d[0]) * 255, d[1] * 255
        sat_scale, sat_shift = (0.1 + (0.3 - 0.1) * d[2]) * 255, (0.4 + (0.6 - 0.4) * d[3]) * 255
        val_scale, val_shift = (0.3 + (0.6 - 0.3) * d[4]) * 255, (0.4 + (0.6 - 0.4) * d[5]) * 255

        def affine(scale, shift):
            return field * scale[:, None, None] + shift[:, None, None]

        hsv = torch.stack([_byte(affine(hue_scale, hue_shift)),
                           _byte(affine(sat_scale, sat_shift).clamp_max(255)),
                           _byte(affine(val_scale, val_shift).clamp_max(255))], dim=-1)
    else:
        raise ValueError(f"renderer.diamond_square_variant must be one of {VARIANTS}, got {variant!r}")
    return hsv8_to_rgb8(hsv).permute(0, 3, 1, 2)


def diamond_square_draws(keys: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """Every random number of one background per key: corners ``(B, 4)``, noise ``(B, s, s)``, decay ``(B,)``,
    colouring ``(B, 6)``, all float64."""
    n = max(math.ceil(math.log2(size)), 1)
    s = 2**n + 1
    noise = rnd.uniform(keys, Stream.DIAMOND_SQUARE, (s, s)).double()
    corners = noise[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # corner nodes get no noise: their uniform is their value
    color = rnd.uniform(keys, Stream.DIAMOND_SQUARE_COLOR, (7,)).double()
    decay = 0.4 + (0.8 - 0.4) * color[:, 0]
    return corners, noise, decay, color[:, 1:]


def diamond_square(keys: torch.Tensor, size: int, variant: str = "contest") -> torch.Tensor:
    """A coloured diamond-square background per key: ``keys (B,)`` -> ``(B, 3, size, size)`` float32 in [0, 1]."""
    out = []
    for chunk in keys.split(_CHUNK):
        corners, noise, decay, color = diamond_square_draws(chunk, size)
        field = diamond_square_field(corners, noise, decay, variant)[:, :size, :size]
        out.append(colorize(field, color, variant).float() / 255)
    if not out:
        return torch.zeros(0, 3, size, size, device=keys.device)
    return torch.cat(out)
