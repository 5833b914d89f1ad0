"""Checkpoints: Accelerate's ``save_state`` written whole (into a temporary folder, then renamed), pruned to
the newest few, and checked against the run's config before ``load_state``.

A checkpoint folder ``checkpoints/step_0001000/`` holds what ``save_state`` writes (classifier, renderer, probe,
optimisers, schedulers, every process's RNG states, the per-rank view-stream generators) and
``trainer_state.json`` with the step and the fingerprint of the settings a resume must share.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from, with the reason and what to do."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def temporary_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f".incomplete_step_{step:07d}"


def finalize(tmp: Path, step: int, fingerprint: dict, keep: int) -> Path:
    """Main process: writes the state file, renames ``tmp`` into place, deletes all but the newest ``keep``."""
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint}, indent=2))
    final = tmp.parent / f"step_{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(tmp.parent.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve(output_dir: str | Path, resume: str) -> Path:
    """``"latest"`` (the newest complete checkpoint of ``output_dir``) or a checkpoint folder's path."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"--resume latest: no checkpoint under '{checkpoint_dir(output_dir)}'; start "
                                  f"without --resume, or give a checkpoint folder")
        return found[-1]
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
    return path


def read_state(path: Path, fingerprint: dict) -> int:
    """The step stored in checkpoint ``path``, after checking it was made with the same settings."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        step = int(state["step"])
        saved = state["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint '{path}' is incomplete or corrupt ({STATE_FILE}: {err}); resume from "
                              f"another one (--resume PATH) or start afresh") from err
    differing = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if differing:
        detail = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in differing.items())
        raise CheckpointError(f"checkpoint '{path}' was made with other settings ({detail}); resume with the "
                              f"config of that run (its config.yaml) or start a new output_dir")
    return step
