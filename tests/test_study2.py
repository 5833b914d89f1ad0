"""The study v2 preset: its arms load as the study describes them, and compare.py's table prints each pair's
p-value and its Holm adjustment over all the protocol's pairs."""

import json
import math

from dr_fdsl.stats import holm, paired_t_test
from tools.compare import PRESETS, arms_of, pretrain_config, summarize


def test_study2_arms_are_the_ones_docs_results_describes(tmp_path):
    preset = PRESETS["study2"]
    arms = arms_of(preset)
    assert list(arms) == ["none", "frozen", "frozen_random", "joint_blind", "adversarial", "teach", "match_blind",
                          "lookahead"]
    assert len(preset["seeds"]) >= 10 and arms["none"].pretrain is None
    cfgs = {name: pretrain_config(preset, arm.pretrain, 0, tmp_path / name) for name, arm in arms.items()
            if arm.pretrain is not None}
    assert cfgs["frozen"].renderer.mode == "frozen" and cfgs["frozen"].renderer.augment.random_colors == "none"
    assert cfgs["frozen_random"].renderer.augment.random_colors == "point"
    for name in ("joint_blind", "match_blind"):  # no table can hold a per-category code
        assert cfgs[name].renderer.share_colors and cfgs[name].renderer.share_radii
    assert cfgs["joint_blind"].renderer.leak_penalty > 0
    assert cfgs["match_blind"].match.dataset == cfgs["lookahead"].lookahead.dataset == "fashion_mnist"
    assert cfgs["lookahead"].lookahead.per_class == preset["per_class"]
    for cfg in cfgs.values():  # one budget for every arm
        assert (cfg.train.max_steps, cfg.train.batch_size, cfg.model.patch_size) == (400, 64, 8)


def test_results_table_prints_p_values_and_holm(tmp_path):
    rows = []
    shifts = {"a": 0.0, "b": 0.05, "c": 0.001}  # b beats a on every seed; c is noise around a
    noise = [0.003, -0.002, 0.001, -0.004, 0.002]
    for arm, shift in shifts.items():
        for seed in range(5):
            rows.append(dict(mode=arm, seed=seed, final_top1=0.5 + shift + (noise[seed] if arm == "c" else 0)
                             + 0.01 * seed, cumulative_error=1.0, pretrain_top1="", probe_top1=""))
    table = summarize(rows)
    top1 = {arm: {s: 100 * r["final_top1"] for s, r in enumerate(x for x in rows if x["mode"] == arm)}
            for arm in shifts}
    p = [paired_t_test(top1[x], top1[y]) for x, y in (("a", "b"), ("a", "c"), ("b", "c"))]
    adjusted = holm(p)
    assert p[0] < 1e-4 and adjusted[0] < 0.05 and adjusted[1] > 0.05 and not math.isnan(adjusted[2])
    line = next(x for x in table.splitlines() if x.startswith("| a - b |"))
    assert line.endswith("| yes | <1e-4 | **<1e-4** |")
    line = next(x for x in table.splitlines() if x.startswith("| a - c |"))
    assert line.endswith(f"| {p[1]:.2g} | {adjusted[1]:.2g} |")


def test_renderer_table_reads_every_pretraining_summary(tmp_path):
    from tools.compare import renderer_table

    for seed, drift in ((0, 0.2), (1, 0.4)):
        for arm, extra in (("frozen", {}), ("joint_blind", {"renderer/color_drift": drift})):
            run = tmp_path / "seeds" / str(seed) / "pretrain" / f"{arm}_s{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({"val/top1": 0.5, "images_per_s": 100.0 + seed, **extra,
                                                          "probe/val_acc": float("nan")}))
    (tmp_path / "pretrain" / "not_a_run").mkdir(parents=True)
    table = renderer_table(tmp_path, order=["joint_blind", "frozen"]).splitlines()
    assert [x.split(" | ")[0] for x in table[2:]] == ["| joint_blind", "| frozen"]  # the given order
    cells = table[2].split(" | ")
    assert cells[1] == "2" and cells[2] == "50 ± 0" and cells[3] == "-"  # NaN probe: left out
    assert cells[6] == f"{0.3:.3g} ± {12.706 * 0.1:.2g}"  # drift 0.2, 0.4: mean 0.3, sd 0.14, sd/sqrt(2) = 0.1
    assert table[3].split(" | ")[6] == "-" and renderer_table(tmp_path / "nothing") == ""
