"""Objective ``sit``: SiT, self-supervised vision transformers (Atito, Awais & Kittler 2021), on the rendered stream.

As the public code of the paper's version computes it (Sara-Ahmed/SiT at 1aacd6a: ``vision_transformer_SiT.py``,
``losses.py``, ``engine.py``, ``datasets/datasets_utils.py``):

* two views of each source are made (here: two view seeds of one category, ``data.views_per_category=2``, or two
  copies of one render, ``data.repeated_aug=2``; adjacent in the micro-batch), each colour-jittered and turned by
  a random quarter-turn, then corrupted (:mod:`dr_fdsl.objectives.sit_views`);
* the ViT reads the corrupted view with two tokens of its own: the rotation token feeds ``Linear(D, 4)``
  (cross-entropy against the quarter-turn), the contrastive token ``Linear(D, 512)`` (NT-Xent, temperature 0.5,
  over the 2B views: each view's positive is its pair, the other 2B - 2 views its negatives); the patch tokens
  feed a linear pixel decoder (``ConvTranspose2d(D, 3, p, stride=p)``) whose output is compared with the clean
  (jittered, turned, normalised) view by an L1 loss over all pixels;
* the three losses are weighted by learned uncertainties ``s`` (three scalars, initialised at 1):
  ``total = sum_t exp(-a_t s_t) L_t + s_t / 2`` with ``a = 1`` for rotation and contrastive and ``a = 0.5`` for the
  L1 reconstruction (``LearnedLoss.calculate_weighted_loss``).

The backbone is timm's ViT of ``model.name``, unchanged: its class token is the contrastive token, and the rotation
token is one extra learned token inserted after the backbone's prefix tokens (a fixed position, so it needs no
position embedding of its own). The backbone is saved under ``backbone.`` and exported as a plain timm ViT (its
class token then carries the contrastive representation); the rotation token and the heads stay behind.

What differs from the published code: the donor of the "replaced" rectangles (see ``sit_views``); the published
transform's crops and flips are left to the camera; the views' positives may be two view seeds of one category
(different renders) rather than two crops of one image; the contrastive task runs per process (as published: no
gather across GPUs); no EMA model (published keeps one for evaluation only).

Renderer modes and what the renderer's gradient means: the gradient reaches the renderer through the network's
input only (the corrupted views); the reconstruction target is detached, as a data set's image would be.
``frozen`` gives the static dataset's images. ``adversarial`` makes views that are hard to turn, to tell apart and to
reconstruct, within the renderer's bounds. ``joint`` is refused: descending these losses, the renderer could empty
the images (trivial to reconstruct) or paint each category a colour of its own (contrastive positives found by
colour), which teaches the network nothing about shape.

Rotation prediction needs views with an "up": with ``renderer.view.rotation=so3``, or a roll range wider than a
quarter-turn, a turned view is also an unturned view of another roll, so the config check refuses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torchvision.utils import make_grid

from dr_fdsl.config import Config
from dr_fdsl.errors import ConfigError
from dr_fdsl.models import create_classifier
from dr_fdsl.objectives.base import Objective, ObjectiveOutput
from dr_fdsl.objectives.sit_settings import SiTSpec
from dr_fdsl.objectives.sit_views import color_jitter, corrupt, rotate, rotation_labels, view_keys
from dr_fdsl.optim import create_optimizer

TASKS = ("rotation", "contrastive", "reconstruction")
# exp(-a s): the published LearnedLoss's `adj`: 1 for cross-entropy and contrastive, 0.5 for L1.
UNCERTAINTY_SCALE = (1.0, 1.0, 0.5)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B views (``losses.ContrastiveLoss``): view i of ``first`` and view i of ``second`` are
    positives; every other view of both is a negative. Each view's loss is ``-log(exp(sim(i, pos) / T) /
    sum_{k != i} exp(sim(i, k) / T))`` with cosine similarities; the mean over the 2B views.

    Args:
        first, second: ``(B, P)`` projections of the two views of B sources (any scale; normalised here).
    Returns: scalar float32.
    """
    z = F.normalize(torch.cat([first, second]).float(), dim=1)
    logits = z @ z.T / temperature
    n = first.shape[0]
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # k != i
    return F.cross_entropy(logits, positive)


def uncertainty_weighting(losses: torch.Tensor, s: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``sum_t exp(-scale_t s_t) losses_t + s_t / 2`` (``LearnedLoss.calculate_weighted_loss``); ``(T,)`` each."""
    return (torch.exp(-scale * s) * losses + 0.5 * s).sum()


class SiTNetwork(nn.Module):
    """The backbone, the rotation token, the heads, the decoder and the uncertainties as one module (Accelerate
    wraps one forward: DDP synchronises every part, autocast covers it). Saved under ``backbone.`` (read by
    :func:`dr_fdsl.finetune.load_pretrained`), ``rotation_token``, ``rotation_head``, ``contrastive_head``,
    ``decoder`` and ``uncertainty``."""

    def __init__(self, backbone: nn.Module, projection_dim: int):
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone
        dim = backbone.embed_dim
        self.patch = backbone.patch_embed.patch_size[0]
        self.rotation_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.rotation_head = nn.Linear(dim, 4)
        self.contrastive_head = nn.Linear(dim, projection_dim)
        self.decoder = nn.ConvTranspose2d(dim, 3, kernel_size=self.patch, stride=self.patch)
        self.uncertainty = nn.Parameter(torch.ones(len(TASKS)))  # rot_w, contrastive_w, recons_w: 1.0 each
        trunc_normal_(self.rotation_token, std=0.02)
        for head in (self.rotation_head, self.contrastive_head):  # _init_vit_weights (the decoder keeps torch's)
            trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()} | {"rotation_token"}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalised views ``(B, 3, H, W)`` -> rotation logits ``(B, 4)``, projections ``(B, P)``, reconstructed
        normalised views ``(B, 3, H, W)``, all float32, and the uncertainties ``(3,)`` (returned, as the published
        model does, so that DDP sees every parameter used by the forward)."""
        b, vit = images.shape[0], self.backbone
        x = vit.patch_drop(vit._pos_embed(vit.patch_embed(images)))  # timm's forward_features, up to the blocks
        n = vit.num_prefix_tokens
        x = torch.cat([x[:, :n], self.rotation_token.expand(b, -1, -1), x[:, n:]], dim=1)
        x = vit.norm(vit.blocks(vit.norm_pre(x)))
        h = images.shape[-2] // self.patch
        patches = x[:, n + 1:].transpose(1, 2).unflatten(2, (h, -1))  # (B, D, h, w)
        return (self.rotation_head(x[:, n]).float(), self.contrastive_head(x[:, 0]).float(),
                self.decoder(patches).float(), self.uncertainty.float())


class SiT(SiTSpec, Objective):
    # identity: the corrupted view itself taken as the reconstruction
    eval_names = ("val/rotation_acc", "val/rotation_loss", "val/reconstruction_loss", "val/identity_loss")

    def __init__(self, cfg: Config, num_classes: int, lr: float, device: torch.device):
        self.cfg = cfg
        backbone = create_classifier(cfg.model, num_classes, cfg.renderer.image_size)
        if getattr(backbone, "cls_token", None) is None or not hasattr(backbone, "_pos_embed"):
            raise ConfigError(f"config key 'model.name': objective sit needs a timm VisionTransformer with a class "
                              f"token (the contrastive token), got {cfg.model.name!r}")
        self.set_normalization(backbone, device)
        # The plain module: image grids run it on the main process alone, where the DDP wrapper must not run.
        self.network = SiTNetwork(backbone, cfg.sit.projection_dim).to(device)
        self.model = self.network  # prepared first: model.safetensors holds backbone.* and the rest
        # optim.name's optimiser; timm leaves biases, norms, the uncertainties (1-D, as published) and the
        # network's no_weight_decay() (position embedding, tokens) out of the weight decay.
        self.optimizer = create_optimizer(self.network, cfg.optim, lr)
        self.scale = torch.tensor(UNCERTAINTY_SCALE, device=device)

    def views(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor,
              group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean views (jittered, normalised, turned: the reconstruction targets), corrupted views and rotation
        labels: ``(B, 3, H, W)``, ``(B, 3, H, W)``, ``(B,)``. ``group``: see :func:`sit_views.corrupt`."""
        keys = view_keys(class_ids, view_seeds.to(images.device))
        labels = rotation_labels(keys)
        clean = rotate(self.normalize(color_jitter(images, keys, self.cfg.sit.color_jitter)), labels)
        return clean, corrupt(clean, keys, self.cfg.sit, group), labels

    def loss(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> ObjectiveOutput:
        clean, corrupted, labels = self.views(images, class_ids, view_seeds, group=2)
        rotation, projection, reconstruction, s = self.model(corrupted)
        target = clean.detach()  # the renderer's gradient comes through the network's input only
        losses = torch.stack([F.cross_entropy(rotation, labels),
                              nt_xent(projection[0::2], projection[1::2], self.cfg.sit.temperature),
                              (reconstruction - target).abs().mean()])
        total = uncertainty_weighting(losses, s, self.scale)
        with torch.no_grad():
            z = F.normalize(projection.float(), dim=1)
            similarity = (z @ z.T).fill_diagonal_(-2.0)
            partner = torch.arange(len(z), device=z.device) ^ 1  # views 2i and 2i + 1 are a pair
            metrics = {"train/loss": total.detach(),
                       "train/sit_rotation_acc": (rotation.argmax(1) == labels).float().mean(),
                       "train/sit_contrastive_acc": (similarity.argmax(1) == partner).float().mean(),
                       "train/sit_identity_loss": (corrupted - target).abs().mean()}
            weights = torch.exp(-self.scale * s)
            for i, task in enumerate(TASKS):
                metrics[f"train/sit_{task}_loss"] = losses[i].detach()
                metrics[f"train/sit_{task}_weight"] = weights[i].detach()
                metrics[f"train/sit_{task}_s"] = s[i].detach()
        return ObjectiveOutput(total, total, metrics)

    def clip_gradients(self, max_norm: float) -> dict[str, torch.Tensor]:
        return {"grad_norm/backbone": torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)}

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        clean, corrupted, labels = self.views(images, class_ids, view_seeds, group=1)
        rotation, _, reconstruction, _ = self.model(corrupted)
        return torch.stack([(rotation.argmax(1) == labels).float(),
                            F.cross_entropy(rotation, labels, reduction="none"),
                            (reconstruction - clean).abs().mean(dim=(1, 2, 3)),
                            (corrupted - clean).abs().mean(dim=(1, 2, 3))], 1)

    @torch.no_grad()
    def image_grids(self, images: torch.Tensor, class_ids: torch.Tensor,
                    view_seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sit/corrupted``, ``sit/reconstructed``, ``sit/clean``: the grid views as the network sees them, as it
        reconstructs them and as they should be (de-normalised, clipped to [0, 1])."""
        was_training = self.network.training
        self.network.eval()
        clean, corrupted, _ = self.views(images, class_ids, view_seeds, group=1)
        reconstruction = self.network(corrupted)[2]
        self.network.train(was_training)
        grids = {}
        for name, x in (("corrupted", corrupted), ("reconstructed", reconstruction), ("clean", clean)):
            pixels = (x * self.std + self.mean).clamp(0, 1).float().cpu()
            grids[f"sit/{name}"] = make_grid(pixels, nrow=4, padding=2, pad_value=0.5)
        return grids
