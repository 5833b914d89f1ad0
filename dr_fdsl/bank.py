"""The bank: every category's point set, as a formula family built it, cached on disk.

A bank is a pure function of the bank section's content (family, classes, points, seed and the family's own
section): the cache file is named by a hash of its content key (``content_key``: the values that differ from their
defaults, under a schema version) and holds that key, so a file is never read for other settings. A file made before
content keys holds no key: it is found under its earlier name (a hash of ``content_key.legacy_settings``) and checked
against that record. Files are written then renamed (never half-written) and read with
``torch.load(weights_only=True)``: a cache file cannot run code.

Each file also holds ``digest``, a SHA-256 of its settings, draws and tensors (names, dtypes, shapes and bytes),
recorded when it is written and checked when it is read: ``torch.load`` itself accepts a file whose tensor bytes
were flipped, and a file of other points whose settings were edited to these (or points edited in place) reads
as valid. A file written before digests existed has none; it is read unchecked, with one warning per process
(banks take minutes to build, so it is not refused). The digest is a check against damage and mix-ups, not a
signature: a file rewritten as a whole by other code carries its own consistent digest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import typing
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dr_fdsl import content_key
from dr_fdsl.config import BankConfig, validate_bank
from dr_fdsl.errors import BankCacheError, is_write_fault
from dr_fdsl.families import FAMILIES

BANK_FORMAT = 2  # 2: generic params dict, any family (1: 3D IFS only)


@dataclass
class PointBank:
    """The categories of a formula-driven dataset.

    Attributes:
        points: ``(C, N, 3)`` float32, each point set centred, coordinates in ``[-1, 1]``.
        params: the family's formula parameters, tensors whose first dimension is ``C`` (for ``ifs3d``: ``affine
            (C, M, 3, 4)``, ``probs (C, M)``, ``num_maps (C,)``).
        settings: every content setting of the ``BankConfig`` that made it (``content_key.settings``; a file made
            before content keys: its legacy record), nested as the config is: ``settings["ifs3d"]["sampler"]``.
        draws: how many candidate formulas were drawn to find these ``C``.
        key: the content key of that ``BankConfig`` (:func:`cache_key`); None for a file made before content keys.
    """

    points: torch.Tensor
    params: dict[str, torch.Tensor]
    settings: dict
    draws: int
    key: dict | None = None

    @property
    def num_classes(self) -> int:
        return self.points.shape[0]

    @property
    def num_points(self) -> int:
        return self.points.shape[1]


def cache_key(cfg: BankConfig) -> dict:
    """The content key of a bank: ``{"schema": 2, "values": {"bank.num_points": 300, ...}}``, the values that
    differ from their defaults (a new option at its default changes no key)."""
    return content_key.make_key(content_key.changed(cfg, "bank"))


def cache_path(cfg: BankConfig) -> Path:
    """The cache file for these settings: a hash of their content key is in its name."""
    return _named(cfg, content_key.key_digest(cache_key(cfg)))


def legacy_cache_path(cfg: BankConfig) -> Path:
    """Where a bank made before content keys lies: its name hashes the legacy record of the settings."""
    settings = content_key.legacy_settings(cfg, "bank")
    return _named(cfg, hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest())


def cached_path(cfg: BankConfig) -> Path:
    """The cache file a run reads: :func:`cache_path`, or the one made before content keys when only that exists."""
    path = cache_path(cfg)
    if path.exists():
        return path
    legacy = legacy_cache_path(cfg)
    return legacy if legacy.exists() else path


def _named(cfg: BankConfig, digest: str) -> Path:
    name = f"bank-v{BANK_FORMAT}-{cfg.family}-c{cfg.num_classes}-n{cfg.num_points}-{digest[:16]}.pt"
    return Path(os.path.expanduser(cfg.cache_dir)) / name


def generate_bank(cfg: BankConfig, progress: bool = False) -> PointBank:
    """Builds the bank with ``cfg.family`` (no cache)."""
    validate_bank(cfg)
    return _generate(cfg, progress)


def _generate(cfg: BankConfig, progress: bool) -> PointBank:
    out = FAMILIES.get(cfg.family).generate(cfg, progress=progress)
    return PointBank(out.points, out.params, content_key.settings(cfg), out.draws, cache_key(cfg))


def content_digest(settings: dict, draws: int, points: torch.Tensor, params: dict[str, torch.Tensor],
                   key: dict | None = None) -> str:
    """SHA-256 (hex) of what a cache file holds: the settings, draws and content key (none: a file made before
    keys) as sorted JSON, then every tensor's name, dtype, shape and bytes, ``points`` first and ``params`` by name
    (a tensor expanded along dim 0: its one row). Any tensor of any dtype, on any device."""
    record = {"settings": settings, "draws": draws, **({} if key is None else {"key": key})}
    h = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for name, tensor in [("points", points), *sorted(params.items())]:
        h.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        tensor = tensor.detach().cpu()
        if tensor.dim() and tensor.stride(0) == 0 and len(tensor) > 1:
            # one row shared by every category (family onepfrac's fractal): its content is that row, hashed once
            # (a contiguous copy would be C rows in memory)
            h.update(b"expanded\n")
            tensor = tensor[:1].clone(memory_format=torch.contiguous_format)
        h.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_bank(bank: PointBank, path: str | Path) -> Path:
    """Writes the bank with ``torch.save`` (tensors and plain types only) and its :func:`content_digest`,
    atomically (write, then rename).

    Raises:
        BankCacheError: the file cannot be written (a full disk, a read-only or missing folder), naming it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    digest = content_digest(bank.settings, bank.draws, bank.points, bank.params, bank.key)
    _make_folder(path)
    key = {} if bank.key is None else {"key": bank.key}
    try:
        torch.save({"format": BANK_FORMAT, "settings": bank.settings, "draws": bank.draws, "points": bank.points,
                    "params": bank.params, "digest": digest, **key}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError (is_write_fault)
        with contextlib.suppress(OSError):  # a half-written temporary file is removed; the error is the one above
            tmp.unlink()
        if not is_write_fault(err):
            raise  # a bug, not the storage: its traceback is what to read
        raise _unwritable(path, err) from err
    return path


def _unwritable(path: Path, err: Exception) -> BankCacheError:
    reason = getattr(err, "strerror", None) or str(err).strip().split("\n")[0][:200] or type(err).__name__
    return BankCacheError(f"cannot write bank cache '{path}' ({reason}); free space there or set bank.cache_dir to "
                          "a writable folder")


def _make_folder(path: Path) -> None:
    """Creates the cache file's folder, or raises :class:`BankCacheError` naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(path, err) from err


_WARNED: set[str] = set()  # unchecked (pre-digest) cache files already reported by this process


def load_bank(path: str | Path, expect: BankConfig | None = None) -> PointBank:
    """Reads a bank written by :func:`save_bank`, checking its format, settings (if ``expect``: its content key, or
    for a file made before content keys its legacy record), shapes and content digest. A file without a digest
    (written before digests existed) is read unchecked, with one ``warning:`` line on stderr per file and process.

    Raises:
        BankCacheError: unreadable, truncated, of another format, made with settings other than ``expect`` (the
            message lists the config keys that differ), or whose settings and tensors do not match the digest
            recorded when it was written.
    """
    path = Path(path)
    fix = (f"delete '{path}' or rebuild it: `python tools/make_bank.py --config CONFIG --rebuild` (with the run's "
           "config and overrides) or `build_bank(..., rebuild=True)`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise BankCacheError(f"bank cache '{path}' is corrupt or unreadable ({type(err).__name__}: "
                             f"{str(err)[:200]}); {fix}") from err
    problem = None
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        problem = f"format is not {BANK_FORMAT}"
    elif expect is not None and (differing := _settings_differ(data, expect)):
        problem = f"it was made with other settings ({'; '.join(differing)})"
    else:
        c, n = data["settings"]["num_classes"], data["settings"]["num_points"]
        points, params = data.get("points"), data.get("params")
        if not isinstance(points, torch.Tensor) or tuple(points.shape) != (c, n, 3):
            problem = f"'points' is missing or not of shape {(c, n, 3)}"
        elif not torch.isfinite(points[:1] if points.dim() and points.stride(0) == 0 else points).all():
            problem = "points are not all finite"
        elif not isinstance(params, dict) or any(not isinstance(v, torch.Tensor) or v.shape[:1] != (c,)
                                                  for v in params.values()):
            problem = f"'params' is not a dict of tensors with {c} rows"
        elif "digest" in data and data["digest"] != content_digest(data["settings"], data.get("draws"), points,
                                                                    params, data.get("key")):
            problem = ("its settings and tensors do not match the digest recorded when it was written (damaged, "
                       "or other points saved under these settings)")
    if problem:
        raise BankCacheError(f"bank cache '{path}' does not hold a valid bank: {problem}; {fix}")
    if "digest" not in data and str(path) not in _WARNED:
        _WARNED.add(str(path))
        print(f"warning: bank cache '{path}' was written before content digests and cannot be checked; it is used "
              "as it is (rebuild it to add one: `python tools/make_bank.py --config CONFIG --rebuild`)",
              file=sys.stderr)
    return PointBank(data["points"], data["params"], data["settings"], int(data["draws"]), data.get("key"))


def _settings_differ(data: dict, expect: BankConfig) -> list[str]:
    """The config keys whose values differ between a file's record and ``expect`` ("key: file A, config B")."""
    if "key" not in data:  # made before content keys: its legacy record
        saved, current = data.get("settings"), content_key.legacy_settings(expect, "bank")
        return content_key.differences(saved, current, prefix="bank") if isinstance(saved, dict) else ["settings"]
    saved = data["key"]
    if not content_key.is_keyed(saved) or saved["schema"] != content_key.SCHEMA:
        return [f"content key of schema {saved.get('schema') if isinstance(saved, dict) else saved!r}, this version "
                f"reads {content_key.SCHEMA}"]
    return content_key.differences(saved.get("values"), cache_key(expect)["values"], absent="default")


def bank_from_config(cfg: BankConfig, rebuild: bool = False, progress: bool = False,
                     use_cache: bool = True) -> PointBank:
    """The bank for ``cfg`` (the ``bank`` section of a run's config): read from the cache when present, else
    generated and cached. ``rebuild=True`` regenerates and overwrites; ``use_cache=False`` touches no file."""
    validate_bank(cfg)
    path = cached_path(cfg)
    if use_cache and path.exists() and not rebuild:
        bank = load_bank(path, expect=cfg)
        check = FAMILIES.get(cfg.family).check_cached
        problem = check(bank.params) if check is not None else None
        if problem:
            raise BankCacheError(f"bank cache '{path}' cannot be used: {problem}; rebuild it: `python "
                                 "tools/make_bank.py --config CONFIG --rebuild` (with the run's config and overrides)")
        return bank
    path = cache_path(cfg)  # built, or rebuilt: under its content key's name
    if use_cache:  # a folder that cannot be made fails before minutes of generation, not after
        _make_folder(path)
    bank = _generate(cfg, progress)
    if use_cache:
        save_bank(bank, path)
    return bank


def build_bank(*, rebuild: bool = False, progress: bool = False, **settings) -> PointBank:
    """The bank for these settings, from Python: ``build_bank(num_classes=10, num_points=2000, sampler="svd")``.

    ``settings`` are fields of :class:`BankConfig` (``family``, ``num_classes``, ``num_points``, ``seed``,
    ``cache_dir``) and of the family's section (for ``ifs3d``: ``sampler``, ``min_variance``, ``min_maps``,
    ``max_maps``, ``burn_in``); the others keep the dataclasses' defaults. ``cache_dir=None`` neither reads nor
    writes a cache file.
    """
    common = {f.name for f in dataclasses.fields(BankConfig)}
    use_cache = settings.get("cache_dir", "") is not None
    cfg = BankConfig(**{k: v for k, v in settings.items() if k in common and v is not None})
    FAMILIES.get(cfg.family)  # an unknown family is a ConfigError naming the valid ones
    section = typing.get_type_hints(BankConfig)[cfg.family]  # the family's settings dataclass
    cfg = replace(cfg, **{cfg.family: section(**{k: v for k, v in settings.items() if k not in common})})
    return bank_from_config(cfg, rebuild=rebuild, progress=progress, use_cache=use_cache)
