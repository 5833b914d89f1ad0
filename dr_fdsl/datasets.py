"""Real image-classification data for judging pre-training by fine-tuning.

Every loader returns an :class:`ImageSet`: uint8 images ``(N, 3, h, w)`` in memory and int64 labels ``(N,)``
(small datasets; image folders are decoded once). Images are resized to the model's input on the device.

Sources:
    fashion_mnist  IDX files of Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), or
                   torchvision's copy (``ROOT/FashionMNIST/raw``)
    cifar10/100    torchvision's CIFAR datasets (downloaded into ROOT when the network allows)
    folder:PATH    an image folder (one sub-folder per class), e.g. ``PATH/train`` and ``PATH/val``
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dr_fdsl.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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
    """An IDX file (MNIST format, optionally gzipped) as a uint8 tensor of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(f"'{path}' is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).view(*shape)


def fashion_mnist(train: bool, root: str | Path | None = None) -> ImageSet:
    split = "train" if train else "t10k"
    candidates = [Path(root), Path(root) / "FashionMNIST" / "raw"] if root else []
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        for suffix in (".gz", ""):
            images = folder / f"{split}-images-idx3-ubyte{suffix}"
            labels = folder / f"{split}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                pixels = read_idx(images)[:, None].expand(-1, 3, -1, -1).contiguous()  # grey -> RGB
                return ImageSet(pixels, read_idx(labels).long(), 10)
    raise DataError(f"Fashion-MNIST not found in {', '.join(map(str, candidates))}; install Debian's "
                    "dataset-fashion-mnist (make setup does) or pass --data-root with torchvision's copy")


def cifar(name: str, train: bool, root: str | Path, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        ds = cls(str(root), train=train, download=download)
    except Exception as err:  # no network, or files missing / failing torchvision's checksum
        raise DataError(f"{name} is not in '{root}' and could not be downloaded ({err}); put torchvision's "
                        f"{name} files there or allow the download") from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(ds.targets, dtype=torch.long), len(ds.classes))


def image_folder(path: str | Path, size: int) -> ImageSet:
    """Every image under ``path/<class>/`` decoded and resized to ``size`` px squares (classes sorted)."""
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    if not classes:
        raise DataError(f"'{path}' is not an image folder (expected one sub-folder per class)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".webp"}:
                continue
            image = decode_image(torch.frombuffer(bytearray(file.read_bytes()), dtype=torch.uint8),
                                 ImageReadMode.RGB)
            images.append(F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                        antialias=True).round().clamp(0, 255).to(torch.uint8)[0])
            labels.append(label)
    if not images:
        raise DataError(f"'{path}' holds no images")
    return ImageSet(torch.stack(images), torch.tensor(labels), len(classes))


def load(dataset: str, train: bool, root: str | Path, size: int, download: bool = True) -> ImageSet:
    """``dataset``: ``fashion_mnist``, ``cifar10``, ``cifar100`` or ``folder:PATH`` (uses PATH/train, PATH/val)."""
    if dataset == "fashion_mnist":
        return fashion_mnist(train, root)
    if dataset in ("cifar10", "cifar100"):
        return cifar(dataset, train, root, download)
    if dataset.startswith("folder:"):
        root = Path(dataset[len("folder:"):])
        splits = {split: sorted(p.name for p in (root / split).iterdir() if p.is_dir()) if (root / split).is_dir()
                  else [] for split in ("train", "val")}
        if splits["train"] != splits["val"]:
            raise DataError(f"'{root}': the class folders of train/ ({', '.join(splits['train'][:5])}...) and val/ "
                            f"({', '.join(splits['val'][:5])}...) differ; labels would not mean the same class")
        return image_folder(root / ("train" if train else "val"), size)
    raise DataError(f"unknown dataset {dataset!r}: use fashion_mnist, cifar10, cifar100 or folder:PATH")
