"""Bad arguments to the tools are one ``error:`` line before any work (the audit of issue 23's last round)."""

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
