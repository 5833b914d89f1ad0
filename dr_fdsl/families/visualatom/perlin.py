"""1D improved Perlin noise, bit-exact with the `noise` package's ``pnoise1`` (Casey Duncan, v1.2.2).

VisualAtom (Takashima et al., CVPR 2023) perturbs every vertex with ``noise.pnoise1(u)``. That function is C code that
works in single precision throughout: the Python float argument is rounded to a C ``float`` on the way in, every
intermediate is a ``float``, and only the final value is widened back to ``double``. Reproducing it in float64 would
*not* reproduce it: at ``u`` around 10,000 (VisualAtom draws ``u`` from U(0, 10000)) a float32 has a spacing of about
1e-3, so the fractional position inside a lattice cell is quantised and the result can differ in the 4th decimal.
Hence everything here is float32, operation by operation in the C's order, and the result is returned as float64.

Behaviour carried over from the C source, quirks included:

* lattice cell ``i = (int)floorf(x) % repeat`` with C's truncating ``%`` (negative ``x`` gives a negative remainder),
  neighbour ``(i + 1) % repeat`` taken before masking, then both masked with ``& 255`` (two's complement) and shifted by
  ``base`` into a 512-entry table (Perlin's 256 permutation, twice);
* gradient of hash ``h``: ``(h & 7) + 1`` unless bit 3 is set, in which case it is ``-1`` (not ``-((h & 7) + 1)``), so
  the gradients are {1, ..., 8, -1} rather than a symmetric set (values stay within about +-0.952);
* quintic fade ``t^3 (t (6 t - 15) + 10)``, linear interpolation ``a + t (b - a)``, result times ``0.4f``;
* octaves > 1: frequency and amplitude are float32 running products, each octave's repeat is ``(int)(repeat * freq)``,
  and the sum is divided by the float32 sum of amplitudes.

Out-of-range arguments that are undefined behaviour or a crash in C (``base`` outside [0, 256] reads past the table,
an octave repeat of 0 divides by zero, |x| beyond int range) raise ``ValueError`` here instead.
"""

from __future__ import annotations

import numpy as np
import torch

# Ken Perlin's reference permutation of 0..255 (the same 256 numbers as in the `noise` package's _noise.h). The C table
# stores it twice (512 entries) so that ``PERM[i + base]`` stays in bounds for base <= 256; we do the same.
_PERM_256 = (
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36, 103, 30, 69, 142, 8, 99, 37, 240,
    21, 10, 23, 190, 6, 148, 247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117, 35, 11, 32, 57, 177, 33, 88,
    237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175, 74, 165, 71, 134, 139, 48, 27, 166, 77, 146, 158, 231, 83,
    111, 229, 122, 60, 211, 133, 230, 220, 105, 92, 41, 55, 46, 245, 40, 244, 102, 143, 54, 65, 25, 63, 161, 1, 216,
    80, 73, 209, 76, 132, 187, 208, 89, 18, 169, 200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186,
    3, 64, 52, 217, 226, 250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212, 207, 206, 59, 227, 47, 16, 58, 17,
    182, 189, 28, 42, 223, 183, 170, 213, 119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43, 172, 9, 129,
    22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104, 218, 246, 97, 228, 251, 34, 242, 193, 238,
    210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14, 239, 107, 49, 192, 214, 31, 181, 199, 106, 157, 184,
    84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254, 138, 236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195,
    78, 66, 215, 61, 156, 180,
)
assert sorted(_PERM_256) == list(range(256))
PERM = torch.tensor(_PERM_256 * 2, dtype=torch.int64)  # (512,)

# Gradient per hash value, precomputed as float32 so that grad1 is one gather and one float32 multiply, like the C.
GRAD = torch.tensor([-1.0 if h & 8 else (h & 7) + 1.0 for h in range(256)], dtype=torch.float32)  # (256,)
_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

_F32 = np.float32
_INT_LIMIT = 2**31 - 1  # (int)floorf(x) and (int)(repeat * freq) are C ints


def _f32(value: float) -> torch.Tensor:
    """A 0-d float32 constant, so that torch multiplies in float32 exactly as C does with a float literal."""
    return torch.tensor(value, dtype=torch.float32)


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(PERM, GRAD) on ``device``, copied there once."""
    if device not in _TABLES:
        _TABLES[device] = (PERM.to(device), GRAD.to(device))
    return _TABLES[device]


def _noise1(x: torch.Tensor, repeat: int, base: int) -> torch.Tensor:
    """One octave: the C ``noise1(float x, int repeat, int base)``. x: float32 (...,) -> float32 (...,)."""
    if repeat == 0:
        raise ValueError("an octave's repeat is 0: the C code divides by zero here")
    floor = torch.floor(x)
    if floor.numel() and float(floor.abs().max()) >= _INT_LIMIT:
        raise ValueError("|x| too large: (int)floorf(x) overflows a C int")
    cell = floor.to(torch.int64)
    i = torch.fmod(cell, repeat)  # C '%': truncating, the sign follows the dividend
    ii = torch.fmod(i + 1, repeat)  # the neighbour is taken from the wrapped cell, before masking
    i = torch.bitwise_and(i, 255) + base  # & on two's complement: -1 -> 255, as for a C int
    ii = torch.bitwise_and(ii, 255) + base

    t = x - floor  # float32, in [0, 1)
    fade = t * t * t * (t * (t * _f32(6.0) - _f32(15.0)) + _f32(10.0))
    perm, grad = _tables(x.device)
    g0 = grad[perm[i]] * t
    g1 = grad[perm[ii]] * (t - _f32(1.0))
    return (g0 + fade * (g1 - g0)) * _f32(0.4)


def pnoise1(
    x: torch.Tensor | np.ndarray | float,
    octaves: int = 1,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    repeat: int = 1024,
    base: int = 0,
) -> torch.Tensor:
    """``noise.pnoise1`` over a tensor of inputs.

    Args:
        x: any shape, any real dtype; each value is rounded to float32 first (the C argument is a ``float``).
        octaves, persistence, lacunarity, repeat, base: as in ``noise.pnoise1``; persistence and lacunarity are rounded
            to float32 as the C does.
    Returns:
        float64 tensor of the same shape as ``x``, on x's device; equal bit for bit to the C function's result.
    """
    octaves, repeat, base = int(octaves), int(repeat), int(base)
    if octaves < 1:
        raise ValueError("Expected octaves value > 0")
    if not 0 <= base <= 256:
        raise ValueError("base must be in [0, 256]: the C reads PERM[(i & 255) + base] from a 512-entry table")
    xf = torch.as_tensor(x).to(torch.float32)
    if octaves == 1:
        return _noise1(xf, repeat, base).to(torch.float64)

    # The octave loop's scalars are C floats: keep them as numpy float32 so each *= rounds like the C.
    freq, amp, total_amp = _F32(1.0), _F32(1.0), _F32(0.0)
    pers, lac = _F32(persistence), _F32(lacunarity)
    total = torch.zeros_like(xf)
    for _ in range(octaves):
        octave_repeat = _F32(repeat) * freq
        if not abs(float(octave_repeat)) < _INT_LIMIT:
            raise ValueError("repeat * freq overflows a C int")
        total = total + _noise1(xf * _f32(float(freq)), int(octave_repeat), base) * _f32(float(amp))
        total_amp = _F32(total_amp + amp)
        freq = _F32(freq * lac)
        amp = _F32(amp * pers)
    return (total / _f32(float(total_amp))).to(torch.float64)


def pnoise1_scalar(
    x: float, octaves: int = 1, persistence: float = 0.5, lacunarity: float = 2.0, repeat: int = 1024, base: int = 0
) -> float:
    """Drop-in for ``noise.pnoise1`` on one Python float (same value, as a Python float)."""
    return float(pnoise1(torch.tensor([float(x)], dtype=torch.float64), octaves, persistence, lacunarity, repeat, base))
