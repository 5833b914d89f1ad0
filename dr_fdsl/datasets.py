"""Real image-classification data for judging pre-training by fine-tuning.

Every loader returns an :class:`ImageSet`: uint8 images ``(N, 3, h, w)`` in memory and int64 labels ``(N,)``
(small datasets; image folders are decoded once). Images are resized to the model's input on the device.

Sources:
    fashion_mnist  IDX files of Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), or
                   torchvision's copy (``ROOT/FashionMNIST/raw``)
    cifar10/100    torchvision's CIFAR datasets (downloaded into ROOT when the network allows)
    folder:PATH    image folders ``PATH/train/<class>/`` and ``PATH/val/<class>/`` with the same class folders,
                   each holding at least one image (.png, .jpg, .jpeg, .webp; other files are skipped); a match
                   target needs only ``PATH/train`` (its training split)

A file that cannot be read or decoded (truncated, damaged, not what its name says) is a :class:`DataError` naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dr_fdsl.errors import DataError
from dr_fdsl.manifest import digest_file

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}  # what an image folder's loader reads (and torchvision decodes)
# Images it cannot decode: refused by name rather than skipped (a class would silently train on fewer images).
UNREADABLE_IMAGES = {".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".heic"}


@dataclass
class ImageSet:
    """images: ``(N, 3, h, w)`` uint8; labels: ``(N,)`` int64 in ``[0, num_classes)``."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def few_shot(self, per_class: int, seed: int) -> ImageSet:
        """The first ``per_class`` images of each class after a seeded shuffle (the limited-data setting)."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        keep = torch.cat([order[self.labels[order] == c][:per_class] for c in range(self.num_classes)])
        keep = keep.sort().values
        return ImageSet(self.images[keep], self.labels[keep], self.num_classes)


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST format, optionally gzipped) as a uint8 tensor of its stored shape; a DataError naming the
    file when it cannot be read, is not unsigned-byte IDX, or holds more or fewer bytes than its header declares."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip: BadGzipFile is an OSError; truncated: EOFError
        raise DataError(f"'{path}' cannot be read ({type(err).__name__}: {err}); it is damaged or truncated: "
                        "install or download it again") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"'{path}' is not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"'{path}' is truncated: {len(data)} bytes, shorter than its own header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise DataError(f"'{path}' holds {len(data)} bytes, but its header declares shape {list(shape)} "
                        f"({expected} bytes): it is truncated or damaged; install or download it again")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*shape)


def fashion_mnist(train: bool, root: str | Path | None = None) -> ImageSet:
    split = "train" if train else "t10k"
    candidates = [Path(root), Path(root) / "FashionMNIST" / "raw"] if root else []
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        for suffix in (".gz", ""):
            images = folder / f"{split}-images-idx3-ubyte{suffix}"
            labels = folder / f"{split}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                pixels, classes = read_idx(images), read_idx(labels)
                if pixels.dim() != 3 or classes.dim() != 1 or len(pixels) != len(classes):
                    raise DataError(f"'{images}' ({list(pixels.shape)}) and '{labels}' ({list(classes.shape)}) do "
                                    "not pair up as N images with N labels; install or download them again")
                if len(classes) and int(classes.max()) >= 10:
                    raise DataError(f"'{labels}' holds label {int(classes.max())}; Fashion-MNIST has 10 classes")
                return ImageSet(pixels[:, None].expand(-1, 3, -1, -1).contiguous(), classes.long(), 10)  # grey: RGB
    raise DataError(f"Fashion-MNIST not found in {', '.join(map(str, candidates))}; install Debian's "
                    "dataset-fashion-mnist (make setup does) or pass --data-root with torchvision's copy")


def cifar(name: str, train: bool, root: str | Path, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        ds = cls(str(root), train=train, download=download)
    except Exception as err:  # no network, or files missing / failing torchvision's checksum
        damaged = damaged_cifar_files(cls, root)
        if damaged:
            raise DataError(f"'{damaged[0]}' is damaged or truncated (its MD5 is not torchvision's"
                            + (f"; {len(damaged) - 1} more {name} files too" if len(damaged) > 1 else "")
                            + f"); delete {'them' if len(damaged) > 1 else 'it'} and download {name} again") from err
        raise DataError(f"{name} is not in '{root}' and could not be downloaded ({err}); put torchvision's "
                        f"{name} files there or allow the download") from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(ds.targets, dtype=torch.long), len(ds.classes))


def damaged_cifar_files(cls, root: str | Path) -> list[Path]:
    """The files of torchvision's CIFAR dataset ``cls`` under ``root`` that are there but fail its MD5 check."""
    from torchvision.datasets import cifar

    folder = Path(root) / cls.base_folder
    files = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    return [folder / name for name, md5 in files
            if (folder / name).is_file() and not cifar.check_integrity(str(folder / name), md5)]


def class_folders(path: Path) -> list[str]:
    """The class folders of an image folder ``path``, sorted (label ``i`` is the ``i``-th), or [] if it has none."""
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def image_files(path: str | Path) -> list[tuple[int, Path]]:
    """``(label, file)`` of every image an image folder's loader reads, by class then file name; a DataError when
    ``path`` has no class folder, or a class folder holds no image (its class would be missing from training while
    evaluation counted over all of them)."""
    path = Path(path)
    classes = class_folders(path)
    if not classes:
        raise DataError(f"'{path}' is not an image folder (expected one sub-folder per class)")
    found = []
    for label, name in enumerate(classes):
        entries = sorted((path / name).iterdir())
        unreadable = [f for f in entries if f.suffix.lower() in UNREADABLE_IMAGES]
        if unreadable:
            raise DataError(f"'{unreadable[0]}' (and {len(unreadable) - 1} more like it in its class folder) is an "
                            f"image this loader cannot decode; convert it to PNG or JPEG, or move it out")
        files = [f for f in entries if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        if not files:
            raise DataError(f"class folder '{path / name}' holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "add its images or remove the folder")
        found += [(label, f) for f in files]
    return found


def image_folder(path: str | Path, size: int) -> ImageSet:
    """Every image under ``path/<class>/`` (:func:`image_files`) decoded and resized to ``size`` px squares; a
    DataError naming the first file that cannot be read or decoded."""
    from torchvision.io import ImageReadMode, decode_image

    images, labels = [], []
    files = image_files(path)
    for label, file in files:
        try:
            image = decode_image(torch.frombuffer(bytearray(file.read_bytes()), dtype=torch.uint8),
                                 ImageReadMode.RGB)
        except (OSError, RuntimeError, ValueError) as err:  # torchvision raises RuntimeError for a bad image
            raise DataError(f"image '{file}' cannot be read or decoded ({str(err).strip()[:200]}); replace or remove "
                            "it") from err
        images.append(F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                    antialias=True).round().clamp(0, 255).to(torch.uint8)[0])
        labels.append(label)
    return ImageSet(torch.stack(images), torch.tensor(labels), len(class_folders(Path(path))))


def folder_split(dataset: str, train: bool) -> Path:
    """The folder that ``load`` reads for ``folder:PATH``: ``PATH/train`` or ``PATH/val``. When both exist, their
    class folders must agree (a label must mean the same class in both); a training split alone is accepted (a match
    target reads nothing else)."""
    root = Path(dataset[len("folder:"):])
    split = root / ("train" if train else "val")
    if not split.is_dir():
        raise DataError(f"'{split}' is missing: a folder dataset holds PATH/train/<class>/ (and, to evaluate, "
                        f"PATH/val/<class>/ with the same class folders); given folder:{root}")
    classes = {s: class_folders(root / s) for s in ("train", "val") if (root / s).is_dir()}
    if len(classes) == 2 and classes["train"] != classes["val"]:
        only = sorted(set(classes["train"]) ^ set(classes["val"]))
        raise DataError(f"'{root}': the class folders of train/ ({', '.join(classes['train'][:5])}...) and val/ "
                        f"({', '.join(classes['val'][:5])}...) differ (e.g. {only[0]!r} is in one only); labels "
                        "would not mean the same class")
    return split


def load(dataset: str, train: bool, root: str | Path, size: int, download: bool = True) -> ImageSet:
    """``dataset``: ``fashion_mnist``, ``cifar10``, ``cifar100`` or ``folder:PATH`` (uses PATH/train, PATH/val)."""
    if dataset == "fashion_mnist":
        return fashion_mnist(train, root)
    if dataset in ("cifar10", "cifar100"):
        return cifar(dataset, train, root, download)
    if dataset.startswith("folder:"):
        return image_folder(folder_split(dataset, train), size)
    raise DataError(f"unknown dataset {dataset!r}: use fashion_mnist, cifar10, cifar100 or folder:PATH")


# --------------------------------------------------------------------------------------------------------
# Content digests of image folders (what a checkpoint's fingerprint records of a folder target)
# --------------------------------------------------------------------------------------------------------

_DIGEST_CACHE = "folder_digests"  # sub-folder of the cache directory given


def folder_digest(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """``"sha256 <hex> of <n> images"``: a digest of what :func:`image_folder` reads from ``path``, i.e. over every
    image file (:func:`image_files`, in that order), its path relative to ``path`` (so a file moved to another class
    counts) and the SHA-256 of its bytes.

    ``cache_dir``: a folder for ``folder_digests/<hash of path>.json``, each file's digest keyed by its size, mtime and
    ctime (nanoseconds), so that a later call re-reads only files changed since; the ctime, because a copy or
    ``touch -d`` can give a replaced file its old mtime but not its old ctime. None: no cache (every file read). The
    cache only saves reading: a cache that cannot be read or written is ignored.
    """
    path = Path(path)
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        cache_file = Path(os.path.expanduser(str(cache_dir))) / _DIGEST_CACHE / f"{key}.json"
    try:
        cached = json.loads(cache_file.read_text())["files"] if cache_file else {}
    except (OSError, ValueError, KeyError, TypeError):
        cached = {}
    files, lines = {}, []
    for _, file in image_files(path):
        name = file.relative_to(path).as_posix()
        stat = file.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        entry = cached.get(name) if isinstance(cached, dict) else None
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == stamp:
            digest = entry[3]
        else:
            try:
                digest = digest_file(file)
            except OSError as err:
                raise DataError(f"image '{file}' cannot be read ({err.strerror or err}); replace or remove it") from err
        files[name] = [*stamp, digest]
        lines.append(f"{name}\t{digest}\n")
    if cache_file is not None and files != cached:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")  # processes may write at once
            tmp.write_text(json.dumps({"folder": str(path.resolve()), "files": files}))
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return f"sha256 {hashlib.sha256(''.join(lines).encode()).hexdigest()} of {len(lines)} images"
