"""Content manifests: a folder's files with their sizes and SHA-256 digests, written last, checked before use.

A folder that the project writes and later trusts (a checkpoint) gets ``content_hashes.json`` as its last file
(a static export records each PNG's digest in its own ``manifest.csv`` instead, :mod:`dr_fdsl.static`)::

    {"format": 1, "files": {"model.safetensors": {"bytes": 12345, "sha256": "9f86d0..."}, ...}, ...extra}

Its presence means the folder was complete when written; :func:`verify_manifest` re-hashes the files and refuses
one that is missing, changed (truncated, damaged, copied from another folder) or, where asked, not recorded.
The manifest cannot tell a folder rewritten as a whole by someone else: it is a check against accidents and
mix-ups, not a signature.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from dr_fdsl.errors import IntegrityError

MANIFEST = "content_hashes.json"
FORMAT = 1
_CHUNK = 1 << 20


def digest_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex (read in 1 MiB chunks, so a large file costs no memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` (relative POSIX paths, sorted), the manifest itself excluded."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def write_manifest(folder: str | Path, names: Iterable[str] | None = None, extra: dict | None = None) -> Path:
    """Hashes ``names`` (paths relative to ``folder``; default: every file under it) and writes the manifest,
    through a temporary file and a rename, so a manifest is whole or absent. Call it after every other file is
    written. ``extra``: JSON-serialisable facts to record beside the files (e.g. the step of a checkpoint)."""
    folder = Path(folder)
    files = {}
    for name in (sorted(names) if names is not None else _files(folder)):
        path = folder / name
        files[name] = {"bytes": path.stat().st_size, "sha256": digest_file(path)}
    path = folder / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **(extra or {}), "files": files}, indent=1))
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | Path, what: str = "folder") -> dict | None:
    """The manifest of ``folder``, or None when it has none (written before manifests existed, or incomplete).
    Raises :class:`IntegrityError` naming the file when it exists but cannot be read."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' table")
        return manifest
    except (OSError, ValueError, AttributeError) as err:
        raise IntegrityError(f"{what} '{folder}': its {MANIFEST} is unreadable ({err}); the folder cannot be "
                             "trusted: write it again") from err


def verify_manifest(folder: str | Path, what: str = "folder", names: Iterable[str] | None = None,
                    exhaustive: bool = False) -> dict:
    """Checks every file the manifest of ``folder`` records (or only ``names``) against its size and digest.

    Args:
        what: how the folder is named in messages ("checkpoint", "static dataset").
        names: files that must be recorded and match; default every recorded file.
        exhaustive: also refuse files present in the folder that the manifest does not record.

    Returns the manifest. Raises :class:`IntegrityError` naming the first file that is missing, unrecorded or
    changed, or the manifest itself when it is missing or unreadable.
    """
    folder = Path(folder)
    manifest = read_manifest(folder, what)
    if manifest is None:
        raise IntegrityError(f"{what} '{folder}' has no {MANIFEST}: it is incomplete or was written by an earlier "
                             "version, and its files cannot be checked")
    recorded = manifest["files"]
    for name in (names if names is not None else recorded):
        entry, path = recorded.get(name), folder / name
        if entry is None:
            raise IntegrityError(f"{what} '{folder}': '{name}' is not recorded in its {MANIFEST}")
        if not path.is_file():
            raise IntegrityError(f"{what} '{folder}': '{name}' is missing")
        size = path.stat().st_size
        if size != entry.get("bytes") or digest_file(path) != entry.get("sha256"):
            raise IntegrityError(f"{what} '{folder}': '{name}' does not match the digest recorded when it was "
                                 f"written ({size} bytes, recorded {entry.get('bytes')}): it was damaged, "
                                 "truncated or replaced")
    if exhaustive:
        extra = sorted(set(_files(folder)) - set(recorded))
        if extra:
            raise IntegrityError(f"{what} '{folder}': '{extra[0]}' is not recorded in its {MANIFEST} (added after "
                                 "it was written)")
    return manifest
