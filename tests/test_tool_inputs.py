"""Bad arguments to the tools are one ``error:`` line before any work (the audit of issue 23's last round)."""

import os

import pytest

from tests.conftest import ROOT


def test_finetune_into_a_folder_under_a_file_is_one_line(tmp_path, capsys):
    from tools.finetune import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["--config", str(ROOT / "configs" / "finetune" / "fashion_mnist.yaml"),
                 f"output_dir={blocker / 'ft'}", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: config key 'output_dir'") and str(blocker) in err


def test_render_dataset_names_a_device_that_is_not_one(tmp_path, capsys):
    from tools.render_dataset import main

    assert main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--out", str(tmp_path / "d"), "--views", "1",
                 "--device", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device 'bogus' is not a torch device; use cpu or cuda (cuda:N)"
    assert not (tmp_path / "d").exists()


def test_render_dataset_into_a_file_says_it_is_a_file(tmp_path, capsys):
    from tools.render_dataset import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--out", str(blocker), "--views", "1",
                 "bank.num_classes=2", "bank.num_points=200", f"bank.cache_dir={tmp_path / 'banks'}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out '{blocker}' is a file, not a folder; choose another --out"


def test_overrides_may_stand_on_either_side_of_options(tmp_path, capsys):
    """``k=v --option X k2=v2`` is read as two overrides and an option (argparse's plain parse_args refused the
    second override as an unrecognised argument)."""
    from tools.render_dataset import main as render_dataset
    from train import main as train

    assert render_dataset(["--config", str(ROOT / "configs" / "quickstart.yaml"), "bank.num_classes=2", "--out",
                           str(tmp_path / "d"), "renderer.image_size=32", "--views", "1", "--device", "bogus"]) == 2
    assert "--device 'bogus' is not a torch device" in capsys.readouterr().err
    assert train(["--config", str(ROOT / "configs" / "quickstart.yaml"), f"output_dir={tmp_path / 'run'}",
                  "--resume", "latest", "train.no_such_key=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no_such_key" in err, err


def _write_to_a_full_device(*args, **kwargs):
    """A real failed write: Linux's /dev/full answers every write with ENOSPC (raised at the flush, so the error
    names no file: the message names the output folder where it knows one)."""
    with open("/dev/full", "w") as f:
        f.write("x")
        f.flush()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_finetune_and_compare_report_a_failed_write_in_one_line(tmp_path, monkeypatch, capsys):
    import tools.compare
    import tools.finetune

    monkeypatch.setattr(tools.finetune, "finetune", _write_to_a_full_device)
    assert tools.finetune.main([f"output_dir={tmp_path / 'ft'}", "progress=false"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: could not write a file in '{tmp_path / 'ft'}' (No space "
                                               "left on device; disk full, read-only or over a size limit?)")
    monkeypatch.setattr(tools.compare, "main", _write_to_a_full_device)
    assert tools.compare.entry([]) == 2
    assert capsys.readouterr().err.strip() == ("error: could not write a file (No space left on device; disk full, "
                                               "read-only or over a size limit?); the runs that finished are under "
                                               "its --out")
