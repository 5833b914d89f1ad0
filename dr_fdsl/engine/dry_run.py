"""``train.py --dry-run``: everything a run would check before its work, and what it would cost, without
building the bank, claiming the output folder or writing anything."""

from __future__ import annotations

from dr_fdsl import checkpoint
from dr_fdsl.config import Config, batch_sizes, config_text
from dr_fdsl.memory import gib
from dr_fdsl.models import create_classifier


def dry_run(cfg: Config, resume: str | None = None) -> list[str]:
    """The checks a run makes before building its bank (its ``load_config`` ran every check of a value): the
    model builds for the image size, a static dataset matches the config, the folder and checkpoint to resume are
    usable. Returns the report's lines: where the run would write, the sizes it would allocate.

    Raises:
        DrFdslError: what the run would have refused, with the same message.
    """
    from dr_fdsl.static import StaticViews

    model = create_classifier(cfg.model, cfg.bank.num_classes, cfg.renderer.image_size)  # name, size, patches
    if cfg.renderer.tables:
        from dr_fdsl.tables import tables_digest

        tables_digest(cfg.renderer.tables)
    if cfg.data.source == "static":
        StaticViews(cfg.data.path, verify=True).check_matches(cfg)
    if resume is not None:
        checkpoint.refuse_to_overwrite(cfg.output_dir, resume)
        where = f"would resume {checkpoint.resolve(cfg.output_dir, resume)} in {cfg.output_dir}"
    else:
        folder = checkpoint.free_output_dir(cfg.output_dir)
        where = f"would write to {folder}" + (f" ({cfg.output_dir} holds another run)" if folder != cfg.output_dir
                                              else "")
    c, n = cfg.bank.num_classes, cfg.bank.num_points
    parameters = sum(p.numel() for p in model.parameters())
    lines = [f"dry run: the config is valid; {where}",
             f"bank: {c} categories x {n} points of family {cfg.bank.family} ({gib(c * n * 3 * 4)} as float32)",
             f"model: {cfg.model.name}, {parameters / 1e6:.2f} M parameters at {cfg.renderer.image_size} px",
             f"renderer {cfg.renderer.mode}: "
             + (f"the learnt tables of {cfg.renderer.tables}" if cfg.renderer.tables else
                "tables rebuilt from the config (nothing stored)" if cfg.renderer.mode == "frozen" else
                f"learnt tables of {gib(16 * c * n)} (+ {gib(32 * c * n)} of optimiser moments)")]
    lines += [f"per step, {what}: {gib(nbytes)} ({key})" for key, nbytes, what, _ in batch_sizes(cfg)]
    lines.append(f"settings ({len(config_text(cfg).splitlines())} lines as config.yaml): train.py --print-config")
    return lines
