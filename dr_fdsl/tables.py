"""A trained run's learnt rendering tables, drawn by a frozen renderer (``renderer.tables``).

A run of a learnable mode (joint, adversarial, match, teach, lookahead) stores its colour and radius tables in each
checkpoint's ``renderer.safetensors``. Its *frozen equivalent* is the run's own config with ``renderer.mode:
frozen``, the table parameterisations the run used written out (``auto`` means another one under frozen) and
``renderer.tables`` naming that checkpoint: a renderer built from it draws what the trained renderer draws, bit for
bit, and a frozen training with it trains on those images (in the loop, or from the static dataset that
``tools/render_dataset.py --run`` exports). The tables' identity is the SHA-256 of that file as the checkpoint's
manifest records it: a static dataset records it, and a training refuses a dataset whose tables are not its own.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from dr_fdsl import checkpoint, safetensors_check
from dr_fdsl.config import Config, load_config, validate_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.manifest import digest_file
from dr_fdsl.render.settings import table_param

KEY = "config key 'renderer.tables'"


def tables_folder(given: str, argument: str = KEY) -> Path:
    """The checkpoint folder whose ``renderer.safetensors`` ``given`` (an ``output_dir``: its newest complete
    checkpoint; or a checkpoint folder) names.

    Raises:
        ConfigError: no such run or checkpoint (:func:`~dr_fdsl.checkpoint.pretrained_folder`), or one of a frozen
            run, which stores no tables (they are its config's).
    """
    folder = checkpoint.pretrained_folder(given, argument)
    if not (folder / checkpoint.RENDERER_FILE).is_file():
        raise ConfigError(f"{argument}: checkpoint '{folder}' holds no {checkpoint.RENDERER_FILE}: a frozen run's "
                          "tables are its config's and are not stored; use that config as it is")
    return folder


def tables_digest(given: str, argument: str = KEY) -> str:
    """The SHA-256 (hex) of the learnt tables ``given`` names, once the file is checked against its checkpoint's
    manifest (a checkpoint made before manifests: the file's own digest).

    Raises:
        ConfigError: see :func:`tables_folder`.
        IntegrityError: the file does not match the manifest, or the manifest is damaged.
    """
    folder = tables_folder(given, argument)
    manifest = checkpoint.verify_contents(folder, names=[checkpoint.RENDERER_FILE],
                                          fix="give another checkpoint of the run")
    if manifest is None:
        return digest_file(folder / checkpoint.RENDERER_FILE)
    return manifest["files"][checkpoint.RENDERER_FILE]["sha256"]


def load_tables(renderer, given: str, argument: str = KEY) -> str:
    """Loads the learnt tables ``given`` names into ``renderer`` (a ``PointRenderer`` of the same bank and table
    parameterisations); returns their digest.

    Raises:
        ConfigError: see :func:`tables_folder`.
        IntegrityError: the file does not match its manifest, or its tensors not the renderer's names and shapes.
    """
    digest = tables_digest(given, argument)
    path = tables_folder(given, argument) / checkpoint.RENDERER_FILE
    renderer.load_state_dict(safetensors_check.load_checked(path, renderer.state_dict()))
    return digest


def build_renderer(cfg: Config, bank):
    """The renderer ``cfg`` names: a ``PointRenderer`` of ``bank``, with ``renderer.tables`` loaded when set."""
    from dr_fdsl.render import PointRenderer

    renderer = PointRenderer(bank, cfg.renderer)
    if cfg.renderer.tables:
        load_tables(renderer, cfg.renderer.tables)
    return renderer


def run_config(run: str, overrides: list[str] = (), argument: str = "--run") -> tuple[Config, Path]:
    """The frozen equivalent of pre-training run ``run`` (its ``output_dir`` or one checkpoint folder): its
    ``config.yaml`` with ``overrides`` on top, then ``renderer.mode=frozen``, the table parameterisations as the
    run used them, no leak penalty (the tables no longer learn) and, for a learnable mode, ``renderer.tables``
    naming the checkpoint folder. Returns that config (checked as ``load_config`` checks) and the checkpoint folder.

    Raises:
        ConfigError: no such run or checkpoint, no config.yaml beside it, or the overrides are invalid.
    """
    folder = checkpoint.pretrained_folder(run, argument)
    path = folder.parent.parent / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{argument} {run}: no config.yaml beside its checkpoints/ folder ({path}); give a run's "
                          "output_dir")
    cfg = load_config(path, list(overrides))
    r = cfg.renderer
    learnt = (folder / checkpoint.RENDERER_FILE).is_file()
    frozen = replace(cfg, renderer=replace(r, mode="frozen", color_param=table_param(r, "color_param"),
                                           radius_param=table_param(r, "radius_param"), leak_penalty=0.0,
                                           tables=str(folder) if learnt else ""))
    validate_config(frozen)
    return frozen, folder


def frozen_overrides(run_cfg: Config, cfg: Config) -> list[str]:
    """The ``renderer.*`` overrides that turn ``run_cfg`` (a run's config) into ``cfg`` (:func:`run_config`)."""
    return [f"renderer.{f.name}={getattr(cfg.renderer, f.name)}" for f in fields(cfg.renderer)
            if getattr(cfg.renderer, f.name) != getattr(run_cfg.renderer, f.name)]
