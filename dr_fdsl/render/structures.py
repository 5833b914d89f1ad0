"""The render package's data types and constants.

Every cloud in a batch has the same number of points ``N``, so a point's packed index is ``b * N + n``. Points
that must not be drawn (sub-sampled away, behind the camera) are moved to ``OFFSCREEN`` instead of being removed,
which keeps the batch rectangular and every index stable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dr_fdsl.render.settings import MAX_POINTS_PER_PIXEL  # noqa: F401  (a renderer setting's bound, checked at load)

OFFSCREEN = 1.0e4  # NDC coordinate for points that must not be drawn (far outside every pixel and bin)


class Scene(NamedTuple):
    """A batch of clouds ready to draw.

    points: ``(B, N, 3)`` float32, NDC x, y (``OFFSCREEN`` for hidden points) and depth z > 0.
    colors: ``(B, N, 3)`` float32 in [0, 1], may require grad.
    radii: ``(B, N)`` float32 > 0, NDC units, may require grad.
    background: ``(B, 3, H, W)`` or ``(B, 3, 1, 1)`` float32 in [0, 1].
    """

    points: torch.Tensor
    colors: torch.Tensor
    radii: torch.Tensor
    background: torch.Tensor


class Fragments(NamedTuple):
    """PyTorch3D's per-pixel K nearest points, front to back.

    idx: ``(B, H, W, K)`` int64 packed point index, -1 where empty.
    zbuf: ``(B, H, W, K)`` float32 depth, -1 where empty.
    dists: ``(B, H, W, K)`` float32 squared NDC distance from pixel centre to point centre, -1 where empty.
    """

    idx: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor


class FragmentList(NamedTuple):
    """The occupied slots of :class:`Fragments`, ``F`` of them, in row-major order of ``(B, H, W)`` and, within a
    pixel, front to back: what compositing needs, without the empty slots (3% of the slots are occupied at 64 px,
    2,000 points, K=8).

    pixel: ``(F,)`` int64 flat pixel ``(b * H + row) * W + col``, non-decreasing.
    rank: ``(F,)`` int64 the fragment's place among its pixel's fragments, ``0, 1, ...`` from the front.
    idx: ``(F,)`` int64 packed point index. zbuf, dists: ``(F,)`` float depth and squared NDC distance.
    shape: ``(B, H, W, K)`` of the dense fragments.
    """

    pixel: torch.Tensor
    rank: torch.Tensor
    idx: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor
    shape: tuple[int, int, int, int]

    @classmethod
    def of(cls, fragments: Fragments) -> FragmentList:
        """The occupied slots of dense ``fragments``; ranks count the occupied slots of each pixel from the front
        (PyTorch3D fills slots ``0..n-1``, so a rank is the slot)."""
        valid = fragments.idx >= 0
        b, h, w, k = valid.shape
        flat = valid.reshape(-1, k)
        where = flat.nonzero()  # (F, 2): pixel, slot
        rank = (flat.cumsum(1) - 1)[where[:, 0], where[:, 1]]
        return cls(where[:, 0], rank, fragments.idx[valid], fragments.zbuf[valid], fragments.dists[valid],
                   (b, h, w, k))

    def dense(self) -> Fragments:
        """The :class:`Fragments` these slots come from (-1 in every empty slot)."""
        b, h, w, k = self.shape
        out = Fragments(*(torch.full((b, h, w, k), -1, dtype=t.dtype, device=t.device)
                          for t in (self.idx, self.zbuf, self.dists)))
        slot = self.pixel * k + self.rank
        for dense, sparse in zip(out, (self.idx, self.zbuf, self.dists)):
            dense.view(-1)[slot] = sparse
        return out
