"""Checkpoints that load no pickle, resume exactly or refuse, and never delete another run's work.

A checkpoint folder ``checkpoints/step_0001000/`` holds:

* what Accelerate's ``save_state`` writes for the prepared objects: ``model.safetensors`` (the objective's
  backbone), ``model_1.safetensors`` (auxiliary modules such as the leakage probe), ``optimizer*.bin`` and every
  process's ``random_states_<rank>.pkl``. ``load_state`` reads all of them with ``torch.load(weights_only=True)``;
  no custom object is registered, because Accelerate loads those with ``weights_only=False`` (a crafted file
  would run code).
* ``renderer.safetensors``: the rendering parameters, only when they train (a frozen renderer is rebuilt from
  the config: 1,000 categories x 10,000 points are 160 MB of unchanging colours and radii).
* ``mode.safetensors``: a renderer mode's own tensors (``RendererMode.state_tensors``: teach's EMA teacher and
  replayed tables), only for a mode that has any.
* ``trainer_state.json``: the step, the view order's position, the run id and the fingerprint of the settings
  a resume must share (:func:`fingerprint`; a checkpoint made before content keys holds the legacy one).
* ``content_hashes.json`` (:mod:`dr_fdsl.manifest`), written last: every file's size and SHA-256, each
  safetensors file's per-tensor SHA-256 (``tensors``), the step and the run id. Resume, export and fine-tuning
  check the files they read against it (:func:`verify_contents`) and refuse a changed, missing or added file by
  name; a checkpoint made before manifests existed has none and is used with a warning that it cannot be checked.

Only good weights are written (finite, with a finite loss on held-out views: ``save_checkpoint``), so the
checkpoint a non-finite loss names as "last good" resumes. Loading checks each safetensors header against the
state dict it fills (:mod:`dr_fdsl.safetensors_check`) and refuses non-finite weights.

The written folder is complete or absent: it is written under a temporary name and renamed. The learning-rate
schedule is not stored: it is recomputed from the current config and the step, so a resumed run with a new
``train.max_steps`` or ``optim.lr`` follows the new schedule.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from dr_fdsl import content_key, safetensors_check
from dr_fdsl.config import Config
from dr_fdsl.errors import CheckpointError, ConfigError, IntegrityError
from dr_fdsl.manifest import MANIFEST, read_manifest, verify_manifest, write_manifest
from dr_fdsl.modes import MODES
from dr_fdsl.render.settings import canonical_tables, table_param

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"  # Accelerate's name for the first prepared model (the objective's backbone)
RENDERER_FILE = "renderer.safetensors"
MODE_FILE = "mode.safetensors"  # a renderer mode's own tensors (RendererMode.state_tensors), when it has any
RANDOM_STATES = "random_states_{rank}.pkl"  # Accelerate's name
INCOMPLETE = ".incomplete_"  # the prefix of a save in progress (or interrupted)
_STEP_DIR = re.compile(r"^step_(\d+)$")
_RANDOM_STATE = re.compile(r"^random_states_\d+\.pkl$")
# What to do with a checkpoint whose files cannot be trusted: an older one is only resumed once it is the newest.
ANOTHER = ("resume from an earlier checkpoint (move this folder out of checkpoints/ first, then --resume latest) or "
           "start afresh")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def step_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f"step_{step:07d}"


def temporary_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f"{INCOMPLETE}step_{step:07d}"


def step_of(path: str | Path) -> int | None:
    """The step a checkpoint folder's name says (``step_0000200`` -> 200), or None for another name."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def free_output_dir(output_dir: str) -> str:
    """``output_dir``, or, when another run has used it (its checkpoints or its config are there), the first of
    ``output_dir-2``, ``-3``, ... that no run has used (timm's train script numbers its runs the same way)."""
    path = Path(output_dir)

    def used(folder: Path) -> bool:
        return bool(list_checkpoints(folder)) or (folder / "config.yaml").exists()

    if not used(path):
        return output_dir
    n = 2
    while used(path.parent / f"{path.name}-{n}"):
        n += 1
    return str(path.parent / f"{path.name}-{n}")


def refuse_to_overwrite(output_dir: str | Path, resume: str | None = None) -> None:
    """A run writes checkpoints only where it cannot overwrite or prune another run's, or newer ones of its own.

    A fresh run (``resume`` None; ``build_run`` gives it a free folder, :func:`free_output_dir`) or one resuming a
    checkpoint from elsewhere needs an ``output_dir`` without checkpoints; a run resuming one of its own must
    resume the newest (from an older one, its new checkpoints
    would be written between, and pruned against, the abandoned newer ones).
    """
    if resume not in (None, "latest"):
        given_folder(resume)
    found = list_checkpoints(output_dir)
    if not found:
        return
    if resume is None:
        raise CheckpointError(
            f"output_dir '{output_dir}' already holds checkpoints of another run (newest: {found[-1].name}); "
            f"continue it with --resume latest, or start a new run with another output_dir=...")
    if resume == "latest":
        return
    path = Path(resume).resolve()
    if path in (Path(output_dir).resolve(), checkpoint_dir(output_dir).resolve()):
        raise CheckpointError(
            f"--resume {resume}: that is the run's folder, not one of its checkpoints; give --resume latest (its "
            f"newest: {found[-1].name}) or a folder under {checkpoint_dir(output_dir)}")
    if path.parent != checkpoint_dir(output_dir).resolve():
        raise CheckpointError(
            f"--resume {resume}: that checkpoint is not in output_dir '{output_dir}', which holds checkpoints of "
            f"its own; resume it with its own run's output_dir, or choose an empty output_dir")
    if path != found[-1].resolve():
        raise CheckpointError(
            f"--resume {resume}: newer checkpoints of this run exist (newest: {found[-1].name}) and the resumed run "
            f"would write between and over them; resume the newest, move the newer ones away, or copy this one to "
            f"a new output_dir's checkpoints/ folder")


# --------------------------------------------------------------------------------------------------------
# Fingerprints: what a resume must share with the checkpoint
# --------------------------------------------------------------------------------------------------------


# What a resume must share with the checkpoint, as config keys (a section stands for its content fields). Each is
# recorded only where it differs from its default (dr_fdsl/content_key.py): a new option at its default leaves every
# checkpoint resumable, and needs no entry here unless it must be shared (then it goes in one of the two lists).
REQUIRED = ("bank", "model.name", "model.patch_size", "train.objective", "renderer.mode", "train.probe", "optim.name",
            # what the rendering tables' values mean: their shape, range, parameterisation and initial draw
            "renderer.image_size", "renderer.share_colors", "renderer.share_radii", "renderer.radius_min",
            "renderer.radius_max", "renderer.color_init", "renderer.palette_size", "renderer.init_seed",
            "renderer.color_param", "renderer.radius_param")
EXACT = ("seed", "renderer", "train.batch_size", "train.grad_accum", "image_aug", "data", "train.mixed_precision")


def fingerprint(cfg: Config, num_processes: int) -> dict:
    """Settings a checkpoint must share with the run that resumes it: ``{"schema": 2, "required": {dotted key:
    value}, "exact": {...}}``, each group holding the values of its keys that differ from their defaults.

    ``required`` (:data:`REQUIRED` and ``num_processes``, always recorded): what gives the saved tensors their
    meaning (bank, renderer tables, their parameterisation and radius range, model, objective, optimiser, mode,
    processes). ``exact`` (:data:`EXACT`, the objective's own sections such as ``mim``, and the mode's entries: in
    mode match the target settings and, for a folder target, a digest of its images' bytes): what changes the random
    stream; a resume with other values runs, but not as the original would have. The table parameterisations are
    recorded as used (:func:`~dr_fdsl.render.settings.canonical_tables`).
    """
    cfg = dataclasses.replace(cfg, renderer=canonical_tables(cfg.renderer))
    required = {"num_processes": num_processes}
    for key in REQUIRED:
        required.update(content_key.changed_at(cfg, key))
    exact = {}
    for key in (*EXACT, *_objective_sections(cfg)):
        exact.update(content_key.changed_at(cfg, key))
    for name, value in MODES.get(cfg.renderer.mode).fingerprint(cfg).items():  # the mode's own (match: the target set)
        exact.update(content_key.changed(value, name) if dataclasses.is_dataclass(value) else {name: value})
    return {"schema": content_key.SCHEMA, "required": dict(sorted(required.items())),
            "exact": dict(sorted(exact.items()))}


def _objective_sections(cfg: Config) -> list[str]:
    """An objective's own config sections (mim's; classify+mim's: mim's), if it has any."""
    return [part for part in cfg.train.objective.split("+") if hasattr(cfg, part)]


def legacy_fingerprint(cfg: Config, num_processes: int) -> dict:
    """Only for reading checkpoints made before content keys: the fingerprint they recorded for ``cfg`` (whole
    sections as ``content_key.legacy_settings``; a few keys named only when not at their default)."""
    bank, renderer = (content_key.legacy_settings(getattr(cfg, k), k) for k in ("bank", "renderer"))
    required = {"bank": bank, "model": cfg.model.name, "objective": cfg.train.objective,
                "mode": cfg.renderer.mode, "probe": cfg.train.probe, "num_processes": num_processes,
                "tables": {k: renderer[k] for k in ("image_size", "share_colors", "share_radii", "radius_min",
                                                   "radius_max", "color_init", "palette_size", "init_seed")
                           if k in renderer}}
    for key in ("color_param", "radius_param"):  # as used ("auto" resolved); named when not squash, the value of
        used = table_param(cfg.renderer, key)  # checkpoints made before the keys existed, so that they still match
        if used != "squash":
            required["tables"][key] = used
    if cfg.optim.name != "adamw":  # the optimiser's state tensors mean other things (named only when not the default,
        required["optimizer"] = cfg.optim.name  # so that checkpoints made before the key existed still match)
    if cfg.model.patch_size:  # the same: named only when set
        required["patch_size"] = cfg.model.patch_size
    sections = {part: content_key.legacy_settings(getattr(cfg, part), part) for part in _objective_sections(cfg)}
    exact = {"seed": cfg.seed, "renderer": renderer, "batch_size": cfg.train.batch_size,
             "objective_settings": (next(iter(sections.values())) if len(sections) == 1 else sections or None),
             "grad_accum": cfg.train.grad_accum, "image_aug": content_key.legacy_settings(cfg.image_aug, "image_aug"),
             "data": content_key.legacy_settings(cfg.data, "data"), "mixed_precision": cfg.train.mixed_precision}
    exact.update({name: content_key.legacy_settings(value, name) if dataclasses.is_dataclass(value) else value
                  for name, value in MODES.get(cfg.renderer.mode).fingerprint(cfg).items()})
    return {"required": required, "exact": exact}


# The legacy fingerprint's names of config keys, so that its mismatches are named as the config names them.
_LEGACY_NAMES = {"model": "model.name", "objective": "train.objective", "mode": "renderer.mode",
                 "probe": "train.probe", "tables": "renderer", "optimizer": "optim.name",
                 "patch_size": "model.patch_size", "batch_size": "train.batch_size", "grad_accum": "train.grad_accum",
                 "mixed_precision": "train.mixed_precision"}


def _differences(saved: dict, current: dict, keyed: bool) -> str:
    """The dotted keys whose values differ, either way (``"key: checkpoint A, config B"``); in a fingerprint of
    content keys a key one side lacks holds its default."""
    if not keyed:
        saved, current = ({_LEGACY_NAMES.get(k, k): v for k, v in d.items()} for d in (saved, current))
    return "; ".join(content_key.differences(saved, current, "checkpoint", "config",
                                             absent="default" if keyed else "none"))


# --------------------------------------------------------------------------------------------------------
# Writing and reading
# --------------------------------------------------------------------------------------------------------


def finalize(tmp: Path, state: dict, keep: int, run_id: str) -> Path:
    """Main process: writes the state file and, last, the manifest of every file; renames ``tmp`` into place, then
    deletes this run's checkpoints beyond the newest ``keep`` (folders whose state names another run id are never
    touched)."""
    # "manifest" in the state says that one was written: a checkpoint that says so and lacks it was changed.
    (tmp / STATE_FILE).write_text(json.dumps({**state, "run_id": run_id, "manifest": MANIFEST}, indent=2))
    tensors = {p.name: safetensors_check.tensor_digests(p) for p in sorted(tmp.glob("*.safetensors"))}
    write_manifest(tmp, extra={"step": state["step"], "run_id": run_id, "tensors": tensors})
    final = step_path(tmp.parent.parent, state["step"])
    if final.exists():
        if _run_id(final) != run_id:
            raise CheckpointError(f"'{final}' belongs to another run; not overwritten (choose another output_dir)")
        shutil.rmtree(final)  # this run's own, e.g. written again at the last step
    os.replace(tmp, final)
    mine = [p for p in list_checkpoints(tmp.parent.parent) if _run_id(p) == run_id]
    for old in mine[:-keep] if keep > 0 else []:  # keep 0: keep every checkpoint
        shutil.rmtree(old, ignore_errors=True)
    return final


def _run_id(path: Path) -> str | None:
    try:
        return json.loads((path / STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def resolve(output_dir: str | Path, resume: str) -> Path:
    """``"latest"`` (the newest complete checkpoint of ``output_dir``) or a checkpoint folder's path."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"--resume latest: no checkpoint under '{checkpoint_dir(output_dir)}'; start "
                                  f"without --resume, or give a checkpoint folder")
        return found[-1]
    return given_folder(resume)


def given_folder(resume: str) -> Path:
    """The checkpoint folder given to ``--resume``, refused when it does not exist or is an interrupted save."""
    path = Path(resume)
    if not path.exists():
        raise CheckpointError(f"--resume {resume}: no such checkpoint folder (it does not exist); give --resume "
                              "latest or an existing output_dir/checkpoints/step_N folder")
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: that is a file, not a checkpoint folder; give --resume latest or "
                              "an output_dir/checkpoints/step_N folder")
    if path.name.startswith(INCOMPLETE):
        raise CheckpointError(f"--resume {resume}: that folder is an interrupted, incomplete save (a checkpoint is "
                              "written under this temporary name and renamed only once complete); resume a "
                              "complete one: --resume latest (the newest) or an output_dir/checkpoints/step_N folder")
    return path


def pretrained_folder(given: str, argument: str) -> Path:
    """The checkpoint folder of a pre-training run given to a tool: the newest complete checkpoint of an
    ``output_dir``, or a checkpoint folder itself. ``argument`` names where it was given in messages
    (``"config key 'pretrained'"``, ``"RUN"``).

    Raises:
        ConfigError: it does not exist, is an interrupted save, holds no complete checkpoint, or is no run at all.
    """
    path = Path(given)
    if not path.exists():
        raise ConfigError(f"{argument}: '{given}' does not exist; give a pre-training output_dir or one of its "
                          "checkpoint folders (output_dir/checkpoints/step_N)")
    if path.name.startswith(INCOMPLETE):
        raise ConfigError(f"{argument}: '{given}' is an interrupted, incomplete save (a checkpoint is written under "
                          "this temporary name and renamed only once complete); give the run's output_dir (its "
                          "newest complete checkpoint) or a complete step_N folder beside it")
    if (path / "checkpoints").is_dir():
        found = list_checkpoints(path)
        if not found:
            raise ConfigError(f"{argument}: '{given}' holds no complete checkpoint under checkpoints/ (the run "
                              "stopped before its first save, or every save was interrupted); train it longer or "
                              "give another run")
        return found[-1]
    if path.is_dir() and ((path / MODEL_FILE).exists() or (path / STATE_FILE).exists() or step_of(path) is not None):
        return path
    raise ConfigError(f"{argument}: '{given}' is not a run: expected a pre-training output_dir (with checkpoints/) or "
                      "one of its checkpoint folders (output_dir/checkpoints/step_N)")


def verify_contents(path: Path, names: Iterable[str] | None = None, random_states: bool = True,
                    fix: str = ANOTHER) -> dict | None:
    """Checks checkpoint ``path`` against its manifest before any of its files is trusted.

    Args:
        names: the files to check (default every recorded one, and no file may be present that is not recorded).
        random_states: False leaves the random states to the caller (a changed one makes a resume inexact only).
        fix: what the user should do instead, ending every message (default: for ``--resume``).

    Returns the manifest, or None for a checkpoint made before manifests existed (none, and a state file that does
    not say one was written): its files cannot be checked. Raises :class:`IntegrityError` naming the file that is
    missing, added, changed (for a safetensors file, also the tensors whose bytes differ), or a folder whose name
    says another step than its manifest.
    """
    manifest = read_manifest(path, "checkpoint")
    if manifest is None:
        if _states_manifest(path):
            raise IntegrityError(f"checkpoint '{path}': its {MANIFEST} is missing although its {STATE_FILE} says it "
                                 f"was written (removed since), so its files cannot be checked; {fix}")
        return None
    recorded, exhaustive = manifest["files"], names is None
    for name in [n for n in (recorded if names is None else names) if random_states or not _RANDOM_STATE.match(n)]:
        try:
            verify_manifest(path, "checkpoint", names=[name])
        except IntegrityError as err:
            raise IntegrityError(f"{err}{_changed_tensors(path, name, manifest)}; {fix}") from err
    if exhaustive:
        try:
            verify_manifest(path, "checkpoint", names=[], exhaustive=True)
        except IntegrityError as err:
            raise IntegrityError(f"{err}; remove that file, or {fix}") from err
    named = step_of(path)
    if named is not None and manifest.get("step") != named:
        raise IntegrityError(f"checkpoint '{path}': the folder's name says step {named}, its {MANIFEST} step "
                             f"{manifest.get('step')}: a checkpoint copied or renamed from another step; {fix}")
    return manifest


def _states_manifest(path: Path) -> bool:
    try:
        return json.loads((path / STATE_FILE).read_text()).get("manifest") == MANIFEST
    except (OSError, ValueError, AttributeError):
        return False  # read_state reports an unreadable state file


def _changed_tensors(path: Path, name: str, manifest: dict) -> str:
    """For a changed safetensors file with per-tensor digests: which tensors' bytes differ from those recorded."""
    recorded = manifest.get("tensors", {}).get(name)
    if not recorded or not (path / name).is_file():
        return ""
    try:
        now = safetensors_check.tensor_digests(path / name)
    except IntegrityError:
        return ""  # no layout to compare by: the message says it was damaged or truncated
    changed = sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
    if not changed:
        return " (every tensor's bytes are as recorded: its header or padding changed)"
    return f" (tensors whose bytes differ from those recorded: {', '.join(changed[:6])}" \
           f"{', ...' if len(changed) > 6 else ''})"


def read_state(path: Path, cfg: Config, num_processes: int, allow_inexact: bool = False) -> dict:
    """The saved state of checkpoint ``path`` after checking it can be resumed as asked with ``cfg``.

    Its fingerprint is compared with :func:`fingerprint` of ``cfg``, or for a checkpoint made before content keys
    (no ``"schema"``) with :func:`legacy_fingerprint`. First checks every file against the manifest
    (:func:`verify_contents`; ``IntegrityError`` naming the file), the random states excepted: a changed or missing
    one makes the resume inexact, like an unreadable one. Refuses
    (``CheckpointError`` with the reason) a corrupt state file, other ``required`` settings, and, unless
    ``allow_inexact``, other ``exact`` settings or a missing, changed or unreadable random state of any process.
    ``state["unchecked"]`` is a warning for a checkpoint made before manifests (None otherwise).
    """
    manifest = verify_contents(path, random_states=False)
    try:
        state = json.loads((path / STATE_FILE).read_text())
        if "stream_index" not in state and "fingerprint" in state:
            raise CheckpointError(f"checkpoint '{path}' was made by an earlier version of dr_fdsl (before safe "
                                  "checkpoints), whose states cannot be resumed; start the run afresh")
        int(state["step"]), int(state["stream_index"])
        saved = state["fingerprint"]
        dict(saved["required"]), dict(saved["exact"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint '{path}' is incomplete or corrupt ({STATE_FILE}: {err!r}); resume from "
                              f"another one (--resume PATH) or start afresh") from err
    keyed = content_key.is_keyed(saved)
    if keyed and saved["schema"] != content_key.SCHEMA:
        raise CheckpointError(f"checkpoint '{path}' records its settings under schema {saved['schema']!r}, and this "
                              f"version of dr_fdsl reads {content_key.SCHEMA}; resume it with the version that made it")
    current = fingerprint(cfg, num_processes) if keyed else legacy_fingerprint(cfg, num_processes)
    differing = _differences(saved["required"], current["required"], keyed)
    if differing:
        raise CheckpointError(f"checkpoint '{path}' was made with other settings ({differing}); resume with the "
                              f"config of that run (its config.yaml) or start a new output_dir")
    problems = []
    differing = _differences(saved["exact"], current["exact"], keyed)
    if differing:
        problems.append(f"settings that change the random stream differ ({differing})")
    unreadable = _random_state_problems(path, num_processes)
    problems += [f"{name}: {why}" for name, why in unreadable]
    if manifest is not None:
        problems += [f"{name}: changed since it was written (its digest differs from {MANIFEST}'s)"
                     for name in _changed_random_states(path, manifest, {n for n, _ in unreadable})]
    if problems and not allow_inexact:
        raise CheckpointError(
            f"checkpoint '{path}' cannot be resumed exactly: {'; '.join(problems)}. Resume with the settings of "
            "that run, or pass --allow-inexact-resume to continue with other randomness")
    state["inexact"] = problems
    state["unchecked"] = None if manifest is not None else (
        f"checkpoint '{path}' has no {MANIFEST} (made before content manifests): its files cannot be checked "
        "against their digests")
    return state


def _changed_random_states(path: Path, manifest: dict, reported: set[str]) -> list[str]:
    """Recorded random states (not already reported as missing or unreadable) that differ from the record."""
    changed = []
    for name in sorted(n for n in manifest["files"] if _RANDOM_STATE.match(n) and n not in reported):
        try:
            verify_manifest(path, "checkpoint", names=[name])
        except IntegrityError:
            changed.append(name)
    return changed


def check_weight_headers(path: Path, files: Mapping[str, Mapping[str, torch.Tensor]], digests: bool) -> None:
    """Before loading: every safetensors file of checkpoint ``path`` that ``files`` names (file name -> the state
    dict it is loaded into) exists, parses, tiles its data exactly and declares exactly the names, dtypes and
    shapes of its state dict. Without ``digests`` (a checkpoint made before manifests), also that its tensors lie
    in the order safetensors writes them, which an exchange of two tensors' offsets breaks. Raises
    :class:`IntegrityError` naming the file and tensor."""
    for name, expected in files.items():
        if not (path / name).is_file():
            raise IntegrityError(f"checkpoint '{path}': '{name}' is missing; {ANOTHER}")
        try:
            header = safetensors_check.read_header(path / name)
            safetensors_check.check_expected(path / name, header, expected)
            if not digests:
                safetensors_check.check_writer_order(path / name, header)
        except IntegrityError as err:
            raise IntegrityError(f"checkpoint {err}; {ANOTHER}") from err


def refuse_non_finite(path: Path, files: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """After loading: every floating-point tensor the checkpoint's files gave is finite (file name -> the loaded
    state dict). Raises :class:`IntegrityError` naming the file and tensor."""
    for name, tensors in files.items():
        bad = safetensors_check.first_non_finite(tensors)
        if bad is not None:
            raise IntegrityError(f"checkpoint '{path}': '{name}' holds non-finite values in tensor '{bad}' (NaN or "
                                 f"infinity: weights that diverged); {ANOTHER}")


def _random_state_problems(path: Path, num_processes: int) -> list[tuple[str, str]]:
    """Every process's random-state file must exist and load with ``weights_only=True`` (Accelerate would only
    log a failure and continue with other randomness)."""
    from accelerate.utils import load

    problems = []
    for rank in range(num_processes):
        name = RANDOM_STATES.format(rank=rank)
        try:
            states = load(path / name)
            if not isinstance(states, dict) or "torch_manual_seed" not in states:
                raise ValueError("not a random-state dictionary")
        except Exception as err:  # missing, truncated, or a pickle that weights_only refuses
            problems.append((name, f"missing or unreadable ({type(err).__name__}: {str(err)[:160]})"))
    return problems
