"""``PointRenderer``: the bank's point sets with learnable per-point colours and radii, drawn in the training step."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dr_fdsl.bank import PointBank
from dr_fdsl.errors import ConfigError
from dr_fdsl.render import augment, multi
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.background import diamond_square
from dr_fdsl.render.composite import render_scene
from dr_fdsl.render.instances import build_instances
from dr_fdsl.render.point_ops import Points, SceneContext, run_point_ops
from dr_fdsl.render.settings import RendererConfig, table_param, validate_against_bank, validate_renderer
from dr_fdsl.render.streams import Stream
from dr_fdsl.render.structures import OFFSCREEN, Scene

# Squashed parameterisations cannot reach their bounds: initial values are kept this far inside them.
# White is then 1 - 1e-3, which still quantises to 255 in 8 bits.
_INIT_MARGIN = 1e-3


def squash(t: torch.Tensor) -> torch.Tensor:
    """The algebraic sigmoid ``1/2 + t / (2 sqrt(1 + t^2))``: R -> (0, 1), smooth and monotone.

    Unlike ``torch.sigmoid`` it uses only correctly rounded IEEE operations, whose vectorised and scalar CPU paths
    agree, so a value does not depend on where it sits in a tensor: rendering only the rows a batch touches
    stays bit-for-bit independent of the rest of the batch.
    """
    return 0.5 + 0.5 * (t / torch.sqrt(1.0 + t * t))


def unsquash(p: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squash` for ``p`` in (0, 1) (kept ``_INIT_MARGIN`` inside the bounds)."""
    q = 2 * p.clamp(_INIT_MARGIN, 1 - _INIT_MARGIN) - 1
    return q / torch.sqrt(1 - q * q)


def bounded(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x`` clamped to ``[low, high]`` in value, with gradient 1 everywhere (straight through).

    A ``residual`` table is projected back into its bounds after every step (:meth:`PointRenderer.project_`), but
    the projected base + delta can round one ulp past the bound, where a plain clamp's gradient is 0 for good: the
    straight-through form keeps every entry learning. Inside the bounds the value is ``x`` bit for bit; past them,
    ``x + (bound - x)`` is the bound exactly (the difference of two nearby floats is exact).
    """
    return x + (x.clamp(low, high) - x).detach()


def initial_colors(cfg: RendererConfig, tables: int, num_points: int, generator: torch.Generator,
                   bank_grey: torch.Tensor | None = None) -> torch.Tensor:
    """Initial colours ``(tables, N, 3)`` in [0, 1] for ``cfg.color_init``; ``"bank"`` takes ``bank_grey (C, N)``
    (the bank's ``grey`` param, which ``render.settings.validate_against_bank`` requires) on all three channels."""
    if cfg.color_init == "bank":
        if bank_grey.shape != (tables, num_points):
            raise ConfigError(f"config key 'renderer.color_init': the bank's grey levels have shape "
                              f"{tuple(bank_grey.shape)}, expected {(tables, num_points)} (renderer.share_colors "
                              "must be false)")
        return bank_grey.float()[..., None].expand(-1, -1, 3).clone()
    if cfg.color_init == "white":
        return torch.ones(tables, num_points, 3)
    if cfg.color_init == "grey":
        return torch.full((tables, num_points, 3), 0.5)
    if cfg.color_init == "random":
        return torch.rand(tables, num_points, 3, generator=generator)
    palette = torch.rand(tables, cfg.palette_size, 3, generator=generator)
    choice = torch.randint(0, cfg.palette_size, (tables, num_points), generator=generator)
    return torch.gather(palette, 1, choice[..., None].expand(-1, -1, 3))


class Rendered(NamedTuple):
    """images: ``(B, 3, H, W)`` float32 in [0, 1]. rows: ``(R,)`` int64, sorted, the categories whose colour and
    radius rows the images read (the drawn ones and, under mixing, the mixed-in ones)."""

    images: torch.Tensor
    rows: torch.Tensor


def _picked(values: torch.Tensor, pick: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``values (R, N, W)`` at the flat rows ``pick (B * N,)`` of its ``(R * N, W)`` view: ``(*shape, W)``."""
    return values.reshape(-1, values.shape[-1]).index_select(0, pick).view(*shape, values.shape[-1])


def _project_rows(table: torch.Tensor, rows: torch.Tensor | None, project) -> None:
    """``project(values, rows)`` in place on ``table``'s ``rows`` (all of it when None, or when the table is one
    shared row)."""
    if rows is None or table.shape[0] == 1:
        project(table, None)
    else:
        table[rows] = project(table[rows], rows)


class PointRenderer(nn.Module):
    """Renders (category, view seed) pairs of a bank, differentiably in colours and radii.

    Parameters, one row per category (``share_*`` makes a single row that every category uses):
        color_logits: ``(C, N * 3)``, point-major RGB; colours by ``color_param`` (:meth:`color_values`):
            ``residual`` (the default of a learnable renderer): ``clamp(color_start + color_logits, 0, 1)``, the
            entries starting at 0; ``squash``: ``squash(color_logits)`` in (0, 1); ``clamp``: the colours themselves.
        radius_logits: ``(C, N)``; radii by ``radius_param``: ``residual``: ``clamp(radius_init + span *
            radius_logits, radius_min, radius_max)``, from 0; ``squash``: ``radius_min + span * squash(radius_logits)``
            (span: ``radius_max - radius_min``).
    Buffers (non-persistent: rebuilt from the config, never checkpointed), when the tables learn or a table is
    ``residual``: color_start ``(C, N * 3)``, the initial colours (the residual's base, and what
    :meth:`table_statistics` measures drift from).

    A forward pass reads only the rows of the categories it draws (``F.embedding``); in a trainable renderer the
    gradients are row-sparse, so synchronising and stepping them costs in proportion to those categories
    (1,000 categories x 10,000 points are 40 M values; a batch touches at most a few hundred rows).

    The bank's points ``(C, N, 3)`` are a non-persistent buffer: they move with the module but are rebuilt from
    the bank's settings rather than stored in checkpoints. (The renderer is never wrapped in DDP, so nothing
    broadcasts them.) With ``cfg.mode == "frozen"`` no parameter requires grad and the renderer draws the classic
    static dataset.

    Example:
        >>> renderer = PointRenderer(build_bank(num_classes=10, num_points=2000))
        >>> images = renderer(torch.tensor([0, 3]), torch.tensor([17, 17]))  # (2, 3, 224, 224) in [0, 1]
    """

    def __init__(self, bank: PointBank, cfg: RendererConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else RendererConfig()
        self.num_classes, self.num_points = bank.num_classes, bank.num_points
        # The checks that load_config runs, here against this bank (a config built in Python, a cached bank).
        validate_renderer(cfg)
        validate_against_bank(cfg, bank.settings, self.num_classes, self.num_points, "grey" in bank.params)
        # A bank whose categories share one point set stores it expanded (stride 0; family onepfrac, whose
        # categories are made per image by its drawer): one row here, so C categories cost one set's memory.
        points = bank.points.float()
        self.register_buffer("points", points[:1].clone() if points.stride(0) == 0 else points.clone(),
                             persistent=False)
        gen = torch.Generator().manual_seed(cfg.init_seed)
        color_tables = 1 if cfg.share_colors else self.num_classes
        radius_tables = 1 if cfg.share_radii else self.num_classes
        colors = initial_colors(cfg, color_tables, self.num_points, gen, bank.params.get("grey"))
        self.color_param, self.radius_param = table_param(cfg, "color_param"), table_param(cfg, "radius_param")
        table = {"clamp": colors, "squash": unsquash(colors), "residual": torch.zeros_like(colors)}[self.color_param]
        self.color_logits = nn.Parameter(rearrange(table, "t n c -> t (n c)"))
        if cfg.mode != "frozen" or self.color_param == "residual":
            self.register_buffer("color_start", rearrange(colors, "t n c -> t (n c)").clone(), persistent=False)
        else:
            self.color_start = None
        span = cfg.radius_max - cfg.radius_min
        fraction = (cfg.radius_init - cfg.radius_min) / span if span > 0 else 0.5
        if self.radius_param == "residual":
            self.radius_logits = nn.Parameter(torch.zeros(radius_tables, self.num_points))
        else:
            self.radius_logits = nn.Parameter(unsquash(torch.full((radius_tables, self.num_points), fraction)))
        # Every radius starts at this value (radius_init, or its squashed image 1e-3 inside the range)
        self.radius_start = float(self._radius(self.radius_logits[:1, :1].detach()))
        self.requires_grad_(cfg.mode != "frozen")
        # The family's per-image points (bank.<family>.instances, renderer.augment.map_jitter), drawn in the step
        self.instances = build_instances(bank, cfg)
        if cfg.perturbation.on and not cfg.perturbation.tables:  # the drawer's learnt perturbation alone trains
            self.color_logits.requires_grad_(False)
            self.radius_logits.requires_grad_(False)

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    def colors(self) -> torch.Tensor:
        """Colour tables ``(C or 1, N, 3)`` float32 in (0, 1) (in [0, 1] with ``color_param: clamp`` or
        ``residual``)."""
        return rearrange(self.color_values(self.color_logits, self.color_start), "t (n c) -> t n c", c=3)

    def color_values(self, logits: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
        """Colours from colour-table entries, by ``color_param``; ``start``: the same entries of ``color_start``
        (read by ``residual`` only).

        ``residual`` (the default where the tables learn) holds the change from the initial colour, bounded by
        :func:`bounded`: the slope is 1 wherever a colour starts, white included, so one step of SparseAdam (about
        ``renderer.lr`` per entry) moves white, grey and palette colours alike, and the initial colours are exact.

        ``squash`` (default) keeps every colour strictly inside (0, 1) with a smooth, never-flat map, so the
        initial values sit ``_INIT_MARGIN`` inside the bounds (white is 0.999). ``clamp`` holds the colours
        themselves: every initial colour is exact (white is 1.0), which a published render needs to be matched to
        1e-5 (the contest's white points; 0.999 would be off by 1e-3). A smooth bounded map cannot reach its
        bound with a non-zero slope, so exactness at white needs a clamp; to keep the clamp from freezing colours
        that step past a bound (zero gradient beyond it), :meth:`project_` puts them back on the bound after each
        renderer step: projected gradient descent, whose colours always lie in [0, 1] and always get gradients.
        """
        if self.color_param == "residual":
            return bounded(start + logits, 0.0, 1.0)
        return logits.clamp(0, 1) if self.color_param == "clamp" else squash(logits)

    @torch.no_grad()
    def project_(self, changed: dict[str, torch.Tensor | None] | None = None) -> None:
        """After a renderer optimiser step: colours back into [0, 1] (``color_param: clamp`` or ``residual``) and
        ``residual`` radii back into [radius_min, radius_max]; nothing for ``squash``. Entries already inside are
        untouched, so categories a step did not draw stay bit-identical.

        Args:
            changed: from :meth:`changed_rows` before the step: per table (``"color"``, ``"radius"``) the only rows
                the step can have moved (SparseAdam moves no other; None: all), a table left out unmoved. Every
                other entry is inside its bounds already, so projecting these alone gives the same tables at the
                cost of those rows, not of the whole tables every step. None: every table, whole.
        """
        changed = {"color": None, "radius": None} if changed is None else changed
        if self.color_param in ("clamp", "residual") and "color" in changed:
            _project_rows(self.color_logits, changed["color"], self._project_colors)
        span = self.cfg.radius_max - self.cfg.radius_min
        if self.radius_param == "residual" and span > 0 and "radius" in changed:
            r0 = self.cfg.radius_init
            low, high = (self.cfg.radius_min - r0) / span, (self.cfg.radius_max - r0) / span
            _project_rows(self.radius_logits, changed["radius"], lambda logits, _: logits.clamp_(low, high))
        if hasattr(self.instances, "project_"):  # a drawer's own learnt parameters (renderer.perturbation)
            self.instances.project_()

    def _project_colors(self, logits: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        if self.color_param == "clamp":
            return logits.clamp_(0, 1)
        start = self.color_start if rows is None else self.color_start[rows]
        torch.maximum(logits, -start, out=logits)
        return torch.minimum(logits, 1 - start, out=logits)

    def changed_rows(self) -> dict[str, torch.Tensor | None]:
        """What an optimiser step about to be taken can move, for :meth:`project_`: per table with a gradient
        (``"color"``, ``"radius"``) the rows of its row-sparse gradient ``(R,)`` int64 (None: a dense gradient,
        every row). A table without a gradient is left out: SparseAdam does not touch it."""
        out = {}
        for name, table in (("color", self.color_logits), ("radius", self.radius_logits)):
            if table.grad is not None:
                out[name] = table.grad.coalesce().indices()[0] if table.grad.is_sparse else None
        return out

    def radii(self) -> torch.Tensor:
        """Radius tables ``(C or 1, N)`` float32 in [radius_min, radius_max], NDC units."""
        return self._radius(self.radius_logits)

    def _radius(self, logits: torch.Tensor) -> torch.Tensor:
        """Radii from radius-table entries, by ``radius_param`` (see :meth:`color_values`)."""
        lo, hi = self.cfg.radius_min, self.cfg.radius_max
        if self.radius_param == "residual":
            return bounded(self.cfg.radius_init + (hi - lo) * logits, lo, hi)
        return lo + (hi - lo) * squash(logits)

    @torch.no_grad()
    def table_statistics(self) -> dict[str, float]:
        """What the tables learnt, for colours and radii (``{part}`` = ``color`` or ``radius``), over whole tables:

        ``renderer/{part}_drift``: the mean absolute change of a value from its initial value (0 in mode frozen).
        ``renderer/{part}_between``: the spread (std) over categories of the per-category mean (per channel, root
        mean square over channels; 0 for a shared table).
        ``renderer/{part}_code``: ``_between`` over the within-category spread (the std over a category's points,
        root mean square over categories and channels; floored at 1e-3 of the value's range, so that tables that
        all start at one value read 0 until they move): how much of a label code the tables could carry.

        Values are the tables' own (before any point operation); cost: a few passes over the tables. A drawer's own
        learnt values join them (``renderer/perturbation``: :meth:`OnePFracReplay.statistics
        <dr_fdsl.families.onepfrac.instances.OnePFracReplay.statistics>`).
        """
        span = self.cfg.radius_max - self.cfg.radius_min
        colors, radii = self.colors(), self.radii()[..., None]  # (T, N, 3), (T, N, 1)
        color_start = None if self.color_start is None else rearrange(self.color_start, "t (n c) -> t n c", c=3)
        out = {}
        for part, values, start, scale in (("color", colors, color_start, 1.0),
                                           ("radius", radii, self.radius_start, span)):
            drift = 0.0 if start is None or self.cfg.mode == "frozen" else float((values - start).abs().mean())
            means = values.mean(1)  # (T, W)
            between = float(means.var(0, unbiased=False).mean().sqrt()) if len(means) > 1 else 0.0
            within = float(values.var(1, unbiased=False).mean().sqrt())
            out[f"renderer/{part}_drift"] = drift
            out[f"renderer/{part}_between"] = between
            out[f"renderer/{part}_code"] = between / max(within, 1e-3 * scale) if scale > 0 else 0.0
        if hasattr(self.instances, "statistics"):  # a drawer's learnt values (renderer/perturbation)
            out.update(self.instances.statistics())
        return out

    def _rows(self, table: nn.Parameter, rows: torch.Tensor) -> torch.Tensor:
        """Rows of a parameter table, with a row-sparse gradient when the table trains."""
        return F.embedding(rows, table, sparse=table.requires_grad)

    def drift(self, rows: torch.Tensor, anchors: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean squared distance of ``rows`` (``Rendered.rows``) from ``anchors`` (initial colour and radius
        logits): a scalar whose gradient touches only those rows."""
        total = 0.0
        for table, anchor in zip((self.color_logits, self.radius_logits), anchors):
            mine = rows if table.shape[0] > 1 else torch.zeros_like(rows[:1])
            total = total + ((self._rows(table, mine) - anchor[mine]) ** 2).mean()
        return total

    def scene(self, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> tuple[Scene, torch.Tensor]:
        """Everything but the drawing: the bank's points gathered with their colours and radii, then the point
        operations in the order of :func:`~dr_fdsl.render.point_ops_settings.pipeline` (sub-sampling, the family's
        per-image points, corruptions, PointWOLF, scale, shift, jitter, camera, projection, window, depth hue, point
        size), then the dropped points moved off screen; returns the scene and the ``(R,)`` table rows it reads (see
        :class:`Rendered`). The scene holds the bank's ``N`` points per image, plus ``augment.add_global +
        augment.add_local`` added ones.

        Args:
            class_ids: ``(B,)`` int64 in ``[0, C)``.
            view_seeds: ``(B,)`` int64, any value; with the category it determines every random choice.
        """
        if class_ids.shape != view_seeds.shape or class_ids.ndim != 1:
            raise ValueError(f"class_ids and view_seeds must both be (B,), got {tuple(class_ids.shape)} and "
                             f"{tuple(view_seeds.shape)}")
        if class_ids.numel() and not 0 <= int(class_ids.min()) <= int(class_ids.max()) < self.num_classes:
            raise ValueError(f"class_ids must lie in [0, {self.num_classes}), got {class_ids.tolist()[:8]}...")
        device = self.points.device
        class_ids, view_seeds = class_ids.to(device), view_seeds.to(device)
        keys = rnd.image_keys(class_ids, view_seeds)
        points, mixed, rows = self._gather(class_ids, keys)
        points = run_point_ops(points, SceneContext(self.cfg, class_ids, keys, mixed, self.instances))
        offscreen = torch.tensor([OFFSCREEN, OFFSCREEN, 1.0], device=device)
        ndc = torch.where(points.keep[..., None], points.ndc, offscreen)
        return Scene(ndc, points.colors, points.radii, self._background(keys)), rows

    def _gather(self, class_ids: torch.Tensor, keys: torch.Tensor) -> tuple[Points, torch.Tensor, torch.Tensor]:
        """Each image's bank points with their colours and radii (all kept), before any point operation.

        Returns the :class:`Points` (``P = N``), ``mixed (B, N)`` bool (the points taken, under
        ``renderer.augment.mix``, from one other category, same index) and the ``(R,)`` table rows they read."""
        n = self.num_points
        other, mixed = augment.mix_partners(class_ids, keys, self.num_classes, n, self.cfg.augment)
        rows, inverse = torch.unique(torch.cat([class_ids, other]), return_inverse=True)
        source = torch.where(mixed, inverse[len(class_ids):, None], inverse[:len(class_ids), None])  # (B, N)
        # Each point's flat row in an (R * N, width) view: one index_select per table (advanced indexing with two
        # (B, N) indices is the same values, at several times the cost on CPU)
        pick = (source * n + torch.arange(n, device=keys.device)).reshape(-1)
        xyz = _picked(self.bank_points(rows), pick, source.shape)  # (B, N, 3)
        start = None if self.color_start is None else self._lookup(self.color_start, rows, pick, source.shape, 3)
        colors = self.color_values(self._lookup(self.color_logits, rows, pick, source.shape, 3), start)
        radii = self._radius(self._lookup(self.radius_logits, rows, pick, source.shape, 1).squeeze(-1))
        return Points(xyz, colors, radii, torch.ones_like(mixed)), mixed, rows

    def bank_points(self, class_ids: torch.Tensor) -> torch.Tensor:
        """The bank's points ``(B, N, 3)`` of ``class_ids (B,)`` (on the renderer's device)."""
        shared = self.points.shape[0] == 1 < self.num_classes
        return self.points.index_select(0, torch.zeros_like(class_ids) if shared else class_ids)

    def _lookup(self, table: torch.Tensor, rows: torch.Tensor, pick: torch.Tensor, shape: torch.Size,
                width: int) -> torch.Tensor:
        """Each point's entries ``(B, N, width)``: row ``rows[source]`` of ``table`` (a parameter or the start buffer
        beside it; row 0 if shared), ``pick (B * N,)`` the flat rows of :meth:`_gather`."""
        if table.shape[0] == 1:
            rows, pick = torch.zeros_like(rows[:1]), pick % self.num_points
        return _picked(rearrange(self._rows(table, rows), "r (n w) -> r n w", w=width), pick, shape)

    def _background(self, keys: torch.Tensor) -> torch.Tensor:
        cfg, b = self.cfg, keys.shape[0]
        if cfg.background == "color":
            return torch.tensor(cfg.background_color, device=keys.device).view(1, 3, 1, 1).expand(b, 3, 1, 1)
        if cfg.background == "random_color":
            return rnd.uniform(keys, Stream.BACKGROUND, (3, 1, 1))
        if cfg.background == "diamond_square":
            return diamond_square(keys, cfg.image_size, cfg.diamond_square_variant)
        size = cfg.image_size
        return cfg.background_noise * rnd.uniform(keys, Stream.BACKGROUND, (3, size, size))

    def render(self, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> Rendered:
        """Renders ``(B,)`` categories from ``(B,)`` view seeds: images and the table rows they read.

        Always float32, outside autocast (PyTorch3D's kernels are float32 only). Image rows run top to bottom
        and columns follow PyTorch3D's NDC (+x to the left).
        """
        with torch.autocast(device_type=self.points.device.type, enabled=False):
            if self.cfg.objects.max > 0:  # multi-instance images: every object's scene, composed
                device = self.points.device
                scene, rows = multi.compose(self.scene, class_ids.to(device), view_seeds.to(device), self.num_classes,
                                            self.cfg.objects)
            else:
                scene, rows = self.scene(class_ids, view_seeds)
            images = render_scene(scene, self.cfg.image_size, self.cfg.points_per_pixel, self.cfg.compositor,
                                  self.cfg.raster_backend)
        return Rendered(images, rows)

    def forward(self, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        """``render(...).images``: ``(B, 3, H, W)`` float32 in [0, 1]."""
        return self.render(class_ids, view_seeds).images

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, points={self.num_points}, image_size={self.cfg.image_size}, "
                f"mode={self.cfg.mode}, compositor={self.cfg.compositor}")

