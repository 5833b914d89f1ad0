"""Safetensors files checked before a weight is used: header, layout, names, dtypes, shapes, finiteness.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON, then the data section::

    {"__metadata__": {"format": "pt"}, "blocks.0.norm1.weight": {"dtype": "F32", "shape": [192],
     "data_offsets": [0, 768]}, ...}

``data_offsets`` are ``[start, end)`` byte offsets into the data section. The safetensors library checks little of
this on load: a header that declares a float32 tensor ``I32`` loads as integers (which ``load_state_dict`` then
casts to values near 1e9), and one that exchanges the offsets of two tensors of one shape loads each as the
other. :func:`read_header` refuses a header whose offsets do not tile the data section exactly (no gap, no
overlap, nothing out of bounds, every tensor its dtype's size times its shape); :func:`check_expected` refuses
names, dtypes and shapes other than the model's; :func:`load_checked` does both, then refuses non-finite values.
An exchange of two same-shape tensors' offsets keeps a valid layout: the digests of the folder's manifest (the
file's, and per tensor, :func:`tensor_digests`, recorded when the file was written) catch it; for a file without
them, :func:`check_writer_order` does (safetensors writes tensors sorted by name within a dtype).

Every refusal is an :class:`IntegrityError` that names the file and, where there is one, the tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from dr_fdsl.errors import IntegrityError

# safetensors' dtype names and their sizes in bytes (its Rust `Dtype`; sub-byte float types are not used here)
ITEM_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
_TORCH_NAME = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
               torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.float64: "F64",
               torch.int64: "I64", torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
               torch.float8_e5m2: "F8_E5M2", torch.float8_e4m3fn: "F8_E4M3"}
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header
_CHUNK = 1 << 20


class Entry(NamedTuple):
    """One tensor's header entry: dtype name (``"F32"``), shape, and ``[start, end)`` in the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class Header(NamedTuple):
    """A parsed and layout-checked header: the tensors by name, and where the data section starts in the file."""

    tensors: dict[str, Entry]
    data_start: int


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` -> ``"F32"``)."""
    return _TORCH_NAME.get(dtype, str(dtype))


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"tensor {twice[0]!r} is declared twice")
    return dict(pairs)


def read_header(path: str | Path) -> Header:
    """The header of ``path``, after checking that it parses and that its entries tile the data section.

    Raises :class:`IntegrityError` naming the file (and the tensor) when the file is too short, its header length
    or JSON is damaged, an entry is malformed (unknown dtype, negative shape, offsets that do not hold exactly its
    dtype's size times its shape), or the entries leave a gap, overlap, or run past the end of the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, MAX_HEADER):
                raise ValueError(f"its header length {length} exceeds the file's {size} bytes")
            raw = json.loads(f.read(length), object_pairs_hook=_no_duplicates)
        if not isinstance(raw, dict):
            raise ValueError("its header is not a JSON object")
    except OSError as err:
        raise IntegrityError(f"'{path}' cannot be read ({err.strerror or err})") from err
    except (ValueError, UnicodeDecodeError) as err:  # json.JSONDecodeError is a ValueError
        raise IntegrityError(f"'{path}' is not a safetensors file ({err}): damaged or truncated") from err
    metadata = raw.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise IntegrityError(f"'{path}': its __metadata__ is not a table of strings")
    tensors = {name: _entry(path, name, value) for name, value in raw.items()}
    data_start, data_size = 8 + length, size - 8 - length
    covered = 0
    for name, entry in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if entry.start != covered:
            what = "a gap before" if entry.start > covered else "an overlap at"
            raise IntegrityError(f"'{path}': the header's offsets leave {what} tensor '{name}' (bytes {entry.start}-"
                                 f"{entry.end} of the data section, expected to start at {covered}): damaged")
        covered = entry.end
    if covered != data_size:
        raise IntegrityError(f"'{path}': the header declares {covered} bytes of tensor data, the file holds "
                             f"{data_size}: truncated or damaged")
    return Header(tensors, data_start)


def _entry(path: Path, name: str, value: object) -> Entry:
    try:
        dtype, shape, (start, end) = value["dtype"], value["shape"], value["data_offsets"]
        if dtype not in ITEM_SIZE:
            raise ValueError(f"unknown dtype {dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in shape) or not all(
                isinstance(o, int) and o >= 0 for o in (start, end)):
            raise ValueError(f"shape {shape} or offsets {[start, end]} are not non-negative integers")
    except (TypeError, KeyError, ValueError) as err:
        raise IntegrityError(f"'{path}': the header entry of tensor '{name}' is malformed ({err})") from err
    if end - start != math.prod(shape) * ITEM_SIZE[dtype]:
        raise IntegrityError(f"'{path}': tensor '{name}' ({dtype}, shape {list(shape)}) needs "
                             f"{math.prod(shape) * ITEM_SIZE[dtype]} bytes, its offsets hold {end - start}: damaged")
    return Entry(dtype, tuple(shape), start, end)


def check_expected(path: str | Path, header: Header, expected: Mapping[str, torch.Tensor],
                   allow_extra: bool = False) -> None:
    """Refuses a header whose tensors are not ``expected``'s: a missing name, an unexpected one (unless
    ``allow_extra``), or another dtype or shape. ``expected``: name -> a tensor of the dtype and shape the model
    holds (e.g. ``module.state_dict()``)."""
    missing = [k for k in expected if k not in header.tensors]
    if missing:
        raise IntegrityError(f"'{path}' lacks tensor '{missing[0]}' (and {len(missing) - 1} more) that the model "
                             "expects: it was written for another model")
    extra = [k for k in header.tensors if k not in expected]
    if extra and not allow_extra:
        raise IntegrityError(f"'{path}' holds tensor '{extra[0]}' that the model does not have: it was written for "
                             "another model")
    for name, tensor in expected.items():
        entry, want = header.tensors[name], (dtype_name(tensor.dtype), tuple(tensor.shape))
        if (entry.dtype, entry.shape) != want:
            raise IntegrityError(f"'{path}': tensor '{name}' is declared {entry.dtype} {list(entry.shape)}, the "
                                 f"model holds {want[0]} {list(want[1])}: damaged or written for another model")


def check_writer_order(path: str | Path, header: Header) -> None:
    """Refuses tensors placed out of the order the safetensors library writes them in: by dtype, then by name.

    The check of a file without recorded digests (a checkpoint made before manifests): an exchange of two
    same-shape tensors' offsets keeps a valid layout, names, dtypes and shapes, but puts the later name first.
    Every file of a checkpoint is written by ``safetensors.torch.save_file``, which sorts its tensors so; only the
    order within a dtype is relied on here (the order of dtypes could change between library versions).
    """
    placed: dict[str, list[str]] = {}  # dtype -> names in the order of their data
    for name, entry in sorted(header.tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        placed.setdefault(entry.dtype, []).append(name)
    for names in placed.values():
        misplaced = [name for name, due in zip(names, sorted(names)) if name != due]
        if misplaced:
            raise IntegrityError(f"'{path}': tensors {', '.join(misplaced[:4])} lie out of the order safetensors "
                                 "writes them in (by name): the header's offsets were exchanged")


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def load_checked(path: str | Path, expected: Mapping[str, torch.Tensor] | None = None,
                 allow_extra: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (on the CPU) once its header is checked (:func:`read_header`, and
    :func:`check_expected` against ``expected`` when given) and every floating-point value is finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_header(path)
    if expected is not None:
        check_expected(path, header, expected, allow_extra)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:  # read_header passed, so a race or an I/O error
        raise IntegrityError(f"'{path}' cannot be loaded ({err})") from err
    bad = first_non_finite(tensors)
    if bad is not None:
        raise IntegrityError(f"'{path}': tensor '{bad}' holds non-finite values (NaN or infinity): these weights "
                             "diverged and cannot be used")
    return tensors


def tensor_digests(path: str | Path) -> dict[str, str]:
    """SHA-256 (hex) of each tensor's bytes in ``path``, by name, as the header places them. Recorded beside the
    file's own digest, they name the tensors a changed file differs in (an exchange of two tensors' offsets shows
    as both)."""
    header = read_header(path)
    digests = {}
    with open(path, "rb") as f:
        for name, entry in sorted(header.tensors.items(), key=lambda kv: kv[1].start):
            f.seek(header.data_start + entry.start)
            h, left = hashlib.sha256(), entry.end - entry.start
            while left:
                chunk = f.read(min(left, _CHUNK))
                if not chunk:
                    raise IntegrityError(f"'{path}' ended inside tensor '{name}': truncated")
                h.update(chunk)
                left -= len(chunk)
            digests[name] = h.hexdigest()
    return digests
