"""Family ``svd2d``'s per-image drawer: Anderson & Farrell's system jitter (``renderer.augment.map_jitter``).

Published (``IFSGenerator.jitter`` with ``jitter_params=True``, ported in :func:`dr_fdsl.families.svd2d.jitter_system`):
before every image, map ``k ~ U{0..n-1}`` of the category's system is multiplied, translation included, by
``m ~ U(0.8, 1.1)``; a draw that makes some map's largest singular value exceed 1 is retried, up to 4 draws, after
which the system is used unchanged. The image is then the jittered system's chaos game (100,000 fresh steps from
its map 0's fixed point) through the window of its own bounding box.

Here: ``k`` and ``m`` come from the image's key (4 draws, the same acceptance rule: only map ``k`` changes, so the
draw is kept when ``m * s1_k <= 1``), and the points are the category's chaos game replayed with the jittered maps:
the same sequence of maps (each point keeps its address in the attractor, so its learnable colour and radius stay
its own), from the jittered map 0's fixed point, placed in the jittered points' own bounding box exactly as the
family places the bank's points. The geometry is the jittered system's attractor, as published; what differs is
that the published run draws a fresh sequence with the jittered maps' probabilities (``|det|`` changes by ``m^2``
for map ``k``), so its points visit the attractor with slightly different frequencies (the density colouring), and
that each point keeps its colour rather than the jittered image's own density.

The chaos game of ``N`` steps is a composition of affine maps, so it is replayed as a prefix scan (Hillis-Steele:
``log2 N`` rounds of batched 2 x 3 compositions) in float64 on the device, not as ``N`` sequential steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from dr_fdsl.errors import ConfigError
from dr_fdsl.families.ifs_scan import prefix_compose
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.instances import InstanceDraw
from dr_fdsl.render.streams import Stream

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank
    from dr_fdsl.render.settings import RendererConfig

ATTEMPTS = 4  # generator.jitter: range(4)


class Jitter(NamedTuple):
    """Per image: ``map_index (B,)`` int64, the jittered map; ``factor (B,)`` float64, 1.0 where every draw failed."""

    map_index: torch.Tensor
    factor: torch.Tensor


def draw_jitter(keys: torch.Tensor, singular_values: torch.Tensor, num_maps: torch.Tensor,
                factor_range: tuple[float, float]) -> Jitter:
    """The published draw, from each image's key.

    Args:
        keys: ``(B,)`` int64 image keys.
        singular_values: ``(B, M, 2)`` each image's system's singular values (``s1 >= s2``), zero beyond its maps.
        num_maps: ``(B,)`` int64.
        factor_range: ``(low, high)`` of ``m``.
    """
    u = rnd.uniform(keys, Stream.MAP_JITTER, (ATTEMPTS, 2)).double()
    maps = num_maps[:, None]
    index = (u[..., 0] * maps).long().clamp_max(maps - 1)  # (B, A): uniform over the system's maps
    low, high = factor_range
    factor = low + (high - low) * u[..., 1]
    s1 = torch.gather(singular_values[..., 0], 1, index)
    ok = factor * s1 <= 1  # the jittered map's largest singular value; the others are unchanged, all <= 1
    first = ok.long().argmax(1, keepdim=True)  # the first accepted draw (0 if none, then unused)
    accepted = ok.any(1)
    chosen = torch.gather(factor, 1, first).squeeze(1)
    return Jitter(torch.gather(index, 1, first).squeeze(1), torch.where(accepted, chosen, torch.ones_like(chosen)))


def jittered_system(system: torch.Tensor, jitter: Jitter) -> torch.Tensor:
    """``system (B, M, 2, 3)`` float64 -> a copy with map ``jitter.map_index`` of each image times its factor."""
    scale = torch.ones(system.shape[:2], dtype=system.dtype, device=system.device)
    scale.scatter_(1, jitter.map_index[:, None], jitter.factor[:, None].to(system.dtype))
    return system * scale[..., None, None]


def replay(system: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """The chaos game of ``system (B, M, 2, 3)`` float64 along the map sequence ``maps (B, N)`` int64: ``(B, N, 2)``,
    point ``i`` = ``T_{maps[i]}`` applied to point ``i - 1``, point ``-1`` the fixed point of map 0 (not returned)."""
    b = maps.shape[0]
    a, bb, e = system[:, 0, 0, 0], system[:, 0, 0, 1], system[:, 0, 0, 2]
    c, d, f = system[:, 0, 1, 0], system[:, 0, 1, 1], system[:, 0, 1, 2]
    s = 1 / (1 + (a * d - bb * c) - a - d)  # ifs.iterate's fixed point of map 0
    start = torch.stack([s * ((1 - d) * e + bb * f), s * ((1 - a) * f + c * e)], -1)  # (B, 2)
    steps = system[torch.arange(b, device=maps.device)[:, None], maps]  # (B, N, 2, 3)
    prefix = prefix_compose(steps)  # step i: T_i o ... o T_0
    return (prefix[..., :2] @ start[:, None, :, None]).squeeze(-1) + prefix[..., 2]


def window_ndc(xy: torch.Tensor, canvas: int) -> torch.Tensor:
    """``(B, N, 2)`` float64 points -> ``(B, N, 3)`` float32 NDC as family svd2d places them (each axis's bounding box
    over ``canvas - 1`` pixels, the published row from x and column from y, z = 0)."""
    low, high = xy.amin(1, keepdim=True), xy.amax(1, keepdim=True)
    span = high - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    uv = (xy - low) * ((canvas - 1) / span)
    ndc = torch.stack([1.0 - (2.0 * uv[..., 1] + 1.0) / canvas, 1.0 - (2.0 * uv[..., 0] + 1.0) / canvas,
                       torch.zeros_like(uv[..., 0])], -1)
    return ndc.float()


def jittered_points(points: torch.Tensor, keys: torch.Tensor, system: torch.Tensor, singular_values: torch.Tensor,
                    num_maps: torch.Tensor, maps: torch.Tensor, canvas: int,
                    factor_range: tuple[float, float]) -> tuple[torch.Tensor, Jitter]:
    """Each image's points with its system jittered: ``points (B, N, 3)`` (the bank's) -> ``(B, N, 3)`` float32, and
    the draw.

    ``system``, ``singular_values``, ``num_maps``, ``maps`` are the images' rows of family svd2d's params. Images
    whose draws all failed keep the bank's points exactly.
    """
    jitter = draw_jitter(keys, singular_values, num_maps, factor_range)
    xy = replay(jittered_system(system, jitter), maps.long())
    moved = jitter.factor != 1
    return torch.where(moved[:, None, None], window_ndc(xy, canvas), points), jitter


class MapJitterReplay(nn.Module):
    """Family svd2d's per-image replay (``renderer.augment.map_jitter``): each image's own system with one map
    jittered, its chaos game replayed along the category's map sequence (see the module docstring).
    ``shade`` and ``keep`` are None; ``index``: ``(B, 1)`` the jittered map (its factor 1 where every draw failed,
    and then the points are the bank's exactly)."""

    NEEDS = ("system", "singular_values", "num_maps", "maps")  # family svd2d's params that the replay reads

    def __init__(self, bank: PointBank, factor_range: tuple[float, float]):
        super().__init__()
        missing = [k for k in self.NEEDS if k not in bank.params]
        if missing:  # a bank cached by a development version
            raise ConfigError(f"config key 'renderer.augment.map_jitter': this svd2d bank lacks {missing} (cached by "
                              "an earlier version); rebuild it: tools/make_bank.py --config ... --rebuild")
        for k in self.NEEDS:
            self.register_buffer(f"ifs_{k}", bank.params[k].clone(), persistent=False)
        self.canvas = int(bank.settings["svd2d"]["canvas"])
        self.factor_range = factor_range

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor, base: torch.Tensor) -> InstanceDraw:
        points, jitter = jittered_points(
            base, keys, self.ifs_system[class_ids], self.ifs_singular_values[class_ids], self.ifs_num_maps[class_ids],
            self.ifs_maps[class_ids], self.canvas, self.factor_range)
        return InstanceDraw(points, None, jitter.map_index[:, None])


def build(bank: PointBank, cfg: RendererConfig) -> nn.Module | None:
    """Family svd2d's drawer builder (``Family.drawer``): the replay when ``renderer.augment.map_jitter`` is on."""
    jitter = cfg.augment.map_jitter
    return None if jitter == (1.0, 1.0) else MapJitterReplay(bank, jitter)
