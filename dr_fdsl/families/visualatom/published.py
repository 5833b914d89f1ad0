"""VisualAtom categories and orbit vertices, draw for draw as the published generator makes them.

Reference: Takashima et al., "Visual Atoms: Pre-training Vision Transformers with Sinusoidal Waves", CVPR 2023; code
github.com/masora1030/CVPR2023-FDSL-on-VisualAtom, visual_atomic_renderer/render_VisualAtom.py, run by
make_VisualAtom.sh (20 processes, "thread" t = 0..19, each making 50 of the 1,000 categories).

What that script does (and what this module reproduces exactly, given the same seed):

* Random source: Python's ``random`` module (MT19937), ``random.seed(thread_num + 1)`` once per process. One stream
  serves the whole process, so a category's parameters come *after* every draw of all 1,000 instances of the
  categories before it in the same process. :func:`replay_thread` replays that stream; :class:`MersenneStream` is a
  word-exact re-implementation of the ``random.Random`` methods used, buffered through numpy's MT19937 so that the
  ~2.4e8 words of uniforms per category that nobody looks at can be skipped at C speed.
* Per category, in this order: K = randint(200, 1000) vertices; L = randint(1, 200) orbits ("lines");
  lambda = uniform(perlin_min, perlin_min + 4) noise amplitude; w = uniform(0, line_width); r0 = randint(radius_min,
  radius_min + 50) base radius (pixels at 512 px); n1 = randint(0, 20); n2 = randint(0, 20) redrawn while n2 == n1,
  except that when n1 == 0 the first n2 is kept (so n1 = n2 = 0 is possible, n1 = n2 != 0 is not);
  oval_x = uniform(1, oval_rate); oval_y = uniform(1, oval_rate).
* Per instance: the centre (y first, then x) = (512 + randint(-512, 512)) / 2, i.e. anywhere in [0, 512] in steps of
  0.5. The first instance's centre is drawn right after the category parameters, every later one right after the
  previous instance's orbits (and one more, unused, after the last instance).
* Per orbit (line), in order: a grey level randint(0, 255); K uniforms u ~ U(0, 10000) for x; K for y. With
  theta_v = (2 pi / K) * v, the noise N = pnoise1(u) * lambda - lambda - 0.5 sin(theta_v n1) - 0.5 sin(theta_v n2)
  moves each vertex *cumulatively*: x_v -= cos(theta_v) (N_x - w), y_v -= sin(theta_v) (N_y - w), starting from the
  ellipse x_v = cos(theta_v) r0 oval_x + cx, y_v = sin(theta_v) r0 oval_y + cy. Orbit l is drawn with the vertices
  after l + 1 updates.
* Drawing (not reproduced here): PIL, black 512 x 512 RGB canvas, every orbit a closed polygon (K segments, the last
  back to vertex 0) of ``ImageDraw.line(width=1)`` segments in (gray, gray, gray); PIL truncates the float coordinates
  toward zero and draws 1-pixel Bresenham lines without antialiasing; later orbits overwrite earlier ones.

Arithmetic is float64 in the same order as the script. Sines and cosines are evaluated with :mod:`math` (the C
library, like the script) rather than torch, whose vectorised sin/cos may differ in the last bit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dr_fdsl.families.visualatom.perlin import pnoise1


@dataclass(frozen=True)
class ScriptSettings:
    """The script's command-line knobs, named as in render_VisualAtom.py; defaults from make_VisualAtom.sh."""

    numof_classes: int = 1000
    numof_instances: int = 1000
    numof_thread: int = 20
    start_class: int = 0
    image_size: int = 512
    vertex_num_min: int = 200
    vertex_num_max: int = 1000
    perlin_min: int = 0
    line_width: float = 0.1
    radius_min: int = 10
    line_num_min: int = 1
    line_num_max: int = 200
    oval_rate: int = 2
    start_pos: int = 512
    nami_1_min: int = 0
    nami_2_min: int = 0
    nami_1_max: int = 20
    nami_2_max: int = 20

    @property
    def classes_per_thread(self) -> int:
        # The script uses int(numof_classes / numof_thread): with a remainder, the last classes are never made.
        return int(self.numof_classes / self.numof_thread)

    def locate(self, index: int) -> tuple[int, int]:
        """Category index -> (thread, position within that thread's run)."""
        thread, position = divmod(index - self.start_class, self.classes_per_thread)
        if index < self.start_class or thread >= self.numof_thread:
            raise ValueError(f"category {index} is not generated with this config")
        return thread, position

    @staticmethod
    def seed(thread: int) -> int:
        return thread + 1  # random.seed(args.thread_num + 1)


#: make_VisualAtom.sh, the published VisualAtom-1k recipe.
VISUALATOM_1K = ScriptSettings()
#: render_VisualAtom.py's argparse defaults (one process), which differ from the recipe in four knobs.
SCRIPT_DEFAULTS = ScriptSettings(numof_thread=1, perlin_min=2, line_width=0.01, radius_min=0)


class MersenneStream:
    """``random.Random(seed)``'s stream, with the few methods VisualAtom calls reproduced word for word.

    CPython's generator is MT19937; its 32-bit outputs are the same as numpy's ``MT19937.random_raw`` once numpy's
    state is set to Python's. Every method below consumes exactly the words CPython's would:
    ``random()`` two words (a >> 5, b >> 6, 53-bit float), ``getrandbits(k <= 32)`` one word (its top k bits),
    ``randint(a, b)`` one ``getrandbits(bit_length(b - a + 1))`` per try until the value is below b - a + 1.
    Words are buffered in chunks; skipping (within or past the buffer) costs ~2 ns per word.
    """

    def __init__(self, seed: int, chunk: int = 1 << 16):
        key = random.Random(seed).getstate()[1]  # (624 words, position): Python's own seeding (init_by_array)
        self._bitgen = np.random.MT19937()
        self._bitgen.state = {"bit_generator": "MT19937",
                              "state": {"key": np.array(key[:624], dtype=np.uint32), "pos": key[624]}}
        self._chunk = chunk
        self._buf = np.empty(0, dtype=np.uint64)  # random_raw's dtype; each value is one 32-bit word
        self._pos = 0
        self.consumed = 0  # words taken so far

    def _refill(self) -> None:
        self._buf = self._bitgen.random_raw(self._chunk)
        self._pos = 0

    def word(self) -> int:
        if self._pos >= len(self._buf):
            self._refill()
        w = self._buf.item(self._pos)
        self._pos += 1
        self.consumed += 1
        return w

    def words(self, n: int) -> np.ndarray:
        """The next n words, (n,) uint32."""
        have = len(self._buf) - self._pos
        if n <= have:
            out = self._buf[self._pos:self._pos + n]
            self._pos += n
        else:
            out = np.concatenate([self._buf[self._pos:], self._bitgen.random_raw(n - have)])
            self._pos = len(self._buf)
        self.consumed += n
        return out.astype(np.uint32)

    def skip(self, n: int) -> None:
        have = len(self._buf) - self._pos
        if n <= have:
            self._pos += n
        else:
            self._bitgen.random_raw(n - have, output=False)
            self._pos = len(self._buf)
        self.consumed += n

    def getrandbits(self, k: int) -> int:
        if not 1 <= k <= 32:
            raise ValueError("only 1..32 bits (one word) are reproduced")
        return self.word() >> (32 - k)

    def randint(self, a: int, b: int) -> int:
        n = b - a + 1
        k = n.bit_length()  # CPython's _randbelow_with_getrandbits: n, not n - 1 (so a power of two rejects half)
        r = self.getrandbits(k)
        while r >= n:
            r = self.getrandbits(k)
        return a + r

    def random(self) -> float:
        a, b = self.word() >> 5, self.word() >> 6
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()  # random.uniform, same expression and so the same rounding

    def randoms(self, n: int) -> np.ndarray:
        """n consecutive ``random()`` values, (n,) float64; exact because every step is exact in float64."""
        w = self.words(2 * n)
        a, b = (w[0::2] >> 5).astype(np.float64), (w[1::2] >> 6).astype(np.float64)
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)


@dataclass(frozen=True)
class CategoryParams:
    """One VisualAtom category (names of the script in brackets)."""

    index: int
    num_vertices: int  # K [vertex_number]
    num_orbits: int  # L [line_draw_num]
    noise_amp: float  # lambda [perlin_noise_coefficient]
    width: float  # w [line_width]: added to every vertex's outward step
    radius: int  # r0 [start_rad], pixels at 512 px
    n1: int  # [nami1]
    n2: int  # [nami2]
    oval_x: float  # [oval_rate_x]
    oval_y: float  # [oval_rate_y]


@dataclass(frozen=True)
class InstanceDraws:
    """The random numbers of one instance. centre: (x, y) pixels; grays: (L,) int64 in [0, 255];
    u: (L, 2, K) float64 in [0, 10000), the pnoise1 arguments for x (u[:, 0]) and y (u[:, 1])."""

    centre: tuple[float, float]
    grays: np.ndarray
    u: np.ndarray


@dataclass(frozen=True)
class PublishedCategory:
    """A category as replayed: its parameters, every instance's centre ((numof_instances, 2) float64, (x, y)), and
    the full draws of the instances that were asked for."""

    params: CategoryParams
    centres: np.ndarray
    instances: dict[int, InstanceDraws]


def sample_category(stream: MersenneStream, index: int, cfg: ScriptSettings = VISUALATOM_1K) -> CategoryParams:
    """Draw one category's parameters from ``stream``'s current position, in the script's order."""
    num_vertices = stream.randint(cfg.vertex_num_min, cfg.vertex_num_max)
    num_orbits = stream.randint(cfg.line_num_min, cfg.line_num_max)
    noise_amp = stream.uniform(cfg.perlin_min, cfg.perlin_min + 4)
    width = stream.uniform(0.0, cfg.line_width)
    radius = stream.randint(cfg.radius_min, cfg.radius_min + 50)
    n1 = stream.randint(cfg.nami_1_min, cfg.nami_1_max)
    while True:  # the script's n2 rule, kept as a loop so that it consumes the same draws
        n2 = stream.randint(cfg.nami_2_min, cfg.nami_2_max)
        if n2 != n1 or n1 == 0:
            break
    oval_x = stream.uniform(1, cfg.oval_rate)
    oval_y = stream.uniform(1, cfg.oval_rate)
    return CategoryParams(index, num_vertices, num_orbits, noise_amp, width, radius, n1, n2, oval_x, oval_y)


def draw_centre(stream: MersenneStream, cfg: ScriptSettings = VISUALATOM_1K) -> tuple[float, float]:
    """One instance centre, (x, y) pixels. The script draws y (start_pos_h) first."""
    y = (cfg.image_size + stream.randint(-cfg.start_pos, cfg.start_pos)) / 2
    x = (cfg.image_size + stream.randint(-cfg.start_pos, cfg.start_pos)) / 2
    return x, y


def draw_orbits(stream: MersenneStream, params: CategoryParams) -> tuple[np.ndarray, np.ndarray]:
    """One instance's orbit draws: grays (L,) int64 and u (L, 2, K) float64, consumed in the script's order."""
    K, L = params.num_vertices, params.num_orbits
    grays = np.empty(L, dtype=np.int64)
    u = np.empty((L, 2, K))
    for line in range(L):
        grays[line] = stream.randint(0, 255)
        u[line] = (10000 * stream.randoms(2 * K)).reshape(2, K)  # uniform(0, 10000) = 0 + 10000 * random()
    return grays, u


def skip_orbits(stream: MersenneStream, params: CategoryParams) -> None:
    """Consume one instance's orbit draws without materialising them (only the grey levels' words are read, because
    their rejection sampling decides how many words each takes)."""
    step = 4 * params.num_vertices  # 2K uniforms of two words each
    for _ in range(params.num_orbits):
        while stream.word() >= 1 << 31:  # randint(0, 255) = getrandbits(9) = word >> 23, rejected when >= 256
            pass
        stream.skip(step)


def orbit_vertices(params: CategoryParams, centre: tuple[float, float], u: np.ndarray) -> torch.Tensor:
    """The script's vertex update, in float64 and in its operation order.

    Args:
        params: the category.
        centre: (x, y) pixels (the script's start_pos_w, start_pos_h).
        u: (L, 2, K) pnoise1 arguments (see :func:`draw_orbits`).
    Returns:
        (L, K, 2) float64 tensor: vertex v of orbit l as (x, y) pixels at 512 px, after l + 1 updates, i.e. exactly
        the coordinates the script hands to PIL for orbit l (which closes the polygon back to vertex 0).
    """
    K, L = params.num_vertices, params.num_orbits
    if u.shape != (L, 2, K):
        raise ValueError(f"u has shape {u.shape}, expected {(L, 2, K)}")
    angle = (math.pi * 2) / K
    theta = [angle * v for v in range(K)]
    cos_t = torch.tensor([math.cos(t) for t in theta], dtype=torch.float64)
    sin_t = torch.tensor([math.sin(t) for t in theta], dtype=torch.float64)
    # 0.5*sin(angle*v*nami) is evaluated as sin((angle*v)*nami), left to right like the script.
    wave1 = torch.tensor([0.5 * math.sin(t * params.n1) for t in theta], dtype=torch.float64)
    wave2 = torch.tensor([0.5 * math.sin(t * params.n2) for t in theta], dtype=torch.float64)

    lam, w = params.noise_amp, params.width
    noise = pnoise1(torch.from_numpy(np.ascontiguousarray(u))) * lam - lam - wave1 - wave2  # (L, 2, K)
    step = noise - w  # (Noise - line_width)

    cx, cy = centre
    x = cos_t * params.radius * params.oval_x + cx
    y = sin_t * params.radius * params.oval_y + cy
    out = torch.empty((L, K, 2), dtype=torch.float64)
    for line in range(L):  # sequential on purpose: a cumulative sum would round differently
        x = x - cos_t * step[line, 0]
        y = y - sin_t * step[line, 1]
        out[line, :, 0] = x
        out[line, :, 1] = y
    return out


def _run_category(
    stream: MersenneStream, index: int, cfg: ScriptSettings, keep: Iterable[int]
) -> PublishedCategory:
    """One category of the script's loop: parameters, then every instance (kept or skipped) with its centre."""
    keep = set(keep)
    params = sample_category(stream, index, cfg)
    centre = draw_centre(stream, cfg)
    centres = np.empty((cfg.numof_instances, 2))
    kept = {}
    for k in range(cfg.numof_instances):
        centres[k] = centre
        if k in keep:
            grays, u = draw_orbits(stream, params)
            kept[k] = InstanceDraws(centre, grays, u)
        else:
            skip_orbits(stream, params)
        centre = draw_centre(stream, cfg)  # the next instance's (after the last one too, as in the script)
    return PublishedCategory(params, centres, kept)


def replay_thread(
    thread: int,
    cfg: ScriptSettings = VISUALATOM_1K,
    instances: Iterable[int] = (0,),
    stop: int | None = None,
) -> Iterator[PublishedCategory]:
    """Replay one process of the published script: its categories in order, each after all its instances' draws.

    Args:
        thread: the script's --thread_num (seed thread + 1).
        cfg: the script's knobs.
        instances: instance numbers whose draws are kept (the others are skipped); the same for every category.
        stop: category index at which to stop (exclusive); default: the end of the thread's range.
    Yields:
        PublishedCategory for each category index thread * classes_per_thread + start_class, ... in order.
    """
    instances = tuple(instances)
    stream = MersenneStream(cfg.seed(thread))
    first = thread * cfg.classes_per_thread + cfg.start_class
    last = first + cfg.classes_per_thread if stop is None else min(stop, first + cfg.classes_per_thread)
    for index in range(first, last):
        yield _run_category(stream, index, cfg, instances)


def published_category(
    index: int, cfg: ScriptSettings = VISUALATOM_1K, instances: Iterable[int] = (0,)
) -> PublishedCategory:
    """Category ``index`` exactly as the published run makes it. Replays its thread from the start (about half a
    second per category before it in the same thread, since every instance's draws must be consumed)."""
    thread, position = cfg.locate(index)
    stream = MersenneStream(cfg.seed(thread))
    for earlier in range(index - position, index):
        _run_category(stream, earlier, cfg, ())
    return _run_category(stream, index, cfg, instances)
