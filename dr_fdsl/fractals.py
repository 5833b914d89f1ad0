"""The fractal category bank: one 3D iterated function system (IFS) per category, as in 3D-OFDB.

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
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dr_fdsl.config import BankConfig
from dr_fdsl.geometry import quaternion_to_matrix

BANK_FORMAT = 1
CHUNK = 8192  # candidate systems drawn and screened together; fixed so the bank does not depend on it
SCREEN_POINTS = 1000
SCREEN_RELAX = 0.5  # the screen keeps systems above this fraction of the threshold; the full run decides
ROUND_SURVIVORS = 16384  # screened systems run through the full game together (float64 stats only)
POINTS_GROUP = 1024  # accepted systems whose points are generated together
_MAX_DRAWS_PER_CLASS = 1000  # ~80 draws per kept system at the default threshold; beyond this, give up


class BankError(ValueError):
    """Settings that cannot produce a bank (with the fix in the message)."""


class BankCacheError(RuntimeError):
    """A cache file that cannot be read back; delete it or rebuild."""


@dataclass
class FractalBank:
    """The categories of a formula-driven dataset.

    Attributes:
        points: ``(C, N, 3)`` float32, each cloud centred on its centroid, coordinates in ``[-1, 1]``.
        affine: ``(C, M, 3, 4)`` float64, map ``m`` of class ``c`` is ``[A | b]``; unused maps (``m >=
            num_maps[c]``) are zero.
        probs: ``(C, M)`` float64, map probabilities (proportional to ``|det A|``, zero for unused maps).
        num_maps: ``(C,)`` int64 in ``[min_maps, max_maps]``.
        settings: the ``BankConfig`` fields (minus ``cache_dir``) that determine the bank.
        draws: how many candidate systems were drawn to find these ``C``.
    """

    points: torch.Tensor
    affine: torch.Tensor
    probs: torch.Tensor
    num_maps: torch.Tensor
    settings: dict
    draws: int

    @property
    def num_classes(self) -> int:
        return self.points.shape[0]

    @property
    def num_points(self) -> int:
        return self.points.shape[1]


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
        raise BankError(f"bank.sampler must be 'uniform' or 'svd', got {sampler!r}")
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
# Building, caching, loading
# --------------------------------------------------------------------------------------------------------


def _settings(cfg: BankConfig) -> dict:
    settings = asdict(cfg)
    settings.pop("cache_dir")
    return settings


def check_settings(cfg: BankConfig) -> None:
    """Fails fast on settings that cannot produce a bank."""
    if cfg.num_classes <= 0:
        raise BankError(f"bank.num_classes must be positive, got {cfg.num_classes}")
    if cfg.num_points <= 0:
        raise BankError(f"bank.num_points must be positive, got {cfg.num_points}")
    if cfg.burn_in < 0:
        raise BankError(f"bank.burn_in must be >= 0, got {cfg.burn_in}")
    if not 1 <= cfg.min_maps <= cfg.max_maps:
        raise BankError(f"need 1 <= bank.min_maps <= bank.max_maps, got {cfg.min_maps} and {cfg.max_maps}")
    # Coordinates in [-1, 1] have variance at most 1: a threshold of 1 or more is never passed.
    if not 0 <= cfg.min_variance < 1:
        raise BankError(f"bank.min_variance must be in [0, 1) (clouds are scaled to [-1, 1]), "
                        f"got {cfg.min_variance}")


def cache_path(cfg: BankConfig) -> Path:
    """The cache file for these settings: every setting that changes the bank is in its name."""
    name = (f"bank-v{BANK_FORMAT}-{cfg.sampler}-c{cfg.num_classes}-n{cfg.num_points}-s{cfg.seed}"
            f"-var{cfg.min_variance:g}-maps{cfg.min_maps}to{cfg.max_maps}-burn{cfg.burn_in}.pt")
    return Path(os.path.expanduser(cfg.cache_dir)) / name


def generate_bank(cfg: BankConfig, progress: bool = False, max_draws: int | None = None) -> FractalBank:
    """Draws systems until ``cfg.num_classes`` pass the filter (no cache). See the module docstring."""
    check_settings(cfg)
    if max_draws is None:
        max_draws = max(100_000, _MAX_DRAWS_PER_CLASS * cfg.num_classes)
    gen = torch.Generator().manual_seed(cfg.seed)
    u = torch.rand(cfg.burn_in + cfg.num_points, generator=gen, dtype=torch.float64)
    screen_u = u[: cfg.burn_in + min(SCREEN_POINTS, cfg.num_points)]
    kept: list[tuple[torch.Tensor, ...]] = []
    num_kept = draws = 0
    survivors_per_kept = 12.0  # running estimate, only sizes the rounds; never changes which systems are kept
    bar = tqdm(total=cfg.num_classes, desc="fractal bank", unit="class", disable=not progress)
    while num_kept < cfg.num_classes:
        # One round: screen chunks until enough survivors are expected, then run their full game together
        # (the loop over steps costs per step, not per system, so one large run beats many small ones).
        want = min(ROUND_SURVIVORS, int(survivors_per_kept * (cfg.num_classes - num_kept) * 1.2) + 64)
        survivors: list[tuple[torch.Tensor, ...]] = []
        num_survivors = 0
        while num_survivors < want and draws < max_draws:
            affine, probs, num_maps = sample_systems(CHUNK, cfg.sampler, cfg.min_maps, cfg.max_maps, gen)
            draws += CHUNK
            stats = chaos_game(affine, probs, num_maps, screen_u, cfg.burn_in, keep_points=False)
            var = normalized_variance(stats, screen_u.shape[0] - cfg.burn_in)
            alive = (var > SCREEN_RELAX * cfg.min_variance).all(-1) & (probs.sum(-1) > 0)
            survivors.append((affine[alive], probs[alive], num_maps[alive]))
            num_survivors += int(alive.sum())
        if num_survivors:
            affine, probs, num_maps = (torch.cat(parts) for parts in zip(*survivors))
            stats = chaos_game(affine, probs, num_maps, u, cfg.burn_in, keep_points=False)
            good = (normalized_variance(stats, cfg.num_points) > cfg.min_variance).all(-1)
            good &= torch.isfinite(stats).all(dim=(1, 2))
            good = good.nonzero().squeeze(-1)
            survivors_per_kept = num_survivors / max(good.numel(), 1)
            good = good[: cfg.num_classes - num_kept]
            kept.append((affine[good], probs[good], num_maps[good]))
            num_kept += good.numel()
            bar.update(good.numel())
        if num_kept < cfg.num_classes and draws >= max_draws:
            bar.close()
            raise BankError(
                f"only {num_kept} of {cfg.num_classes} systems passed bank.min_variance={cfg.min_variance} in "
                f"{draws} draws; lower bank.min_variance (the 3D-OFDB value is 0.05) or try sampler 'svd'")
    bar.close()
    affine, probs, num_maps = (torch.cat(parts) for parts in zip(*kept))
    # The accepted systems' points, in groups to bound memory (float64 during the game).
    points = torch.cat([
        normalize_cloud(chaos_game(affine[i:i + POINTS_GROUP], probs[i:i + POINTS_GROUP],
                                   num_maps[i:i + POINTS_GROUP], u, cfg.burn_in, keep_points=True)).float()
        for i in range(0, num_kept, POINTS_GROUP)
    ])
    return FractalBank(points, affine, probs, num_maps, _settings(cfg), draws)


def save_bank(bank: FractalBank, path: str | Path) -> Path:
    """Writes the bank with ``torch.save`` (tensors and plain types only), atomically (write, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"format": BANK_FORMAT, "settings": bank.settings, "draws": bank.draws, "points": bank.points,
                "affine": bank.affine, "probs": bank.probs, "num_maps": bank.num_maps}, tmp)
    os.replace(tmp, path)
    return path


def load_bank(path: str | Path, expect: dict | None = None) -> FractalBank:
    """Reads a bank written by :func:`save_bank` (``weights_only``: no pickle), checking its contents.

    Raises:
        BankCacheError: unreadable, truncated, of another format, or made with settings other than ``expect``.
    """
    path = Path(path)
    fix = (f"delete '{path}' or rebuild it: `python tools/make_bank.py --rebuild ...` or "
           f"`build_bank(..., rebuild=True)`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise BankCacheError(f"bank cache '{path}' is corrupt or unreadable ({type(err).__name__}: "
                             f"{str(err)[:200]}); {fix}") from err
    problem = None
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        problem = f"format is not {BANK_FORMAT}"
    elif expect is not None and data.get("settings") != expect:
        problem = f"settings {data.get('settings')} differ from the requested {expect}"
    else:
        s = data["settings"]
        c, n, m = s["num_classes"], s["num_points"], s["max_maps"]
        shapes = {"points": (c, n, 3), "affine": (c, m, 3, 4), "probs": (c, m), "num_maps": (c,)}
        for key, shape in shapes.items():
            value = data.get(key)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                problem = f"'{key}' is missing or not of shape {shape}"
                break
        else:
            if not torch.isfinite(data["points"]).all():
                problem = "points are not all finite"
    if problem:
        raise BankCacheError(f"bank cache '{path}' does not hold a valid bank: {problem}; {fix}")
    return FractalBank(data["points"], data["affine"], data["probs"], data["num_maps"], data["settings"],
                       int(data["draws"]))


def build_bank(
    num_classes: int = 1000,
    num_points: int = 10000,
    seed: int = 0,
    *,
    sampler: str = "uniform",
    min_variance: float = 0.05,
    min_maps: int = 2,
    max_maps: int = 7,
    burn_in: int = 100,
    cache_dir: str | None = "cache/banks",
    rebuild: bool = False,
    progress: bool = False,
) -> FractalBank:
    """The bank for these settings: read from the cache when present, else generated and cached.

    ``cache_dir=None`` neither reads nor writes a cache. ``rebuild=True`` regenerates and overwrites.
    """
    cfg = BankConfig(num_classes=num_classes, num_points=num_points, seed=seed, sampler=sampler,
                     min_variance=min_variance, min_maps=min_maps, max_maps=max_maps, burn_in=burn_in,
                     cache_dir=cache_dir or "")
    return bank_from_config(cfg, rebuild=rebuild, progress=progress, use_cache=cache_dir is not None)


def bank_from_config(cfg: BankConfig, rebuild: bool = False, progress: bool = False,
                     use_cache: bool = True) -> FractalBank:
    """:func:`build_bank` for a ``BankConfig`` (the ``bank`` section of a run's config)."""
    check_settings(cfg)
    path = cache_path(cfg)
    if use_cache and path.exists() and not rebuild:
        return load_bank(path, expect=_settings(cfg))
    bank = generate_bank(cfg, progress=progress)
    if use_cache:
        save_bank(bank, path)
    return bank
