"""Real-data loaders (dr_fdsl/datasets.py): every file that cannot be used is named in one line, empty classes are
refused, the documented folder layouts are accepted, and a folder's content digest follows its bytes."""

import gzip
import json
import os
import struct

import pytest
import torch
from torchvision.io import write_png

from dr_fdsl import datasets
from dr_fdsl.config import load_config
from dr_fdsl.errors import CheckpointError, DataError
from tests.test_compare_signals import image_folder


def test_a_damaged_image_is_named(tmp_path):
    dataset = image_folder(tmp_path)
    bad = tmp_path / "train" / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=rf"image '{bad}' cannot be read or decoded \(.*\); replace or remove it"):
        datasets.load(dataset, True, "unused", 8)
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=rf"image '{bad}' cannot be read or decoded"):
        datasets.load(dataset, True, "unused", 8)


def test_an_empty_class_folder_is_refused(tmp_path):
    dataset = image_folder(tmp_path, classes=("a", "b", "c"))
    for split in ("train", "val"):
        for image in (tmp_path / split / "b").iterdir():
            image.unlink()
    (tmp_path / split / "b" / "notes.txt").write_text("not an image")
    for train in (True, False):  # fine-tuning's training split and its evaluation split alike
        split = "train" if train else "val"
        with pytest.raises(DataError, match=rf"class folder '{tmp_path / split / 'b'}' holds no image"):
            datasets.load(dataset, train, "unused", 8)


def test_an_image_the_loader_cannot_decode_is_refused_not_skipped(tmp_path):
    """A .bmp among PNGs would otherwise be left out in silence (the class trains on fewer images)."""
    dataset = image_folder(tmp_path, classes=("a", "b"))
    (tmp_path / "train" / "b" / "scan.bmp").write_bytes(b"BM")
    with pytest.raises(DataError, match=r"scan.bmp' \(and 0 more like it in its class folder\) is an image this loader "
                                        r"cannot decode; convert it to PNG or JPEG"):
        datasets.load(dataset, True, "unused", 8)
    datasets.load(dataset, False, "unused", 8)  # the other split is fine


def test_a_folder_with_train_only_serves_as_a_match_target(tmp_path):
    """docs/match.md: a target is the training split, labels dropped; fine-tuning also needs val/, and says so."""
    from dr_fdsl.match import load_targets

    dataset = image_folder(tmp_path, splits=("train",))
    cfg = load_config(None, ["renderer.mode=match", f"match.dataset={dataset}", "renderer.image_size=16"])
    assert load_targets(cfg).shape == (4, 3, 16, 16)
    with pytest.raises(DataError, match=rf"'{tmp_path / 'val'}' is missing: a folder dataset holds PATH/train"):
        datasets.load(dataset, False, "unused", 8)
    (tmp_path / "val" / "a").mkdir(parents=True)  # both splits there: their classes must agree
    with pytest.raises(DataError, match=r"differ \(e.g. 'b' is in one only\)"):
        datasets.load(dataset, True, "unused", 8)


def write_idx(path, tensor):
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + tensor.numpy().tobytes())


def test_a_truncated_or_mismatched_idx_file_is_named(tmp_path):
    images, labels = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(images, torch.randint(0, 255, (6, 28, 28), dtype=torch.uint8))
    write_idx(labels, torch.arange(6, dtype=torch.uint8))
    assert len(datasets.fashion_mnist(True, tmp_path)) == 6
    whole = images.read_bytes()
    images.write_bytes(whole[:len(whole) // 2])  # a cut-off download: the gzip stream ends early
    with pytest.raises(DataError, match=rf"'{images}' cannot be read \(EOFError"):
        datasets.fashion_mnist(True, tmp_path)
    with gzip.open(images, "wb") as f:  # a whole gzip of a cut IDX: fewer bytes than the header declares
        f.write(gzip.decompress(whole)[:-100])
    with pytest.raises(DataError, match=rf"'{images}' holds 4620 bytes, but its header declares shape \[6, 28, 28\]"):
        datasets.fashion_mnist(True, tmp_path)
    write_idx(images, torch.zeros(5, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"do not pair up as N images with N labels"):
        datasets.fashion_mnist(True, tmp_path)


def test_a_damaged_cifar_file_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"truncated")
    with pytest.raises(DataError, match=rf"'{folder / 'data_batch_1'}' is damaged or truncated \(its MD5 is not "
                                        r"torchvision's\); delete it and download cifar10 again"):
        datasets.load("cifar10", True, tmp_path, 32, download=False)


# ------------------------------------------------------------------------------------------------------------
# Content digests
# ------------------------------------------------------------------------------------------------------------


def test_the_folder_digest_follows_the_bytes_and_reads_only_changed_files(tmp_path, monkeypatch):
    image_folder(tmp_path / "data")
    train, cache = tmp_path / "data" / "train", tmp_path / "cache"
    reads = []
    real_digest = datasets.digest_file
    monkeypatch.setattr(datasets, "digest_file", lambda path: reads.append(path.name) or real_digest(path))
    first = datasets.folder_digest(train, cache)
    assert first.endswith(" of 4 images") and len(reads) == 4
    reads.clear()
    assert datasets.folder_digest(train, cache) == first and reads == []  # unchanged: nothing re-read
    assert datasets.folder_digest(train, None) == first and len(reads) == 4  # no cache: the same digest
    # Another image of the same size, given back its old mtime: found by its ctime, and its digest differs.
    image = train / "b" / "0.png"
    stat = image.stat()
    write_png(torch.full((3, 8, 8), 200, dtype=torch.uint8), str(image))
    image.write_bytes(image.read_bytes()[:stat.st_size].ljust(stat.st_size, b"\0"))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reads.clear()
    changed = datasets.folder_digest(train, cache)
    assert reads == ["0.png"] and changed != first
    (train / "b" / "0.png").rename(train / "a" / "9.png")  # the same bytes under another class
    assert datasets.folder_digest(train, cache) not in (first, changed)


def test_a_folder_target_whose_images_changed_resumes_inexact_and_says_so(tmp_path, bank_dir, capsys):
    from dr_fdsl.engine import build_run, resume, save_checkpoint, train_step
    from tests.conftest import tiny

    dataset = image_folder(tmp_path / "targets", splits=("train",))

    def config():
        return tiny(tmp_path, bank_dir, "renderer.mode=match", f"match.dataset={dataset}", "match.batch=4",
                    "renderer.raster_backend=sort", "train.max_steps=2", "train.probe=false")

    run = build_run(config())
    train_step(run)
    save_checkpoint(run)
    resume(build_run(config(), resume="latest"), "latest")  # the same images: exact (no error)
    image = tmp_path / "targets" / "train" / "a" / "0.png"
    write_png(torch.full((3, 8, 8), 255, dtype=torch.uint8), str(image))  # replaced under the same name
    changed = build_run(config(), resume="latest")
    with pytest.raises(CheckpointError, match=r"cannot be resumed exactly: settings that change the random stream "
                                              r"differ \(match_images: checkpoint 'sha256 [0-9a-f]{64} of 4 images', "
                                              r"config 'sha256 [0-9a-f]{64} of 4 images'\)"):
        resume(changed, "latest")
    capsys.readouterr()
    resume(changed, "latest", allow_inexact=True)
    assert "warning: resuming inexactly: settings that change the random stream differ (match_images:" in \
        capsys.readouterr().out


def test_a_checkpoint_records_the_target_images_the_run_loaded(tmp_path, bank_dir):
    """Images replaced while a run trains do not become the checkpoint's record: it keeps the digest of what the
    run loaded (and read at load, not at every save)."""
    from dr_fdsl.checkpoint import list_checkpoints
    from dr_fdsl.engine import build_run, save_checkpoint, train_step
    from dr_fdsl.match import target_digest
    from tests.conftest import tiny

    dataset = image_folder(tmp_path / "targets", splits=("train",))
    cfg = tiny(tmp_path, bank_dir, "renderer.mode=match", f"match.dataset={dataset}", "match.batch=4",
               "renderer.raster_backend=sort", "train.max_steps=2", "train.probe=false")
    run = build_run(cfg)
    loaded = target_digest(cfg)
    write_png(torch.full((3, 8, 8), 255, dtype=torch.uint8), str(tmp_path / "targets" / "train" / "a" / "0.png"))
    train_step(run)
    save_checkpoint(run)
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "trainer_state.json").read_text())
    assert state["fingerprint"]["exact"]["match_images"] == loaded
