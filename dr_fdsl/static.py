"""The static dataset: the frozen renderer's images written once to PNG files, and read back for training.

Layout of a dataset folder (``tools/render_dataset.py`` writes it)::

    dataset.json        format, views per category, image size, the content key of the bank and the renderer
                        (``content_key``: the values that differ from their defaults; what is compared) and
                        their settings in full (a description); an export made before content keys holds
                        no key and is compared by its recorded settings (``content_key.legacy_settings``)
    manifest.csv        path,category,view_seed,sha256  (paths relative to the folder, each category's and view's
                        own ``image_path``; sha256: the hex digest of the PNG file's bytes as written); written
                        last: its presence means the export is complete
    00000/000000.png    category 0, view seed 0, 8-bit RGB
    ...

Training reads it (``data.source: static``) through an ordinary multi-worker ``DataLoader`` whose batches are
the same (category, view seed) draws the in-loop renderer would make, so the two sources feed the same step.

Integrity: opening a dataset checks every row (its path must be its own (category, view)'s file) and every PNG's
header; each PNG's digest is checked when a loader worker reads it, on the bytes it decodes. Hashing there costs
about 5 % of a read (SHA-256 runs at ~900 MB/s on one core here: 31 us for a 224 px, 34 KB PNG that takes 640 us to
decode), spread over the workers; hashing every file at opening would cost a 1M-image export (~30 GB) half a minute
of hashing per core plus minutes of reading from disk, before every run and resume. Re-running the export checks
every existing file (``export``) and re-renders damaged ones. Exports written before digests (a manifest without
``sha256``) open with a warning that their images cannot be checked; re-running ``tools/render_dataset.py`` on them
checks that each PNG decodes and records the digests.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.io import ImageReadMode, decode_png, encode_png
from tqdm import tqdm

from dr_fdsl import content_key
from dr_fdsl.config import Config
from dr_fdsl.errors import ConfigError, DatasetError
from dr_fdsl.render.settings import canonical_tables

FORMAT = 2  # 2: bank settings by family; with a "key": compared by content key (before: by the settings)
INFO = "dataset.json"
MANIFEST = "manifest.csv"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_RGB = b"\x02"  # IHDR colour type 2: truecolour (what encode_png writes for 3 channels)
COLUMNS = ["path", "category", "view_seed", "sha256"]  # of manifest.csv; exports before digests: the first three


def quantize(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` float in [0, 1] -> uint8, rounding half up (what an 8-bit PNG stores)."""
    return (images * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def image_path(category: int, view: int) -> str:
    return f"{category:05d}/{view:06d}.png"


def dataset_settings(cfg: Config, views: int) -> dict:
    """What a dataset's pixels depend on: the bank, the renderer (as first initialised), the views per category.

    ``key`` (:func:`images_key`) and, for a trained run's tables (``renderer.tables``), ``tables`` (their SHA-256,
    :func:`~dr_fdsl.tables.tables_digest`, and where they were read) are what is compared; ``bank`` and ``renderer``
    describe them in full."""
    out = {"format": FORMAT, "views": views, "image_size": cfg.renderer.image_size, "key": images_key(cfg),
           "bank": content_key.settings(cfg.bank), "renderer": content_key.settings(cfg.renderer)}
    if cfg.renderer.tables:
        out["tables"] = {"sha256": _tables_sha256(cfg), "from": cfg.renderer.tables}
    return out


def _tables_sha256(cfg: Config) -> str | None:
    """The digest of the learnt tables ``cfg`` draws with (``renderer.tables``), None for its initial ones."""
    from dr_fdsl.tables import tables_digest  # the checkpoint side; only where a config names learnt tables

    return tables_digest(cfg.renderer.tables) if cfg.renderer.tables else None


def images_key(cfg: Config) -> dict:
    """The content key of the bank's and the renderer's settings (``bank.*``, ``renderer.*`` that differ from
    their defaults; the table parameterisations as used, :func:`~dr_fdsl.render.settings.canonical_tables`)."""
    renderer = canonical_tables(cfg.renderer)
    return content_key.make_key({**content_key.changed(cfg.bank, "bank"), **content_key.changed(renderer, "renderer")})


def _legacy_dataset_settings(cfg: Config, views: int) -> dict:
    """What ``dataset.json`` of an export made before content keys holds for ``cfg`` and ``views``."""
    return {"format": FORMAT, "views": views, "image_size": cfg.renderer.image_size,
            "bank": content_key.legacy_settings(cfg.bank, "bank"),
            "renderer": content_key.legacy_settings(cfg.renderer, "renderer")}


def _settings_differ(found: dict, cfg: Config, views: int) -> list[str]:
    """The keys whose values differ between a ``dataset.json`` and ``cfg`` ("key: dataset A, config B"): its content
    key's values, or for an export made before content keys its recorded settings; and the views per category."""
    out = [] if found.get("views") == views else [f"views: dataset {found.get('views')!r}, config {views!r}"]
    tables = found.get("tables") or {}
    theirs, ours = tables.get("sha256") if isinstance(tables, dict) else tables, _tables_sha256(cfg)
    if theirs != ours:
        def name(digest, where):
            return f"learnt tables sha256 {str(digest)[:12]} ({where})" if digest else "the config's initial tables"
        out.append(f"renderer.tables: dataset {name(theirs, tables.get('from') if isinstance(tables, dict) else '')}, "
                   f"config {name(ours, cfg.renderer.tables)}")
    if "key" not in found:
        legacy = _legacy_dataset_settings(cfg, views)
        return out + [line for part in ("bank", "renderer") for line in content_key.differences(
            found.get(part), legacy[part], "dataset", prefix=part)]
    key = found["key"]
    if not content_key.is_keyed(key) or key["schema"] != content_key.SCHEMA:
        return out + [f"key: schema {key.get('schema') if isinstance(key, dict) else key!r}, this version reads "
                      f"{content_key.SCHEMA}"]
    return out + content_key.differences(key.get("values"), images_key(cfg)["values"], "dataset", absent="default")


def _png_header_ok(head: bytes, size: int) -> bool:
    """``head``: a file's first 26 bytes; True when they open an RGB PNG of ``size`` x ``size`` pixels."""
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return head[:8] == _PNG_SIGNATURE and (width, height) == (size, size) and head[25:26] == _PNG_RGB


def _write_png(image: torch.Tensor, path: Path) -> str:
    """Write-then-rename: an interrupted export never leaves a half-written PNG under its final name. Returns the
    SHA-256 (hex) of the bytes written."""
    data = encode_png(image).numpy().tobytes()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def _recorded_digests(manifest: Path) -> dict[str, str]:
    """path -> sha256 of a finished export's manifest; empty when it has none, predates digests or is damaged
    (its files are then checked by decoding them)."""
    try:
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        return {row["path"]: row["sha256"] for row in rows if _is_digest(row.get("sha256"))}
    except (OSError, ValueError, KeyError, csv.Error):
        return {}


def _is_digest(text) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(ch in "0123456789abcdef" for ch in text)


def _check_existing(file: Path, recorded: str | None, size: int) -> str | None:
    """The digest of an already exported PNG when it is intact, else None (missing, damaged or replaced).

    Intact: its bytes match ``recorded`` (the finished export's digest); with none recorded (an interrupted
    export, or one made before digests), it decodes in full (PNG chunk CRCs and zlib checksums) to an RGB image
    of ``size`` px."""
    try:
        data = file.read_bytes()
    except OSError:  # unreadable counts as damaged: its replacement is written then renamed over it
        return None
    digest = hashlib.sha256(data).hexdigest()
    if recorded is not None:
        return digest if digest == recorded else None
    if not _png_header_ok(data[:26], size):
        return None
    try:
        image = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    except RuntimeError:
        return None
    return digest if tuple(image.shape) == (3, size, size) else None


def export(renderer, cfg: Config, out: str | Path, views: int, batch_size: int = 64, progress: bool = True,
           workers: int = 4) -> dict:
    """Renders every (category, view seed 0..views-1) with ``renderer`` (frozen) into ``out``; resumable.

    Every file already there is checked first (against the finished export's digests, or by decoding it when
    none are recorded); a damaged, truncated or replaced one is rendered again, like a missing one. The manifest
    is removed while files are being written, so an interrupted run leaves an incomplete export, never a
    complete-looking one with stale digests.

    Returns ``{"written": n, "skipped": m, "damaged": [paths rendered again], "seconds": s}`` (``written``
    counts the damaged files too; ``skipped``: the intact files kept).

    Raises:
        DatasetError: ``out`` holds a dataset made with other settings.
    """
    out = Path(out)
    settings = dataset_settings(cfg, views)
    info = out / INFO
    if info.exists():
        try:
            found = json.loads(info.read_text())
        except ValueError as err:
            raise DatasetError(f"'{info}' is damaged ({err}); delete '{out}' to export afresh") from err
        differing = _settings_differ(found, cfg, views) if isinstance(found, dict) else ["dataset.json"]
        if differing:
            raise DatasetError(f"'{out}' holds a dataset made with other settings ({'; '.join(differing)}); "
                               "choose another --out, or delete it to re-export")
    out.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps(settings, indent=2))
    pairs = [(c, v) for c in range(renderer.num_classes) for v in range(views)]
    recorded = _recorded_digests(out / MANIFEST)
    present = [(c, v) for c, v in pairs if (out / image_path(c, v)).exists()]
    digests: dict[tuple[int, int], str] = {}  # (category, view) -> sha256 of its intact file

    def check(pair: tuple[int, int]) -> str | None:
        return _check_existing(out / image_path(*pair), recorded.get(image_path(*pair)), cfg.renderer.image_size)

    check_bar = tqdm(total=len(present), desc="check", unit="img", disable=not progress or not present)
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL; chunks bound the futures held at once
        for i in range(0, len(present), 4096):
            chunk = present[i:i + 4096]
            digests.update((pair, digest) for pair, digest in zip(chunk, pool.map(check, chunk)) if digest)
            check_bar.update(len(chunk))
    check_bar.close()
    damaged = [image_path(c, v) for c, v in present if (c, v) not in digests]
    todo = [(c, v) for c, v in pairs if (c, v) not in digests]
    if todo:  # the export is incomplete until every file is written again
        (out / MANIFEST).unlink(missing_ok=True)
    for c in sorted({c for c, _ in todo}):
        (out / f"{c:05d}").mkdir(exist_ok=True)
    device = next(renderer.parameters()).device
    start = time.perf_counter()
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="export", unit="img", disable=not progress)
    with ThreadPoolExecutor(workers) as pool, torch.no_grad():
        pending: list = []  # the previous batch's PNG writes (with their pairs), which run while this batch renders
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            ids = torch.tensor([c for c, _ in chunk], device=device)
            seeds = torch.tensor([v for _, v in chunk], device=device)
            images = quantize(renderer(ids, seeds)).cpu()
            for cv, done in pending:
                digests[cv] = done.result()
            bar.update(len(pending))
            pending = [((c, v), pool.submit(_write_png, image, out / image_path(c, v)))
                       for (c, v), image in zip(chunk, images)]
        for cv, done in pending:
            digests[cv] = done.result()
        bar.update(len(pending))
    bar.close()
    seconds = time.perf_counter() - start
    tmp = out / (MANIFEST + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([image_path(c, v), c, v, digests[(c, v)]] for c, v in pairs)
    os.replace(tmp, out / MANIFEST)
    return {"written": len(todo), "skipped": len(pairs) - len(todo), "damaged": damaged, "seconds": seconds}


class StaticViews(Dataset):
    """A complete dataset folder, indexed by ``(category, view seed)`` pairs: item -> (uint8 (3, H, W), c, v)."""

    def __init__(self, root: str | Path, verify: bool = True):
        """Reads the settings and manifest; ``verify`` also checks every PNG's header (one process suffices).

        ``digests``: ``(category, view) -> 32-byte SHA-256`` of each PNG, checked on every read; None for an
        export made before digests (see :meth:`unchecked_warning`)."""
        self.root = Path(root)
        if not (self.root / INFO).is_file():
            raise DatasetError(f"'{self.root}' is not a dataset folder (no {INFO}); write one with "
                               "tools/render_dataset.py --out DIR")
        if not (self.root / MANIFEST).is_file():
            raise DatasetError(f"'{self.root}' is an incomplete export (no {MANIFEST}); run tools/render_dataset.py "
                               "again with the same settings to finish it")
        try:
            self.settings = json.loads((self.root / INFO).read_text())
            if self.settings.get("format") != FORMAT:
                raise DatasetError(f"'{self.root}' was exported by another version of dr_fdsl (format "
                                   f"{self.settings.get('format')}, this one reads {FORMAT}); export it again")
            self.views = int(self.settings["views"])
            self.num_classes = int(self.settings["bank"]["num_classes"])
            self.image_size = int(self.settings["image_size"])
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"'{self.root / INFO}' is damaged ({err!r}); export the dataset again") from err
        self.paths = self._read_manifest()
        if verify:
            self._verify_files()

    def _read_manifest(self) -> dict[tuple[int, int], str]:
        """Every (category, view) of the export, exactly once, from well-formed rows, each naming its own file;
        sets ``self.digests`` from the ``sha256`` column (None when the manifest predates it)."""
        manifest = self.root / MANIFEST
        paths, digests = {}, {}
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            has_digests = "sha256" in (reader.fieldnames or [])
            for line, row in enumerate(reader, start=2):
                try:
                    key = int(row["category"]), int(row["view_seed"])
                    path = row["path"]
                    if not path or key in paths or not (0 <= key[0] < self.num_classes and 0 <= key[1] < self.views):
                        raise ValueError("empty path, repeated or out-of-range (category, view_seed)")
                    if path != image_path(*key):  # a row pointing at another view's (or a foreign) file
                        raise ValueError(f"category {key[0]}, view {key[1]} is the file '{image_path(*key)}', not "
                                         f"'{path}'")
                    if has_digests:
                        if not _is_digest(row["sha256"]):
                            raise ValueError("sha256 is not a hex SHA-256 digest")
                        digests[key] = bytes.fromhex(row["sha256"])
                except (KeyError, TypeError, ValueError) as err:
                    raise DatasetError(f"'{manifest}' line {line} is damaged ({row}: {err}); export the dataset "
                                       "again") from err
                paths[key] = path
        if len(paths) != self.num_classes * self.views:
            raise DatasetError(f"'{manifest}' lists {len(paths)} images, not {self.num_classes} categories x "
                               f"{self.views} views; export the dataset again")
        self.digests = digests if has_digests else None
        return paths

    def unchecked_warning(self) -> str | None:
        """The warning to print for an export made before digests (its images cannot be checked), else None."""
        if self.digests is not None:
            return None
        return (f"warning: static dataset '{self.root}' was exported before content digests ({MANIFEST} has no "
                "sha256 column): its images cannot be checked; run tools/render_dataset.py again with its config, "
                f"--out {self.root} and --views {self.views} to check every file and record them")

    def _verify_files(self) -> None:
        """Each PNG exists and its header says RGB of the dataset's size (26 bytes read per file), so a damaged
        file is named now rather than in a data-loader worker mid-training."""
        for path in self.paths.values():
            file = self.root / path
            try:
                with open(file, "rb") as f:
                    head = f.read(26)
            except OSError as err:
                raise DatasetError(f"'{file}' of the static dataset cannot be read ({err}); export again") from err
            if not _png_header_ok(head, self.image_size):
                raise DatasetError(f"'{file}' is not a {self.image_size} px RGB PNG (damaged or foreign); export "
                                   "the dataset again (tools/render_dataset.py resumes and rewrites missing files)")

    def check_matches(self, cfg: Config) -> int:
        """Refuses a dataset whose images another bank or renderer made, or that cannot serve the config's draws;
        returns the views per category the stream draws from (``data.views_per_class`` when set, else all).

        Raises:
            ConfigError: other bank or renderer settings; ``data.views_per_class`` or ``data.views_per_category``
                greater than the dataset's views per category.
        """
        differing = _settings_differ(self.settings, cfg, self.views)
        if differing:
            raise ConfigError(f"data.path '{self.root}' was exported with other settings than this config "
                              f"({'; '.join(differing)}); train with the config it was made with "
                              f"({self.root / INFO})")
        d = cfg.data
        if d.views_per_class > self.views:
            raise ConfigError(f"config key 'data.views_per_class': {d.views_per_class} view seeds per category, but "
                              f"'{self.root}' holds {self.views}; lower it (0 uses all of them) or export more views")
        views = d.views_per_class or self.views  # fewer: seeds 0..V-1 of the export, as the in-loop run draws
        if d.views_per_category > views:  # (with views_per_class set, load_config already holds it to that)
            raise ConfigError(f"config key 'data.views_per_category': {d.views_per_category} different view seeds "
                              f"per category, but '{self.root}' holds {views} views per category; lower it or export "
                              "more views")
        return views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        """The PNG of ``key``, checked against its recorded digest (the bytes decoded are the bytes hashed).

        Raises:
            DatasetError: the file cannot be read or decoded, or differs from the one exported for ``key``.
        """
        category, view = key
        path = self.root / self.paths[(category, view)]
        fix = f"re-run tools/render_dataset.py with --out {self.root} (it checks every file, re-renders damaged ones)"
        try:
            data = path.read_bytes()
            image = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
        except (OSError, RuntimeError) as err:  # truncated after the check at opening, or changed since
            raise DatasetError(f"'{path}' cannot be decoded ({err}); {fix}") from err
        if self.digests is not None and hashlib.sha256(data).digest() != self.digests[key]:
            raise DatasetError(f"'{path}' does not match the digest {MANIFEST} records for category {category}, view "
                               f"{view} (damaged or replaced since the export); {fix}")
        return image, category, view


class OrderBatches(Sampler):
    """Infinite batch sampler: micro-batch ``k`` is ``order.batch(k)``'s (category, view seed) pairs."""

    def __init__(self, order, batch_size: int, start: int):
        self.order, self.batch_size, self.start = order, batch_size, start

    def __iter__(self):
        index = self.start
        while True:
            ids, seeds = self.order.batch(index, self.batch_size)
            yield list(zip(ids.tolist(), seeds.tolist()))
            index += 1


def static_loader(dataset: StaticViews, order, batch_size: int, start: int, workers: int) -> DataLoader:
    """Batches ``(uint8 (B, 3, H, W), ids (B,), seeds (B,))`` from micro-batch ``start`` on.

    The loader gets its own generator: by default a ``DataLoader`` draws its workers' base seed from torch's
    global generator, which would shift every later augmentation draw away from the in-loop run's.
    """
    return DataLoader(dataset, batch_sampler=OrderBatches(order, batch_size, start), num_workers=workers,
                      pin_memory=torch.cuda.is_available(), generator=torch.Generator(),
                      persistent_workers=workers > 0)
