"""ModelNet-C point-cloud corruptions the contest cites: drop-local, add-global, add-local; batched, per image.

Ren, Pan & Liu, "Benchmarking and Analyzing Point Cloud Classification under Corruptions" (ICML 2022), code
jiawei-ren/ModelNet-C ``build_modelnetc/corrupt_utils.py`` (commit 0c82ce0), functions ``corrupt_dropout_local``,
``corrupt_add_global`` and ``corrupt_add_local``. Their severity levels 0..4 use ``100 (level + 1)`` points for the
local ones and ``10 (level + 1)`` for add-global; here the number of points is the setting
(``renderer.augment.drop_local``, ``add_global``, ``add_local``).

* drop-local: ``C ~ randint(1, 8)`` clusters; each of the ``total`` dropped points is assigned to a cluster
  uniformly (``randint(C, size=total)``); cluster by cluster, a random remaining point is the centre and the ``K_c``
  remaining points nearest to it (itself included) are removed.
* add-global: points uniform in the unit ball (radius ``u^(1/3)``, ``cos(theta) ~ U(-1, 1)``, ``phi ~ U(0, 2 pi)``).
* add-local: ``C ~ randint(1, 8)`` clusters around ``C`` distinct random points of the cloud, sizes as above, each
  point the centre plus ``sigma N(0, I)`` with ``sigma ~ U(0.075, 0.125)`` per cluster; a point with ``|p|^2 > 1`` is
  divided by ``|p|^2`` (as published: by the squared norm, not the norm).

Ours: the cloud is whatever the image's kept points are at that stage (the contest's clouds are min-max scaled to
[-1, 1] and centred, not in the unit ball as ModelNet's), and removed points are masked, not deleted. An added
point is drawn like every other: it takes the colour and radius (learnable, with their gradients) of a *source*
point of the same cloud, its cluster's centre for add-local, a uniformly drawn kept point for add-global. Random
numbers are ours, per image from its key.
"""

from __future__ import annotations

import math

import torch

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.streams import Stream

MAX_CLUSTERS = 7  # randint(1, 8)


def uniform_ranks(u: torch.Tensor) -> torch.Tensor:
    """Each entry's rank in its row (0 for the smallest): ``(B, N)`` -> ``(B, N)`` int64. Ties go by position."""
    order = u.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(u.shape[1], device=u.device).expand_as(order))
    return ranks


def kept_point(keep: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A uniformly drawn kept point per uniform: ``keep (B, N)`` bool, ``u (B, A)`` in [0, 1) -> ``(B, A)`` int64
    (point 0 for an image with no kept point)."""
    count = keep.sum(1, keepdim=True)
    target = (u * count).long().clamp_max((count - 1).clamp_min(0))  # the target-th kept point, 0-based
    seen = keep.long().cumsum(1)  # (B, N)
    return torch.searchsorted(seen, target + 1).clamp_max(keep.shape[1] - 1)


def cluster_sizes(keys: torch.Tensor, count_stream: int, size_stream: int, total: int) -> torch.Tensor:
    """``randint(1, 8)`` clusters and ``total`` points assigned uniformly among them: ``(B, 7)`` int64 sizes (zero
    beyond the image's cluster count)."""
    clusters = (rnd.uniform(keys, count_stream, ()) * MAX_CLUSTERS).long().clamp_max(MAX_CLUSTERS - 1) + 1
    which = (rnd.uniform(keys, size_stream, (total,)) * clusters[:, None]).long()
    which = torch.minimum(which, clusters[:, None] - 1)
    sizes = torch.zeros(len(keys), MAX_CLUSTERS, dtype=torch.long, device=keys.device)
    return sizes.scatter_add_(1, which, torch.ones_like(which))


def drop_local(points: torch.Tensor, keep: torch.Tensor, keys: torch.Tensor, total: int) -> torch.Tensor:
    """ModelNet-C drop-local on the kept points: ``(B, N, 3)``, ``(B, N)`` bool -> the new ``keep (B, N)``."""
    if total <= 0:
        return keep
    sizes = cluster_sizes(keys, Stream.DROP_LOCAL, Stream.DROP_LOCAL_SIZES, total)
    centre_u = rnd.uniform(keys, Stream.DROP_LOCAL_CENTRES, (MAX_CLUSTERS,))
    rows = torch.arange(points.shape[0], device=points.device)
    for c in range(MAX_CLUSTERS):
        centre = points[rows, kept_point(keep, centre_u[:, c:c + 1])[:, 0]]  # (B, 3)
        dist = ((points - centre[:, None]) ** 2).sum(-1)
        rank = uniform_ranks(torch.where(keep, dist, math.inf))
        keep = keep & (rank >= sizes[:, c:c + 1])
    return keep


def add_global(keys: torch.Tensor, keep: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelNet-C add-global: ``count`` points uniform in the unit ball per image.

    Returns: positions ``(B, count, 3)`` float32, and source points ``(B, count)`` int64 (kept points whose colour
    and radius they take)."""
    u = rnd.uniform(keys, Stream.ADD_GLOBAL, (count, 3))
    radius = u[..., 0] ** (1 / 3)
    theta = torch.arccos(-1 + 2 * u[..., 1])
    phi = 2 * math.pi * u[..., 2]
    xyz = torch.stack([radius * torch.sin(theta) * torch.cos(phi), radius * torch.sin(theta) * torch.sin(phi),
                       radius * torch.cos(theta)], -1)
    return xyz, kept_point(keep, rnd.uniform(keys, Stream.ADD_GLOBAL_SOURCE, (count,)))


def add_local(points: torch.Tensor, keep: torch.Tensor, keys: torch.Tensor, count: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelNet-C add-local: ``count`` points in Gaussian clusters around distinct random kept points.

    Returns: positions ``(B, count, 3)`` float32 and their centres' indices ``(B, count)`` int64 (their sources)."""
    sizes = cluster_sizes(keys, Stream.ADD_LOCAL, Stream.ADD_LOCAL_SIZES, count)  # (B, 7)
    # Distinct centres: the kept points with the 7 smallest scores (published: the first C after a shuffle).
    score = torch.where(keep, rnd.uniform(keys, Stream.ADD_LOCAL_CENTRES, (keep.shape[1],)), 2.0)
    centres = score.argsort(dim=1, stable=True)[:, :MAX_CLUSTERS]  # (B, 7)
    # Added point j belongs to the cluster whose cumulative size first exceeds j (published: filled in order).
    cluster = torch.searchsorted(sizes.cumsum(1), torch.arange(count, device=keys.device).repeat(len(keys), 1),
                                 right=True)  # (B, count)
    sigma = rnd.uniform_range(keys, Stream.ADD_LOCAL_SIGMA, (0.075, 0.125), (MAX_CLUSTERS,))
    source = torch.gather(centres, 1, cluster)
    rows = torch.arange(points.shape[0], device=points.device)[:, None]
    xyz = points[rows, source] + torch.gather(sigma, 1, cluster)[..., None] * rnd.normal(
        keys, Stream.ADD_LOCAL_OFFSET, (count, 3))
    norm2 = (xyz**2).sum(-1, keepdim=True)
    return torch.where(norm2 > 1, xyz / norm2, xyz), source
