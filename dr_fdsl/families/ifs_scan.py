"""The chaos game as a parallel prefix scan of affine maps: a category's cloud replayed with other maps.

A chaos-game trajectory from the origin is ``x_t = M_{k_t}(x_{t-1})``, ``M(x) = A x + b``, so ``x_t`` is the
translation part of the composition ``M_{k_t} o ... o M_{k_1}``. Compositions are associative: all ``T`` prefixes
come from ``ceil(log2 T)`` rounds of batched compositions (Hillis-Steele inclusive scan), each round composing every
prefix with the one ``2^r`` steps before it. This is what lets an instance of a category (its maps scaled by a
weight row) be generated on the device in the training step instead of stored: the map choices ``k_t`` are the
category's own, so point ``t`` of every instance has the same address (map-choice history) as point ``t`` of the
category's cloud, and per-point colours and radii follow the same part of the fractal across instances.

Layout: a map is ``(D, D + 1)``, ``[A | b]``; ``D`` is 2 or 3. A trajectory's maps are ``(B, T, D, D + 1)``.
The work is ``T log2 T`` small matrix products per cloud and the memory two ``(B, T, D, D + 1)`` buffers.
"""

from __future__ import annotations

import torch


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer o inner`` for maps ``(..., D, D + 1)`` (broadcasting): ``[A2 A1 | A2 b1 + b2]``."""
    d = outer.shape[-2]
    out = outer[..., :d] @ inner
    out[..., d] += outer[..., d]
    return out


def prefix_compose(maps: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix compositions along dim 1: ``out[:, t] = maps[:, t] o ... o maps[:, 0]``.

    Args:
        maps: ``(B, T, D, D + 1)`` float.
    Returns:
        ``(B, T, D, D + 1)``, same dtype; ``out[:, t, :, D]`` is the chaos-game point after step ``t + 1`` from the
        origin.
    """
    out = maps
    steps = maps.shape[1]
    span = 1
    while span < steps:
        # prefixes shorter than span are final; the others absorb the prefix that ends span steps earlier
        out = torch.cat([out[:, :span], compose(out[:, span:], out[:, :-span])], dim=1)
        span *= 2
    return out


def with_identity(maps: torch.Tensor, num_maps: torch.Tensor) -> torch.Tensor:
    """Maps ``(C, M, D, D + 1)`` with every slot at or beyond ``num_maps (C,)`` replaced by the identity, plus one
    more identity slot: ``(C, M + 1, D, D + 1)``. Map index ``num_maps`` is what the published selection gives a
    uniform above the last running probability sum, where the published loop repeats the previous point."""
    c, m, d, _ = maps.shape
    eye = torch.eye(d, d + 1, dtype=maps.dtype, device=maps.device)
    out = torch.cat([maps, eye.expand(c, 1, d, d + 1)], dim=1)
    unused = torch.arange(m + 1, device=maps.device)[None] >= num_maps.to(maps.device)[:, None]  # (C, M + 1)
    return torch.where(unused[..., None, None], eye, out)


def replay(maps: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """Chaos-game trajectories from the origin: ``(B, T, D)``, point ``t`` after ``t + 1`` steps (origin not kept).

    Args:
        maps: ``(B, M, D, D + 1)`` each trajectory's maps (see :func:`with_identity` for the repeat rule).
        choices: ``(B, T)`` integer map index per step, in ``[0, M)``.
    """
    b, t = choices.shape
    d = maps.shape[-2]
    index = choices.long()[..., None, None].expand(b, t, d, d + 1)
    return prefix_compose(torch.gather(maps, 1, index))[..., d]


def replay_sequential(maps: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """The obvious one-step-at-a-time chaos game, for checking :func:`replay`: same arguments and result."""
    b, t = choices.shape
    d = maps.shape[-2]
    x = torch.zeros(b, d, dtype=maps.dtype, device=maps.device)
    out = torch.empty(b, t, d, dtype=maps.dtype, device=maps.device)
    rows = torch.arange(b, device=maps.device)
    for step in range(t):
        m = maps[rows, choices[:, step].long()]
        x = (m[..., :d] @ x[..., None]).squeeze(-1) + m[..., d]
        out[:, step] = x
    return out
