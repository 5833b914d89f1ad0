"""Family ``ifs3d``: one 3D iterated function system (IFS) per category, as in 3D-OFDB.

A category is an IFS of 2-7 affine maps ``x -> A x + b`` (12 parameters each). Its point cloud comes from the
chaos game: start at the origin, repeatedly apply a map drawn with probability proportional to ``|det A|``,
discard a burn-in, keep ``num_points`` points. The cloud is centred on its centroid and divided by its largest
absolute coordinate, so it lies in ``[-1, 1]^3``. A system is kept only when the variance along every axis
exceeds ``min_variance`` and every point is finite; most random draws diverge or collapse onto a line.

Everything is vectorised over thousands of candidate systems at once: the Python loop runs over chaos-game
steps, never over systems or points. Candidates are drawn in chunks of fixed size from one seeded generator and
accepted in draw order, so the bank is a pure function of its settings, and a bank with fewer classes is a
prefix of one with more. Candidates are screened on the first ``SCREEN_POINTS`` points of their own chaos game
(a cheap test at half the threshold that discards the ~90% of draws that diverge or collapse); the survivors
then run the full game, and the filter is decided on float64 running statistics of the full cloud (its
centroid, per-axis variance and extent), which is the variance of the centred, rescaled cloud. Only the
accepted systems are run a third time to keep their points.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from dr_fdsl.errors import BankError
from dr_fdsl.families.base import FamilyOutput
from dr_fdsl.families.ifs3d.settings import POINTS_GROUP, ROUND_SURVIVORS
from dr_fdsl.geometry import quaternion_to_matrix
from dr_fdsl.textlog import Progress, say

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig

CHUNK = 8192  # candidate systems drawn and screened together; fixed so the bank does not depend on it
SCREEN_POINTS = 1000
SCREEN_RELAX = 0.5  # the screen keeps systems above this fraction of the threshold; the full run decides
GAME_GROUP = 2048  # screened systems run through the full game together between two progress reports
_MAX_DRAWS_PER_CLASS = 1000  # ~80 draws per kept system at the default threshold; beyond this, give up


# --------------------------------------------------------------------------------------------------------
# Sampling systems
# --------------------------------------------------------------------------------------------------------


def random_rotations(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``(n, 3, 3)`` rotation matrices, uniform over SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True))


def sample_systems(
    n: int, sampler: str, min_maps: int, max_maps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draws ``n`` candidate systems.

    Returns:
        affine: ``(n, max_maps, 3, 4)`` float64, zero beyond each system's map count.
        probs: ``(n, max_maps)`` float64, ``|det A|`` normalised (rows of zeros for degenerate systems).
        num_maps: ``(n,)`` int64.
    """
    num_maps = torch.randint(min_maps, max_maps + 1, (n,), generator=generator)
    if sampler == "uniform":
        affine = torch.rand(n, max_maps, 3, 4, generator=generator, dtype=torch.float64) * 2 - 1
    elif sampler == "svd":
        # A = R1 diag(s) R2 with singular values in (0, 1): every map contracts, none diverges.
        r1 = random_rotations(n * max_maps, generator).view(n, max_maps, 3, 3)
        r2 = random_rotations(n * max_maps, generator).view(n, max_maps, 3, 3)
        s = torch.rand(n, max_maps, 3, generator=generator, dtype=torch.float64)
        # A random sign on one singular value admits reflections (det < 0) as the uniform sampler does.
        flip = torch.randint(0, 2, (n, max_maps), generator=generator, dtype=torch.float64) * 2 - 1
        s[..., 2] *= flip
        linear = r1 @ torch.diag_embed(s) @ r2
        shift = torch.rand(n, max_maps, 3, 1, generator=generator, dtype=torch.float64) * 2 - 1
        affine = torch.cat([linear, shift], dim=-1)
    else:
        raise ValueError(f"sampler must be 'uniform' or 'svd', got {sampler!r}")
    used = torch.arange(max_maps) < num_maps[:, None]  # (n, max_maps)
    affine = affine * used[..., None, None]
    weight = torch.linalg.det(affine[..., :3]).abs() * used
    total = weight.sum(-1, keepdim=True)
    probs = torch.where(total > 0, weight / total.clamp_min(1e-300), torch.zeros_like(weight))
    return affine, probs, num_maps


# --------------------------------------------------------------------------------------------------------
# The chaos game
# --------------------------------------------------------------------------------------------------------


def _map_choices(probs: torch.Tensor, num_maps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF map choice. ``probs (M, K)``, ``u (T,)`` uniforms shared by all systems -> ``(T, M)``."""
    cdf = probs.cumsum(-1)[:, :-1]  # (M, K-1)
    choice = (u[:, None, None] >= cdf[None]).sum(-1)
    # Rounding can leave the cdf a hair under 1: never pick a map the system does not have.
    return torch.minimum(choice, num_maps[None] - 1)


def chaos_game(
    affine: torch.Tensor, probs: torch.Tensor, num_maps: torch.Tensor, u: torch.Tensor, burn_in: int,
    keep_points: bool, block: int = 256,
) -> torch.Tensor:
    """Iterates ``M`` systems at once on a shared uniform stream ``u (burn_in + T,)``.

    All systems read the same stream: each chain is still a valid chaos game, and a system's points depend only
    on its own parameters and the stream, so any subset of systems can be re-run alone and give the same points.

    Returns the kept points ``(M, T, 3)`` float64 when ``keep_points``, otherwise the running statistics
    ``(M, 4, 3)``: sum, sum of squares, min and max per axis over the ``T`` kept steps.
    """
    m, k = probs.shape
    steps = u.shape[0] - burn_in
    table = affine.reshape(m * k, 12)
    offset = torch.arange(m) * k
    x = torch.zeros(m, 3, dtype=affine.dtype)
    if keep_points:
        out = torch.empty(m, steps, 3, dtype=affine.dtype)
    else:
        total = torch.zeros(m, 3, dtype=affine.dtype)
        total_sq = torch.zeros_like(total)
        lo = torch.full_like(total, math.inf)
        hi = torch.full_like(total, -math.inf)
    with torch.no_grad():
        for start in range(0, u.shape[0], block):
            # Map choices for a block of steps at once; bounded memory for any number of systems.
            choices = _map_choices(probs, num_maps, u[start:start + block]) + offset
            for t, choice in enumerate(choices, start):
                maps = table.index_select(0, choice).view(m, 3, 4)
                # Elementwise multiply-and-sum (not bmm) so the result is bitwise the same on any thread count.
                x = (maps[..., :3] * x[:, None, :]).sum(-1) + maps[..., 3]
                if t < burn_in:
                    continue
                if keep_points:
                    out[:, t - burn_in] = x
                else:
                    total += x
                    total_sq.addcmul_(x, x)
                    torch.minimum(lo, x, out=lo)
                    torch.maximum(hi, x, out=hi)
    if keep_points:
        return out
    return torch.stack([total, total_sq, lo, hi], dim=1)


def normalized_variance(stats: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-axis variance ``(M, 3)`` of clouds after centring and scaling to ``[-1, 1]``, from running stats.

    Non-finite clouds give NaN, which fails every ``>`` test.
    """
    total, total_sq, lo, hi = stats.unbind(1)
    mean = total / steps
    var = (total_sq / steps - mean * mean).clamp_min(0)
    scale = torch.maximum(hi - mean, mean - lo).amax(-1, keepdim=True)
    return var / (scale * scale)


def normalize_cloud(points: torch.Tensor) -> torch.Tensor:
    """Centres ``(M, T, 3)`` clouds on their centroid and divides by the largest absolute coordinate."""
    centred = points - points.mean(dim=1, keepdim=True)
    scale = centred.abs().amax(dim=(1, 2), keepdim=True)
    return centred / scale


# --------------------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------------------


def generate(cfg: BankConfig, progress: bool = False, max_draws: int | None = None) -> FamilyOutput:
    """Draws systems until ``cfg.num_classes`` pass the filter (no cache). See the module docstring.

    Returns points ``(C, N, 3)`` and params ``affine (C, M, 3, 4)`` float64 (map ``m`` is ``[A | b]``, unused
    maps zero), ``probs (C, M)`` float64 (proportional to ``|det A|``, zero for unused maps) and ``num_maps (C,)``
    int64, with ``M = max_maps``.
    """
    f = cfg.ifs3d
    if max_draws is None:
        max_draws = max(100_000, _MAX_DRAWS_PER_CLASS * cfg.num_classes)
    gen = torch.Generator().manual_seed(cfg.seed)
    u = torch.rand(f.burn_in + cfg.num_points, generator=gen, dtype=torch.float64)
    screen_u = u[: f.burn_in + min(SCREEN_POINTS, cfg.num_points)]
    kept: list[tuple[torch.Tensor, ...]] = []
    num_kept = draws = 0
    survivors_per_kept = 12.0  # running estimate, only sizes the rounds; never changes which systems are kept
    bar = tqdm(total=cfg.num_classes, desc="fractal bank", unit="class", disable=not progress)
    progress_line = Progress("fractal bank", cfg.num_classes, unit="category")
    while num_kept < cfg.num_classes:
        # One round: screen chunks until enough survivors are expected, then run their full game together
        # (the loop over steps costs per step, not per system, so one large run beats many small ones).
        want = min(ROUND_SURVIVORS, int(survivors_per_kept * (cfg.num_classes - num_kept) * 1.2) + 64)
        survivors: list[tuple[torch.Tensor, ...]] = []
        num_survivors = 0
        while num_survivors < want and draws < max_draws:
            affine, probs, num_maps = sample_systems(CHUNK, f.sampler, f.min_maps, f.max_maps, gen)
            draws += CHUNK
            stats = chaos_game(affine, probs, num_maps, screen_u, f.burn_in, keep_points=False)
            var = normalized_variance(stats, screen_u.shape[0] - f.burn_in)
            alive = (var > SCREEN_RELAX * f.min_variance).all(-1) & (probs.sum(-1) > 0)
            survivors.append((affine[alive], probs[alive], num_maps[alive]))
            num_survivors += int(alive.sum())
        if num_survivors:
            affine, probs, num_maps = (torch.cat(parts) for parts in zip(*survivors))
            # The full game in groups, so that the categories accepted so far are reported as they come (a
            # system's statistics depend only on it and the stream: any grouping gives the same ones); groups of
            # GAME_GROUP keep the per-step cost of the loop small beside its arithmetic.
            found, accepted = [], 0
            for i in range(0, num_survivors, GAME_GROUP):
                group = slice(i, i + GAME_GROUP)
                stats = chaos_game(affine[group], probs[group], num_maps[group], u, f.burn_in, keep_points=False)
                good = (normalized_variance(stats, cfg.num_points) > f.min_variance).all(-1)
                good &= torch.isfinite(stats).all(dim=(1, 2))
                found.append(good.nonzero().squeeze(-1) + i)
                new = min(int(good.sum()), cfg.num_classes - num_kept - accepted)
                accepted += new
                bar.update(new)
                say(progress_line.line(num_kept + accepted, draws=draws))
                if num_kept + accepted >= cfg.num_classes:
                    break  # the rest of the round would be cut off below
            good = torch.cat(found)
            survivors_per_kept = min(i + GAME_GROUP, num_survivors) / max(good.numel(), 1)
            good = good[: cfg.num_classes - num_kept]
            kept.append((affine[good], probs[good], num_maps[good]))
            num_kept += good.numel()
        if num_kept < cfg.num_classes and draws >= max_draws:
            bar.close()
            raise BankError(
                f"only {num_kept} of {cfg.num_classes} systems passed bank.ifs3d.min_variance={f.min_variance} in "
                f"{draws} draws; lower bank.ifs3d.min_variance (the 3D-OFDB value is 0.05) or try "
                "bank.ifs3d.sampler=svd")
    bar.close()
    affine, probs, num_maps = (torch.cat(parts) for parts in zip(*kept))
    say(f"fractal bank: {num_kept} categories accepted from {draws} draws; generating their points")
    # The accepted systems' points, in groups to bound memory (float64 during the game).
    points = torch.cat([
        normalize_cloud(chaos_game(affine[i:i + POINTS_GROUP], probs[i:i + POINTS_GROUP],
                                   num_maps[i:i + POINTS_GROUP], u, f.burn_in, keep_points=True)).float()
        for i in range(0, num_kept, POINTS_GROUP)
    ])
    return FamilyOutput(points, {"affine": affine, "probs": probs, "num_maps": num_maps}, draws)
