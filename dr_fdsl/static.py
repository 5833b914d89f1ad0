"""The static dataset: the frozen renderer's images written once to PNG files, and read back for training.

Layout of a dataset folder (``tools/render_dataset.py`` writes it)::

    dataset.json        format, views per category, image size, the bank's and the renderer's settings
    manifest.csv        path,category,view_seed  (paths relative to the folder); written last: its presence
                        means the export is complete
    00000/000000.png    category 0, view seed 0, 8-bit RGB
    ...

Training reads it (``data.source: static``) through an ordinary multi-worker ``DataLoader`` whose batches are
the same (category, view seed) draws the in-loop renderer would make, so the two sources feed the same step.
"""

from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.io import ImageReadMode, decode_png, encode_png
from tqdm import tqdm

from dr_fdsl.config import Config, image_settings
from dr_fdsl.errors import ConfigError, DatasetError

FORMAT = 2  # 2: bank settings by family (content_settings)
INFO = "dataset.json"
MANIFEST = "manifest.csv"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_RGB = b"\x02"  # IHDR colour type 2: truecolour (what encode_png writes for 3 channels)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` float in [0, 1] -> uint8, rounding half up (what an 8-bit PNG stores)."""
    return (images * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def image_path(category: int, view: int) -> str:
    return f"{category:05d}/{view:06d}.png"


def dataset_settings(cfg: Config, views: int) -> dict:
    """What a dataset's pixels depend on: the bank, the renderer (as first initialised), the views per category."""
    images = image_settings(cfg)
    return {"format": FORMAT, "views": views, "image_size": cfg.renderer.image_size, "bank": images["bank"],
            "renderer": images["renderer"]}


def _write_png(image: torch.Tensor, path: Path) -> None:
    """Write-then-rename: an interrupted export never leaves a half-written PNG under its final name."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_png(image).numpy().tobytes())
    os.replace(tmp, path)


def export(renderer, cfg: Config, out: str | Path, views: int, batch_size: int = 64, progress: bool = True,
           workers: int = 4) -> dict:
    """Renders every (category, view seed 0..views-1) with ``renderer`` (frozen) into ``out``; resumable.

    Returns counts: ``{"written": n, "skipped": m, "seconds": s}``.

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
        if found != settings:
            diff = [k for k in settings if found.get(k) != settings[k]]
            raise DatasetError(f"'{out}' holds a dataset made with other settings ({', '.join(diff)} differ); "
                               "choose another --out, or delete it to re-export")
    out.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps(settings, indent=2))
    pairs = [(c, v) for c in range(renderer.num_classes) for v in range(views)]
    todo = [(c, v) for c, v in pairs if not (out / image_path(c, v)).exists()]
    for c in sorted({c for c, _ in todo}):
        (out / f"{c:05d}").mkdir(exist_ok=True)
    device = next(renderer.parameters()).device
    start = time.perf_counter()
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="export", unit="img", disable=not progress)
    with ThreadPoolExecutor(workers) as pool, torch.no_grad():
        pending: list = []  # the previous batch's PNG writes, which run while this batch renders
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            ids = torch.tensor([c for c, _ in chunk], device=device)
            seeds = torch.tensor([v for _, v in chunk], device=device)
            images = quantize(renderer(ids, seeds)).cpu()
            for done in pending:
                done.result()
            bar.update(len(pending))
            pending = [pool.submit(_write_png, image, out / image_path(c, v)) for (c, v), image in zip(chunk, images)]
        for done in pending:
            done.result()
        bar.update(len(pending))
    bar.close()
    seconds = time.perf_counter() - start
    tmp = out / (MANIFEST + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "category", "view_seed"])
        writer.writerows([image_path(c, v), c, v] for c, v in pairs)
    os.replace(tmp, out / MANIFEST)
    return {"written": len(todo), "skipped": len(pairs) - len(todo), "seconds": seconds}


class StaticViews(Dataset):
    """A complete dataset folder, indexed by ``(category, view seed)`` pairs: item -> (uint8 (3, H, W), c, v)."""

    def __init__(self, root: str | Path, verify: bool = True):
        """Reads the settings and manifest; ``verify`` also checks every PNG's header (one process suffices)."""
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
        """Every (category, view) of the export, exactly once, from well-formed rows."""
        manifest = self.root / MANIFEST
        paths = {}
        with open(manifest, newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    key = int(row["category"]), int(row["view_seed"])
                    path = row["path"]
                    if not path or key in paths or not (0 <= key[0] < self.num_classes and 0 <= key[1] < self.views):
                        raise ValueError("empty path, repeated or out-of-range (category, view_seed)")
                except (KeyError, TypeError, ValueError) as err:
                    raise DatasetError(f"'{manifest}' line {line} is damaged ({row}: {err}); export the dataset "
                                       "again") from err
                paths[key] = path
        if len(paths) != self.num_classes * self.views:
            raise DatasetError(f"'{manifest}' lists {len(paths)} images, not {self.num_classes} categories x "
                               f"{self.views} views; export the dataset again")
        return paths

    def _verify_files(self) -> None:
        """Each PNG exists and its header says RGB of the dataset's size (24 bytes read per file), so a damaged
        file is named now rather than in a data-loader worker mid-training."""
        for path in self.paths.values():
            file = self.root / path
            try:
                with open(file, "rb") as f:
                    head = f.read(26)
            except OSError as err:
                raise DatasetError(f"'{file}' of the static dataset cannot be read ({err}); export again") from err
            width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head[:8] != _PNG_SIGNATURE or (width, height) != (self.image_size, self.image_size) or \
                    head[25:26] != _PNG_RGB:
                raise DatasetError(f"'{file}' is not a {self.image_size} px RGB PNG (damaged or foreign); export "
                                   "the dataset again (tools/render_dataset.py resumes and rewrites missing files)")

    def check_matches(self, cfg: Config) -> None:
        """Refuses a dataset whose images another bank or renderer made."""
        expected = dataset_settings(cfg, self.views)
        differing = [k for k in ("bank", "renderer") if self.settings.get(k) != expected[k]]
        if differing:
            raise ConfigError(f"data.path '{self.root}' was exported with other {', '.join(differing)} settings "
                              f"than this config; train with the config it was made with ({self.root / INFO})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        category, view = key
        path = self.root / self.paths[(category, view)]
        try:
            image = decode_png(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), ImageReadMode.RGB)
        except (OSError, RuntimeError) as err:  # truncated after the check at opening, or changed since
            raise DatasetError(f"'{path}' cannot be decoded ({err}); export the dataset again") from err
        return image, category, view


class StreamBatches(Sampler):
    """Infinite batch sampler: micro-batch ``k`` is ``stream.batch(k)``'s (category, view seed) pairs."""

    def __init__(self, stream, batch_size: int, start: int):
        self.stream, self.batch_size, self.start = stream, batch_size, start

    def __iter__(self):
        index = self.start
        while True:
            ids, seeds = self.stream.batch(index, self.batch_size)
            yield list(zip(ids.tolist(), seeds.tolist()))
            index += 1


def static_loader(dataset: StaticViews, stream, batch_size: int, start: int, workers: int) -> DataLoader:
    """Batches ``(uint8 (B, 3, H, W), ids (B,), seeds (B,))`` from micro-batch ``start`` on.

    The loader gets its own generator: by default a ``DataLoader`` draws its workers' base seed from torch's
    global generator, which would shift every later augmentation draw away from the in-loop run's.
    """
    return DataLoader(dataset, batch_sampler=StreamBatches(stream, batch_size, start), num_workers=workers,
                      pin_memory=torch.cuda.is_available(), generator=torch.Generator(),
                      persistent_workers=workers > 0)
