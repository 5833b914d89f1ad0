"""Content manifests: every change to a recorded file is caught and named."""

import json

import pytest

from dr_fdsl.errors import IntegrityError
from dr_fdsl.manifest import MANIFEST, digest_file, read_manifest, verify_manifest, write_manifest


def _folder(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello")
    write_manifest(tmp_path, extra={"step": 3})
    return tmp_path


def test_digest_is_sha256_of_the_bytes(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert digest_file(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_untouched_folder_verifies_and_keeps_extra(tmp_path):
    manifest = verify_manifest(_folder(tmp_path), exhaustive=True)
    assert manifest["step"] == 3 and sorted(manifest["files"]) == ["a.bin", "sub/b.txt"]


@pytest.mark.parametrize("change", ["same_size", "truncated", "deleted", "added", "unrecorded_name"])
def test_every_change_is_named(tmp_path, change):
    folder = _folder(tmp_path)
    names = None
    if change == "same_size":
        (folder / "a.bin").write_bytes(b"abd")
    elif change == "truncated":
        (folder / "sub" / "b.txt").write_text("hel")
    elif change == "deleted":
        (folder / "a.bin").unlink()
    elif change == "added":
        (folder / "c.bin").write_bytes(b"")
    else:
        names = ["c.bin"]
    with pytest.raises(IntegrityError) as err:
        verify_manifest(folder, "checkpoint", names=names, exhaustive=True)
    assert str(tmp_path) in str(err.value) and ("a.bin" in str(err.value) or "b.txt" in str(err.value)
                                                or "c.bin" in str(err.value))


def test_missing_or_unreadable_manifest(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    assert read_manifest(tmp_path) is None
    with pytest.raises(IntegrityError, match="has no content_hashes.json"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(IntegrityError, match="unreadable"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1}))
    with pytest.raises(IntegrityError, match="unreadable"):
        verify_manifest(tmp_path)
