"""Fine-tuning on real data: the judge of a pre-training run.

Loads a pre-trained backbone (or none, for training from scratch), replaces its head, fine-tunes it on a real
dataset under Accelerate, and reports top-1 after every epoch (or every ``eval_every``-th and the last) plus the
seed contest's metric: the cumulative error rate, ``sum(100 - top1%)`` over the second half of the epochs, a
measurement standing for the epochs since the one before it (lower is better; it rewards reaching a high accuracy
early and staying there).
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from dr_fdsl import checkpoint, datasets, safetensors_check
from dr_fdsl.config import ModelConfig, config_text, finite, load_config, need
from dr_fdsl.engine.build import writable
from dr_fdsl.errors import ConfigError, IntegrityError, NonFiniteLossError
from dr_fdsl.frozen_eval import extract_features, knn_predict, linear_probe, model_input
from dr_fdsl.models import create_classifier, normalization
from dr_fdsl.target_mim import TargetMIMSettings, masked_pretrain
from dr_fdsl.textlog import Progress, TextLog, add_hparams, say


@dataclass
class FinetuneSettings:
    """One fine-tuning run, loaded like a training config (``configs/finetune/*.yaml`` then ``key=value``).

    ``pretrained``: a pre-training ``output_dir`` (its newest checkpoint), a checkpoint folder, or ``None`` to
    train ``model`` at ``image_size`` from scratch (a pre-trained run brings its own model and size, so giving
    ``model`` with ``pretrained`` is an error).
    """

    dataset: str = "fashion_mnist"
    data_root: str = "data"
    pretrained: str | None = None
    model: str | None = None  # from scratch: any timm model (default test_vit)
    patch_size: int = 0  # from scratch: a ViT's patch size (model.patch_size; 0: the model's own)
    image_size: int = 32
    epochs: int = 10
    eval_every: int = 1  # test top-1 after every eval_every-th epoch and the last (a large test set costs most)
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    per_class: int = 0  # limited data: k training images per class (0: all)
    # "finetune": the whole network trains. On frozen features (label-free pre-training's protocols, see
    # dr_fdsl/frozen_eval.py): "linear", a linear probe (epochs, probe_lr, weight_decay, batch_size); "knn",
    # weighted k-nearest neighbours (knn_k, knn_temperature).
    protocol: Literal["finetune", "linear", "knn"] = "finetune"
    probe_lr: float = 1e-2
    knn_k: int = 20
    knn_temperature: float = 0.07
    max_test: int = 0  # evaluate on the first N test images (0: all)
    seed: int = 0
    output_dir: str = "runs/finetune"
    progress: bool = True
    # Masked pre-training on the training images above (without labels) before fine-tuning or a frozen-feature
    # protocol, after loading `pretrained` if given (dr_fdsl/target_mim.py); target_mim.epochs=0: none.
    target_mim: TargetMIMSettings = field(default_factory=TargetMIMSettings)


    def validate(self) -> None:
        """Checks every value before any work; raises ``ConfigError`` naming the key."""
        need(not (self.pretrained and self.model), "model",
             f"{self.model!r} given with pretrained={self.pretrained!r}: a pre-trained run brings its own model; "
             "drop model=, or drop pretrained= to train it from scratch")
        need(not (self.pretrained and self.patch_size), "patch_size", "a pre-trained run brings its own patch size; "
             "drop patch_size=")
        for key in ("epochs", "batch_size", "image_size", "eval_every"):
            need(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("per_class", "max_test", "warmup_epochs", "seed", "patch_size"):
            need(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        need(finite(self.lr) and self.lr > 0, "lr", f"must be a positive number, got {self.lr}")
        need(finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        need(finite(self.probe_lr) and self.probe_lr > 0, "probe_lr", f"must be a positive number, got {self.probe_lr}")
        need(self.knn_k >= 1, "knn_k", f"must be >= 1, got {self.knn_k}")
        need(finite(self.knn_temperature) and self.knn_temperature > 0, "knn_temperature", "must be positive")
        self.target_mim.validate()


def cumulative_error(top1: list[float], epochs: list[int] | None = None) -> float:
    """Sum of the error rates (100 - top-1 %) over the second half of the epochs.

    ``epochs``: the (1-based, increasing) epochs ``top1`` was measured after, the last one being the final epoch;
    default every epoch. A measurement stands for the epochs since the one before it, so measuring every k-th
    epoch keeps the scale of measuring every epoch."""
    epochs = epochs or list(range(1, len(top1) + 1))
    half, previous, total = epochs[-1] // 2, 0, 0.0
    for accuracy, epoch in zip(top1, epochs, strict=True):
        total += (100.0 - 100.0 * accuracy) * max(0, epoch - max(previous, half))
        previous = epoch
    return float(total)


def load_pretrained(pretrained: str, argument: str = "config key 'pretrained'") -> tuple[torch.nn.Module, int]:
    """The backbone of a pre-training run and its image size, head and all.

    ``pretrained``: an ``output_dir`` (its newest complete checkpoint) or a checkpoint folder; ``argument`` names
    where it was given, in messages (``tools/export.py`` passes ``"RUN"``). Nothing is used unchecked:
    ``model.safetensors`` against the checkpoint's manifest (a checkpoint made before manifests: a warning), its
    header against the model the run's config builds (names, dtypes, shapes, a layout that tiles the data), and
    every weight for finiteness.

    Raises:
        ConfigError: no such run or checkpoint, an interrupted save, or no config.yaml to rebuild its model from.
        IntegrityError: a file that does not match the manifest, a header that does not fit the model, or
            non-finite weights (the file named).
    """
    folder = checkpoint.pretrained_folder(pretrained, argument)
    config = folder.parent.parent / "config.yaml"
    weights = folder / checkpoint.MODEL_FILE  # Accelerate's name for the first prepared model: the backbone
    if not config.is_file():
        raise ConfigError(f"{argument}: checkpoint '{folder}' has no config.yaml of its run beside its checkpoints/ "
                          f"folder ({config}), so its model cannot be rebuilt; give a checkpoint folder inside its "
                          "run's output_dir, or the output_dir itself")
    fix = f"point {argument} at another checkpoint of the run (one of its checkpoints/step_N folders) or train again"
    try:
        unchecked = checkpoint.verify_contents(folder, names=[checkpoint.MODEL_FILE], fix=fix) is None
        if unchecked and PartialState().is_main_process:
            print(f"warning: checkpoint '{folder}' has no content_hashes.json (made before content manifests): "
                  f"{checkpoint.MODEL_FILE} cannot be checked against its digest", file=sys.stderr)
        if not weights.is_file():
            raise IntegrityError(f"checkpoint '{folder}' has no {checkpoint.MODEL_FILE}")
        cfg = load_config(config, validate=False)  # the run's own resolved config: only its model is rebuilt
        model = create_classifier(cfg.model, cfg.bank.num_classes, cfg.renderer.image_size)
        header = safetensors_check.read_header(weights)
        prefix = "backbone." if any(k.startswith("backbone.") for k in header.tensors) else ""
        if prefix and not all(prefix + k in header.tensors for k in model.state_dict()):
            model.reset_classifier(0)  # mim trains no classifier head; classify+mim does
        # An objective's network around the backbone (mim, ...) holds more (a decoder): only the backbone is loaded.
        expected = {prefix + k: v for k, v in model.state_dict().items()}
        if unchecked:  # no digests to catch an exchange of two tensors' offsets
            safetensors_check.check_writer_order(weights, header)
        state = safetensors_check.load_checked(weights, expected, allow_extra=bool(prefix))
    except IntegrityError as err:
        message = str(err) if str(err).endswith(fix) else f"{err}; {fix}"
        raise IntegrityError(f"{argument}: {message}") from err
    model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k in expected})
    return model, cfg.renderer.image_size


def _flat(settings: dict, prefix: str = "") -> dict:
    """Settings as TensorBoard's hyper-parameters take them: flat, scalars (sections dotted, lists as text)."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif value is not None:
            out[prefix + key] = str(list(value)) if isinstance(value, (tuple, list)) else value
    return out


def result_name(s: FinetuneSettings) -> str:
    """What a fine-tuning's outputs are named by: its protocol, and ``_target_mim`` after a masked phase
    (``finetune``, ``linear``, ``knn``, ``finetune_target_mim``, ...). Its result is ``output_dir/NAME.json``, its
    TensorBoard run ``output_dir/NAME/``: protocols judged into one folder never overwrite each other."""
    return s.protocol + ("_target_mim" if s.target_mim.epochs else "")


def result_path(s: FinetuneSettings) -> Path:
    return Path(s.output_dir) / f"{result_name(s)}.json"


def _finish(s: FinetuneSettings, accelerator: Accelerator, result: dict) -> dict:
    """Writes the result file and, as TensorBoard hyper-parameters, the settings with the final metrics (one run:
    Accelerate's own ``config=`` would put them in a second, timestamped one); closes the trackers and the log."""
    if accelerator.is_main_process:
        result_path(s).write_text(json.dumps(result, indent=2))
        add_hparams(accelerator.get_tracker("tensorboard", unwrap=True), _flat(asdict(s)), [f"{s.protocol}/test_top1"])
        say(f"done: final top-1 {100 * result['final_top1']:.2f}%, cumulative error (2nd half) "
             f"{result['cumulative_error']:.1f}; {result_path(s)}")
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # flush and close TensorBoard; the process group stays up (the launcher's)
        tracker.finish()
    return result


def frozen_protocol(s: FinetuneSettings, model, train, test, size: int, mean, std, accelerator, masked=None) -> dict:
    """``s.protocol`` ``linear`` or ``knn`` on the frozen backbone's features (every process computes the same)."""
    start = time.perf_counter()
    features = [extract_features(model, part.images, size, mean, std, 2 * s.batch_size, accelerator.device)
                for part in (train, test)]
    if s.protocol == "knn":
        predicted = knn_predict(features[0], train.labels, features[1], train.num_classes, s.knn_k,
                                s.knn_temperature)
        top1 = [float((predicted == test.labels).float().mean())]
    else:
        top1 = linear_probe(features[0], train.labels, features[1], test.labels, train.num_classes, s.epochs,
                            s.probe_lr, s.weight_decay, s.batch_size, s.seed)
    result = {"dataset": s.dataset, "pretrained": s.pretrained, "protocol": s.protocol, "train_images": len(train),
              "test_images": len(test), "feature_dim": features[0].shape[1], "epochs": len(top1), "top1": top1,
              "final_top1": top1[-1], "cumulative_error": cumulative_error(top1),
              "seconds": time.perf_counter() - start}
    if masked is not None:
        result["target_mim"] = masked
    for epoch, accuracy in enumerate(top1, 1):  # linear: after every epoch; knn: its one value
        accelerator.log({f"{s.protocol}/test_top1": accuracy}, step=epoch)
    return _finish(s, accelerator, result)


def dry_run(s: FinetuneSettings) -> list[str]:
    """What ``finetune`` checks before its work, without training or writing: the pre-trained run (its model
    against its checkpoint's manifest and config), both splits of the dataset (read, never downloaded), the output
    folder (not a file, not held by a live run). Returns the plan's lines.

    Raises:
        DrFdslError: what the fine-tuning would have refused, with the same message.
    """
    from dr_fdsl import run_lock

    if s.pretrained:
        model, size = load_pretrained(s.pretrained)
    else:
        size = s.image_size
        model = create_classifier(ModelConfig(name=s.model or "test_vit", drop_path=0.0, patch_size=s.patch_size),
                                  10, size)
    train, test = (datasets.load(s.dataset, part, s.data_root, size, download=False) for part in (True, False))
    out = Path(s.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"config key 'output_dir': '{out}' is a file, not a folder; choose another folder")
    if out.is_dir():  # a live run there is refused now, as the fine-tuning would be
        run_lock.lock(out, "output_dir")
        run_lock.release(out)
    images = min(s.per_class * train.num_classes, len(train)) if s.per_class else len(train)
    tests = min(s.max_test, len(test)) if s.max_test else len(test)
    what = {"finetune": f"{s.epochs} epochs of fine-tuning at batch {s.batch_size}",
            "linear": f"a linear probe on frozen features, {s.epochs} epochs", "knn": f"k-NN (k={s.knn_k})"}
    masked = f" after {s.target_mim.epochs} epochs of masked pre-training on them" if s.target_mim.epochs else ""
    parameters = sum(p.numel() for p in model.parameters())
    return [f"dry run: the settings are valid; would write {result_path(s)} (and log.txt, TensorBoard "
            f"{out / result_name(s)}/)" + (" replacing the result there" if result_path(s).exists() else ""),
            f"backbone: {s.pretrained or 'from scratch'}, {parameters / 1e6:.2f} M parameters at {size} px",
            f"data: {s.dataset}, {images} training images ({train.num_classes} classes), {tests} test images; "
            f"{what[s.protocol]}{masked}",
            f"settings ({len(config_text(s).splitlines())} lines): tools/finetune.py --print-config"]


def finetune(s: FinetuneSettings) -> dict:
    """Runs the fine-tuning; returns (and writes to ``output_dir/NAME.json``, :func:`result_name`) per-epoch top-1
    and the metric; ``output_dir/log.txt`` and TensorBoard (``output_dir/NAME/``) follow it as it runs."""
    out = Path(s.output_dir)
    writable(s.output_dir)  # a folder that cannot be written fails now, not after the fine-tuning
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(out))
    log = TextLog(out, console=not s.progress) if accelerator.is_main_process else None
    try:
        return _finetune(s, accelerator)
    finally:
        if log is not None:
            log.close()


def _finetune(s: FinetuneSettings, accelerator: Accelerator) -> dict:
    """``finetune`` with its folder checked, its ``Accelerator`` made and its log open."""
    say(f"{result_name(s)} on {s.dataset} in {s.output_dir}; its settings:\n{config_text(s)}")
    set_seed(s.seed)
    if s.pretrained:
        model, size = load_pretrained(s.pretrained)
    else:
        size = s.image_size
        model = create_classifier(ModelConfig(name=s.model or "test_vit", drop_path=0.0, patch_size=s.patch_size),
                                  10, size)
    train = datasets.load(s.dataset, True, s.data_root, size)
    test = datasets.load(s.dataset, False, s.data_root, size)
    if s.per_class:
        fewest = int(train.labels.bincount(minlength=train.num_classes).min())
        need(s.per_class <= fewest, "per_class", f"{s.per_class} images per class asked, but the smallest class "
             f"of {s.dataset}'s training split has {fewest}")
        train = train.few_shot(s.per_class, s.seed)
    if s.max_test:
        test = datasets.ImageSet(test.images[:s.max_test], test.labels[:s.max_test], test.num_classes)
    mean, std = (t.to(accelerator.device) for t in normalization(model))
    masked = None
    accelerator.init_trackers(result_name(s))  # one TensorBoard run for the masked phase and the protocol after it
    if s.target_mim.epochs:  # the backbone learns the target images, unlabelled; its head is replaced below
        masked = masked_pretrain(model, train.images, size, mean, std, s.target_mim, s.seed, accelerator, s.progress)
    model.reset_classifier(train.num_classes)
    if s.protocol != "finetune":
        return frozen_protocol(s, model.to(accelerator.device), train, test, size, mean, std, accelerator, masked)

    train_loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=s.batch_size, shuffle=True,
                              drop_last=len(train) >= s.batch_size * accelerator.num_processes,
                              generator=torch.Generator().manual_seed(s.seed))
    test_loader = DataLoader(TensorDataset(test.images, test.labels), batch_size=2 * s.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    model, optimizer, train_loader, test_loader = accelerator.prepare(model, optimizer, train_loader, test_loader)
    steps_per_epoch = len(train_loader)
    need(steps_per_epoch > 0, "batch_size", f"{len(train)} training images fill no batch of {s.batch_size} on each "
         f"of {accelerator.num_processes} processes; lower batch_size")
    scheduler = CosineLRScheduler(optimizer, t_initial=s.epochs * steps_per_epoch, lr_min=1e-6,
                                  warmup_t=s.warmup_epochs * steps_per_epoch, warmup_lr_init=1e-6,
                                  t_in_epochs=False)

    top1: list[float] = []
    evaluated: list[int] = []  # the epochs (1-based) top1 was measured after
    train_loss: list[float] = []  # per epoch
    step = 0
    bar = tqdm(total=s.epochs, desc=f"finetune {s.dataset}", unit="epoch",
               disable=not (accelerator.is_main_process and s.progress))
    progress = Progress(f"finetune {s.dataset}", s.epochs, unit="epoch")
    for epoch in range(s.epochs):
        model.train()
        total, batches = 0.0, 0
        for pixels, labels in train_loader:
            x = model_input(pixels, size, mean, std)
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(model(x).float(), labels, label_smoothing=s.label_smoothing)
            if not math.isfinite(loss.item()):
                raise NonFiniteLossError(f"fine-tuning loss is {loss.item()} at epoch {epoch + 1}; lower lr")
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            scheduler.step_update(step)
            total, batches = total + loss.item(), batches + 1
        bar.update(1)
        train_loss.append(total / max(batches, 1))
        accelerator.log({"finetune/train_loss": train_loss[-1]}, step=epoch + 1)
        if (epoch + 1) % s.eval_every and epoch + 1 < s.epochs:
            say(progress.line(epoch + 1, train_loss=train_loss[-1]))
            continue
        model.eval()
        correct = []
        # Starting a loader's iteration draws from the global stream the flips above use: the evaluation runs on a
        # copy of it, so how often it runs changes no training step.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for pixels, labels in test_loader:
                predicted = model(model_input(pixels, size, mean, std)).argmax(1)
                correct.append(accelerator.gather_for_metrics((predicted == labels).float()))
        top1.append(float(torch.cat(correct).mean()))
        evaluated.append(epoch + 1)
        accelerator.log({"finetune/test_top1": top1[-1]}, step=epoch + 1)
        bar.set_postfix(top1=f"{top1[-1]:.3f}")
        say(progress.line(epoch + 1, train_loss=train_loss[-1], test_top1=top1[-1]))
    bar.close()
    result = {"dataset": s.dataset, "pretrained": s.pretrained, "train_images": len(train),
              "test_images": len(test), "epochs": s.epochs, "eval_epochs": evaluated, "top1": top1,
              "final_top1": top1[-1], "train_loss": train_loss,
              "cumulative_error": cumulative_error(top1, evaluated)}
    if masked is not None:
        result["target_mim"] = masked
    _finish(s, accelerator, result)
    del model, optimizer, train_loader, test_loader  # DDP wrappers go while the process group exists
    accelerator.free_memory()
    gc.collect()
    return result
