"""Objective ``mim``: masked-image modelling on the rendered stream.

As Terentiev & Ivanenko pre-train a ViT-based generator: square pixel patches of side ``mim.patch`` are masked
(set to the normalised mean, 0) with probability ``mim.ratio`` each, the ViT encodes the masked image, and a
linear decoder maps every patch token back to that token's pixels; the loss is the L1 distance to the clean image,
over all pixels as published (``mim.loss_on=masked``: over the masked pixels only). Which squares are masked is
drawn from each image's key (category, view seed), so a static and an in-loop run mask the same pixels.

The image augmentations of ``image_aug`` (flips, Mixup, erasing, label smoothing) belong to ``classify`` and are
not applied here. Renderer modes: ``frozen`` and ``adversarial`` (the renderer makes images that are hard to
reconstruct, within its bounds). ``joint`` is refused: descending a reconstruction loss, the renderer can shrink
and darken every point until the image is empty, which is trivial to reconstruct and teaches the network nothing.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torchvision.utils import make_grid

from dr_fdsl.config import Config
from dr_fdsl.errors import ConfigError
from dr_fdsl.models import create_classifier
from dr_fdsl.objectives.base import Objective, ObjectiveOutput
from dr_fdsl.objectives.mim_settings import MIMSpec, validate_mim  # noqa: F401  (validate_mim: the shared check)
from dr_fdsl.optim import create_optimizer
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.streams import Stream

MASK_SALT = 0x4D494D  # "MIM": the mask's keys differ from the renderer's for the same (category, view seed)


def pixel_mask(class_ids: torch.Tensor, view_seeds: torch.Tensor, size: int, patch: int, ratio: float) -> torch.Tensor:
    """Which pixels are masked: ``(B, 1, size, size)`` bool, whole ``patch`` x ``patch`` squares, each masked with
    probability ``ratio``, drawn from the image's key (independent of the batch it is in)."""
    keys = rnd.image_keys(class_ids, view_seeds, salt=MASK_SALT)
    cells = size // patch
    squares = rnd.uniform(keys, Stream.MIM_MASK, (cells, cells)) < ratio  # (B, cells, cells)
    return squares.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None]


class MaskedAutoencoder(nn.Module):
    """The backbone and the pixel decoder as one module, so that Accelerate wraps one forward (DDP synchronises
    both, autocast covers both). The backbone's classifier head is removed (``keep_head=False``): it would get no
    gradient. Its weights are saved under ``backbone.``, which :func:`dr_fdsl.finetune.load_pretrained` reads."""

    def __init__(self, backbone: nn.Module, keep_head: bool = False):
        super().__init__()
        if not keep_head:
            backbone.reset_classifier(0)
        self.backbone = backbone
        self.patch = backbone.patch_embed.patch_size[0]
        self.decoder = nn.Linear(backbone.embed_dim, self.patch**2 * 3)

    def reconstruct(self, masked: torch.Tensor) -> torch.Tensor:
        """Normalised masked images ``(B, 3, H, W)`` -> reconstructed normalised images ``(B, 3, H, W)`` float32."""
        tokens = self.backbone.forward_features(masked)[:, self.backbone.num_prefix_tokens:]  # (B, h * w, D)
        h = masked.shape[-2] // self.patch
        return rearrange(self.decoder(tokens).float(), "b (h w) (p q c) -> b c (h p) (w q)", h=h, p=self.patch,
                         q=self.patch)

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(masked)


def mask_and_reconstruct(model: MaskedAutoencoder, clean: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel L1 errors ``(B, 3, H, W)`` of the reconstruction of ``clean`` (normalised, ``(B, 3, H, W)``)
    masked by ``mask`` (``(B, 1, H, W)`` bool; masked pixels set to the normalised mean, 0), and of the masked
    image itself taken as its reconstruction (the identity baseline). ``model`` is any callable from masked to
    reconstructed images (a prepared :class:`MaskedAutoencoder`)."""
    masked = clean.masked_fill(mask, 0.0)
    return (model(masked) - clean).abs(), (masked - clean).abs()


def mean_l1(errors: torch.Tensor, mask: torch.Tensor, loss_on: str) -> torch.Tensor:
    """Per-image L1 ``(B,)`` of per-pixel ``errors (B, 3, H, W)``: over all pixels (``loss_on="all"``, as
    published), or over the masked ones (``"masked"``)."""
    if loss_on == "all":
        return errors.mean(dim=(1, 2, 3))
    weight = mask.expand_as(errors).float()
    return (errors * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1.0)


@torch.no_grad()
def reconstruction_grids(model: MaskedAutoencoder, clean: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor,
                         std: torch.Tensor, nrow: int = 4) -> dict[str, torch.Tensor]:
    """TensorBoard grids ``(3, H', W')`` float32 in [0, 1] on the CPU of the masked, reconstructed and clean images
    (``clean``: normalised ``(B, 3, H, W)``; ``mask`` ``(B, 1, H, W)`` bool; ``mean``/``std`` ``(1, 3, 1, 1)``).
    ``model`` must be the plain module (no DDP: the main process calls this alone); run in evaluation mode."""
    was_training = model.training
    model.eval()
    masked = clean.masked_fill(mask, 0.0)
    images = {"mim/masked": masked, "mim/reconstructed": model.reconstruct(masked), "mim/clean": clean}
    model.train(was_training)
    return {name: make_grid((x.float() * std + mean).clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5)
            for name, x in images.items()}


def check_backbone(backbone: nn.Module, model_name: str, objective: str, key: str = "model.name") -> None:
    """A masked-image objective needs patch tokens: a ViT-like timm model (``key``: the setting that chose it)."""
    if getattr(backbone, "patch_embed", None) is None or not hasattr(backbone, "num_prefix_tokens"):
        raise ConfigError(f"config key '{key}': objective {objective} needs a ViT-like timm model with patch "
                          f"tokens, got {model_name!r}")


class MaskedImageModelling(MIMSpec, Objective):
    eval_names = ("val/loss", "val/identity_loss")  # identity: the masked image itself taken as reconstruction

    def __init__(self, cfg: Config, num_classes: int, lr: float, device: torch.device):
        self.cfg = cfg
        backbone = create_classifier(cfg.model, num_classes, cfg.renderer.image_size)
        check_backbone(backbone, cfg.model.name, self.name)
        self.set_normalization(backbone, device)
        self.model = MaskedAutoencoder(backbone)  # prepared first: model.safetensors holds backbone.* and decoder.*
        self.plain = self.model  # never DDP-wrapped: for the image grids of the main process alone
        self.optimizer = create_optimizer(self.model, cfg.optim, lr)

    def _errors(self, images, class_ids, view_seeds):
        clean = self.normalize(images)
        mask = pixel_mask(class_ids, view_seeds, clean.shape[-1], self.cfg.mim.patch, self.cfg.mim.ratio)
        return (*mask_and_reconstruct(self.model, clean, mask), mask)

    def _mean(self, errors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mean_l1(errors, mask, self.cfg.mim.loss_on)

    def loss(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> ObjectiveOutput:
        errors, identity, mask = self._errors(images, class_ids, view_seeds)
        loss = self._mean(errors, mask).mean()
        metrics = {"train/loss": loss.detach(), "train/identity_loss": self._mean(identity, mask).mean().detach(),
                   "train/masked_fraction": mask.float().mean().detach()}
        return ObjectiveOutput(loss, loss, metrics)

    def clip_gradients(self, max_norm: float) -> dict[str, torch.Tensor]:
        return {"grad_norm/backbone": torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)}

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        errors, identity, mask = self._errors(images, class_ids, view_seeds)
        return torch.stack([self._mean(errors, mask), self._mean(identity, mask)], 1)

    @torch.no_grad()
    def image_grids(self, images: torch.Tensor, class_ids: torch.Tensor,
                    view_seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked, reconstructed and clean images (``mim/masked``, ``mim/reconstructed``, ``mim/clean``)."""
        clean = self.normalize(images)
        mask = pixel_mask(class_ids, view_seeds, clean.shape[-1], self.cfg.mim.patch, self.cfg.mim.ratio)
        return reconstruction_grids(self.plain, clean, mask, self.mean, self.std)
