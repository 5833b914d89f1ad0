"""Nothing trusted unchecked: checkpoint manifests, safetensors headers, finite weights, honest "last good checkpoint",
storage failures while saving, and one-line errors from resume, export and fine-tuning."""

import json
import resource
import shutil
import signal
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from dr_fdsl.checkpoint import STATE_FILE, list_checkpoints
from dr_fdsl.engine import build_run, resume, save_checkpoint, train_step
from dr_fdsl.errors import CheckpointError, ConfigError, IntegrityError, NonFiniteLossError
from dr_fdsl.finetune import load_pretrained
from dr_fdsl.manifest import MANIFEST, read_manifest, write_manifest
from dr_fdsl.safetensors_check import read_header
from tests.conftest import tiny

JOINT = ("renderer.mode=joint", "train.max_steps=8", "train.keep_checkpoints=0")


# ------------------------------------------------------------------------------------------------------------
# Helpers: the crafted damage
# ------------------------------------------------------------------------------------------------------------


def edit_header(path, edit):
    """Rewrites the JSON header of a safetensors file through ``edit(header)``; the data section is unchanged."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def exchange(a, b):
    def edit(header):
        assert header[a]["shape"] == header[b]["shape"] and header[a]["dtype"] == header[b]["dtype"]
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
    return edit


def declare(name, dtype):
    def edit(header):
        header[name]["dtype"] = dtype
    return edit


def as_before_manifests(folder):
    """A checkpoint as dr_fdsl wrote it before manifests existed: no manifest, no mention of one."""
    (folder / MANIFEST).unlink(missing_ok=True)
    state = json.loads((folder / STATE_FILE).read_text())
    state.pop("manifest", None)
    (folder / STATE_FILE).write_text(json.dumps(state))


def record_again(folder):
    """A manifest made anew for a changed folder, as a crafted one would be: only the later checks remain."""
    manifest = read_manifest(folder)
    write_manifest(folder, extra={k: v for k, v in manifest.items() if k not in ("format", "files")})


def rewrite_tensors(path, change):
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory, bank_dir):
    """Checkpoints of steps 2 and 3 of a joint run (model, probe and renderer files), made once."""
    root = tmp_path_factory.mktemp("saved")
    run = build_run(tiny(root, bank_dir, *JOINT))
    for step in (1, 2, 3):
        train_step(run)
        if step > 1:
            save_checkpoint(run)
    return root / "run"


@pytest.fixture(scope="module")
def refuser(tmp_path_factory, bank_dir):
    """A run of the same settings that is only ever refused (before loading, or after with weights no test reads)."""
    return build_run(tiny(tmp_path_factory.mktemp("refuser"), bank_dir, *JOINT), resume="latest")


def copy_of(saved, tmp_path, step=3):
    folder = tmp_path / "run" / "checkpoints" / f"step_{step:07d}"
    shutil.copytree(saved / "checkpoints" / f"step_{step:07d}", folder)
    return folder


# ------------------------------------------------------------------------------------------------------------
# The manifest: written last, checked before any file is used
# ------------------------------------------------------------------------------------------------------------


def test_every_checkpoint_records_its_files_tensors_step_and_run(saved):
    folder = list_checkpoints(saved)[-1]
    manifest = read_manifest(folder)
    state = json.loads((folder / STATE_FILE).read_text())
    assert manifest["step"] == 3 and manifest["run_id"] == state["run_id"] and state["manifest"] == MANIFEST
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {MANIFEST}
    assert set(manifest["tensors"]) == {"model.safetensors", "model_1.safetensors", "renderer.safetensors"}
    assert set(manifest["tensors"]["renderer.safetensors"]) == {"color_logits", "radius_logits"}


@pytest.mark.parametrize("name", ["model.safetensors", "model_1.safetensors", "renderer.safetensors", "optimizer.bin",
                                  "trainer_state.json"])
def test_a_file_copied_from_another_step_is_refused_by_name(saved, tmp_path, refuser, name):
    folder = copy_of(saved, tmp_path)
    shutil.copy(saved / "checkpoints" / "step_0000002" / name, folder / name)
    changed = r" \(tensors whose bytes differ from those recorded: " if name.endswith(".safetensors") else ""
    with pytest.raises(IntegrityError, match=rf"step_0000003': '{name}' does not match the digest .*{changed}"):
        resume(refuser, str(folder), allow_inexact=True)


def test_a_random_state_from_another_step_makes_the_resume_inexact(saved, tmp_path, refuser):
    folder = copy_of(saved, tmp_path)
    shutil.copy(saved / "checkpoints" / "step_0000002" / "random_states_0.pkl", folder / "random_states_0.pkl")
    with pytest.raises(CheckpointError, match=r"random_states_0.pkl: changed since it was written.*"
                                              "--allow-inexact-resume"):
        resume(refuser, str(folder))


def test_a_whole_checkpoint_renamed_an_added_file_or_a_removed_manifest_is_refused(saved, tmp_path, refuser):
    renamed = tmp_path / "run" / "checkpoints" / "step_0000003"
    shutil.copytree(saved / "checkpoints" / "step_0000002", renamed)
    with pytest.raises(IntegrityError, match="the folder's name says step 3, its content_hashes.json step 2"):
        resume(refuser, str(renamed))
    added = copy_of(saved, tmp_path / "added")
    (added / "scheduler.bin").write_bytes(b"planted")
    with pytest.raises(IntegrityError, match="'scheduler.bin' is not recorded in its content_hashes.json"):
        resume(refuser, str(added))
    (added / "scheduler.bin").unlink()
    (added / MANIFEST).unlink()
    with pytest.raises(IntegrityError, match="content_hashes.json is missing although its trainer_state.json says"):
        resume(refuser, str(added))


# ------------------------------------------------------------------------------------------------------------
# Safetensors headers: checked against the model before a weight is used
# ------------------------------------------------------------------------------------------------------------

SAME_SHAPE = {"model.safetensors": ("blocks.0.norm1.weight", "blocks.0.norm2.weight"),
              "model_1.safetensors": ("norm.running_mean", "norm.running_var")}


def _names(path):
    return set(read_header(path).tensors)


@pytest.mark.parametrize("name, damage", [
    ("model.safetensors", "exchange"), ("model_1.safetensors", "exchange"),
    ("model.safetensors", "I32"), ("model_1.safetensors", "I32"), ("renderer.safetensors", "I32")])
@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "before_manifests"])
def test_a_header_with_exchanged_offsets_or_an_integer_dtype_is_refused(saved, tmp_path, refuser, name, damage,
                                                                       manifest):
    folder = copy_of(saved, tmp_path)
    if not manifest:
        as_before_manifests(folder)
    names = sorted(_names(folder / name))
    if damage == "exchange":
        a, b = SAME_SHAPE[name]
        edit_header(folder / name, exchange(a, b))
        # With a manifest: its digests (the file's; per tensor, both named). Without: the writer's order is broken.
        why = (rf"does not match the digest .*tensors whose bytes differ from those recorded: {a}, {b}\)" if manifest
               else f"tensors {b}, {a} lie out of the order safetensors writes them in")
    else:
        victim = next(n for n in names if read_header(folder / name).tensors[n].dtype == "F32")
        edit_header(folder / name, declare(victim, "I32"))
        why = "does not match the digest" if manifest else rf"'{victim}' is declared I32 \[.*\], the model holds F32"
    with pytest.raises(IntegrityError, match=why):
        resume(refuser, str(folder), allow_inexact=True)


@pytest.mark.parametrize("damage, why", [
    ("gap", r"leave a gap before tensor 'b'"),
    ("overlap", r"leave an overlap at tensor 'b'"),
    ("beyond", r"declares 48 bytes of tensor data, the file holds 32"),
    ("size", r"tensor 'a' \(F32, shape \[4\]\) needs 16 bytes, its offsets hold 12"),
    ("length", r"header length \d+ exceeds the file's"),
    ("json", r"is not a safetensors file"),
    ("twice", r"tensor 'a' is declared twice"),
    ("short", r"shorter than the 8-byte header length"),
    ("dtype", r"header entry of tensor 'a' is malformed \(unknown dtype 'F31'\)"),
])
def test_a_header_that_does_not_tile_the_data_exactly_is_refused(tmp_path, damage, why):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.ones(4)}, str(path))
    read_header(path)  # as written: valid
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    edits = {"gap": lambda h: h["b"].update(data_offsets=[20, 36]) or h["a"].update(data_offsets=[0, 16]),
             "overlap": lambda h: h["b"].update(data_offsets=[12, 28]),
             "beyond": lambda h: h["b"].update(data_offsets=[16, 48], shape=[8]),
             "size": lambda h: h["a"].update(data_offsets=[0, 12])}
    if damage in edits:
        edit_header(path, edits[damage])
    elif damage == "length":
        path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    elif damage == "json":
        path.write_bytes(data[:8] + b"{" + b"!" * (n - 1) + data[8 + n:])
    elif damage == "twice":
        raw = data[8:8 + n].decode().rstrip()[:-1] + ', "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
        path.write_bytes(struct.pack("<Q", len(raw)) + raw.encode() + data[8 + n:])
    elif damage == "short":
        path.write_bytes(data[:5])
    else:
        edit_header(path, declare("a", "F31"))
    with pytest.raises(IntegrityError, match=why) as refused:
        read_header(path)
    assert str(path) in str(refused.value)


def test_non_finite_weights_are_refused_on_load_by_resume_and_export(saved, tmp_path, refuser, capsys):
    from tools.export import main as export

    for name in ("model.safetensors", "renderer.safetensors"):
        folder = copy_of(saved, tmp_path / name)
        shutil.copy(saved.parent / "run" / "config.yaml", tmp_path / name / "run" / "config.yaml")
        rewrite_tensors(folder / name, lambda t: next(iter(t.values())).view(-1)[0].fill_(float("nan")))
        record_again(folder)  # consistent digests: the finiteness check itself refuses
        with pytest.raises(IntegrityError, match=f"'{name}' holds non-finite values in tensor"):
            resume(refuser, str(folder))
        if name == "model.safetensors":
            assert export([str(tmp_path / name / "run"), "--out", str(tmp_path / "exported")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "holds non-finite values (NaN or infinity)" in err
            assert not (tmp_path / "exported").exists()


# ------------------------------------------------------------------------------------------------------------
# "Last good checkpoint": finite weights whose loss was finite, and advice that works
# ------------------------------------------------------------------------------------------------------------


def test_weights_that_give_a_non_finite_loss_are_never_saved_and_the_advice_works(tmp_path, bank_dir):
    run = build_run(tiny(tmp_path, bank_dir, "train.max_steps=8"))
    train_step(run), train_step(run)
    good = save_checkpoint(run)
    train_step(run)
    with torch.no_grad():
        for p in run.objective.model.parameters():
            p.fill_(1e28)  # finite, but overflows to inf and NaN in the first normalisation
    with pytest.raises(NonFiniteLossError, match=r"weights give a non-finite loss on held-out views at step 3; not "
                                                 rf"saved; last good checkpoint: {good}; resume it with --resume "
                                                 f"{good} and a lower optim.lr"):
        save_checkpoint(run)
    assert list_checkpoints(tmp_path / "run") == [good]
    advised = build_run(tiny(tmp_path, bank_dir, "train.max_steps=8", "optim.lr=1.0e-4"), resume=str(good))
    resume(advised, str(good))
    out = train_step(advised)
    assert advised.state.step == 3 and torch.isfinite(out["train/loss"])


def test_a_checkpoint_whose_weights_give_a_non_finite_loss_is_not_named_good(saved, tmp_path, bank_dir, capsys):
    """A checkpoint from before manifests and this check, holding 1e28 weights: it resumes and loads with a one-line
    warning that it cannot be checked; resuming it fails at once at any lr, so the message says so and advises the
    checkpoint before it, which then resumes."""
    for step in (2, 3):
        copy_of(saved, tmp_path, step)
    bad = tmp_path / "run" / "checkpoints" / "step_0000003"
    as_before_manifests(bad)
    rewrite_tensors(bad / "model.safetensors", lambda t: [v.fill_(1e28) for v in t.values() if v.is_floating_point()])
    run = build_run(tiny(tmp_path, bank_dir, *JOINT), resume="latest")
    resume(run, "latest")
    assert capsys.readouterr().out.count("has no content_hashes.json (made before content manifests)") == 1
    model, _ = load_pretrained(str(tmp_path / "run"))  # resume wrote the run's config.yaml
    assert "cannot be checked against its digest" in capsys.readouterr().err
    weights = load_file(str(bad / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    with pytest.raises(NonFiniteLossError, match=r"at step 4; training stopped; these are the weights of checkpoint "
                                                 rf"'{bad}' \(no step since it\), so it is no good checkpoint: move "
                                                 r"it out of checkpoints/ and --resume latest"):
        train_step(run)
    bad.rename(tmp_path / "bad_step_3")  # the advice
    advised = build_run(tiny(tmp_path, bank_dir, *JOINT), resume="latest")
    resume(advised, "latest")
    assert advised.state.step == 2 and torch.isfinite(train_step(advised)["train/loss"])


# ------------------------------------------------------------------------------------------------------------
# Storage failures while saving: a real file-size limit
# ------------------------------------------------------------------------------------------------------------


def test_a_file_size_limit_while_saving_is_one_line_naming_the_newest_checkpoint(tmp_path, bank_dir):
    """RLIMIT_FSIZE with SIGXFSZ ignored: writes past the limit fail with EFBIG, as on a full disk. Over 1.5 MB
    torch.save (optimizer.bin, 2.4 MB) raises RuntimeError inside save_state; over 0.5 MB safetensors
    (model.safetensors, 1.2 MB) raises SafetensorError."""
    run = build_run(tiny(tmp_path, bank_dir, "train.max_steps=8"))
    train_step(run), train_step(run)
    good = save_checkpoint(run)
    train_step(run)
    sizes = {p.name: p.stat().st_size for p in good.iterdir()}
    assert sizes["model.safetensors"] < 1_500_000 < sizes["optimizer.bin"]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        for limit, raised in ((1_500_000, "RuntimeError"), (500_000, "SafetensorError")):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            try:
                with pytest.raises(CheckpointError, match=rf"could not write checkpoint '.*step_0000003' \({raised}: "
                                                          rf".*\); the newest complete checkpoint is {good}: free "
                                                          "space or choose another output_dir, then --resume latest"):
                    save_checkpoint(run)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            assert list_checkpoints(tmp_path / "run") == [good]
            assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == [good.name]  # no .incomplete_
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    assert save_checkpoint(run).name == "step_0000003"  # space again: the save goes through


# ------------------------------------------------------------------------------------------------------------
# Messages: what is actually wrong, in the words of the tool that was given it
# ------------------------------------------------------------------------------------------------------------


def test_resume_of_an_interrupted_save_or_a_missing_folder_says_so(saved, tmp_path, bank_dir):
    cfg = tiny(tmp_path, bank_dir, *JOINT)
    copy_of(saved, tmp_path)
    incomplete = shutil.copytree(saved / "checkpoints" / "step_0000002",
                                 tmp_path / "run" / "checkpoints" / ".incomplete_step_0000004")
    with pytest.raises(CheckpointError, match=r"that folder is an interrupted, incomplete save .*--resume latest"):
        build_run(cfg, resume=str(incomplete))
    with pytest.raises(CheckpointError, match=r"step_0000009: no such checkpoint folder \(it does not exist\)"):
        build_run(cfg, resume=str(tmp_path / "run" / "checkpoints" / "step_0000009"))


def test_a_missing_model_file_is_named_model_safetensors(saved, tmp_path, refuser):
    folder = copy_of(saved, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(IntegrityError, match="'model.safetensors' is missing"):
        resume(refuser, str(folder))
    as_before_manifests(folder)
    with pytest.raises(IntegrityError, match="'model.safetensors' is missing") as refused:
        resume(refuser, str(folder))
    assert "pytorch_model.bin" not in str(refused.value)


def test_export_and_finetune_speak_of_their_own_arguments(saved, tmp_path, capsys):
    from tools.export import main as export
    from tools.finetune import main as finetune

    folder = copy_of(saved, tmp_path)
    incomplete = folder.rename(folder.with_name(".incomplete_step_0000003"))
    cases = [(tmp_path / "nowhere", "does not exist"), (tmp_path / "run", "holds no complete checkpoint"),
             (incomplete, "is an interrupted, incomplete save")]
    for given, why in cases:
        assert export([str(given), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: RUN: '{given}' {why}") and "--resume" not in err and err.count("\n") == 1
        with pytest.raises(ConfigError, match=f"config key 'pretrained': '{given}' {why}"):
            load_pretrained(str(given))
    damaged = copy_of(saved, tmp_path / "damaged")
    shutil.copy(saved / "config.yaml", tmp_path / "damaged" / "run" / "config.yaml")
    (damaged / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    assert finetune([f"pretrained={damaged}", f"output_dir={tmp_path / 'ft'}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "error: config key 'pretrained': checkpoint" in err and "'model.safetensors' does not match" in err
    as_before_manifests(damaged)
    assert export([str(damaged), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: RUN: ") and "model.safetensors' is not a safetensors file" in err[-1]
