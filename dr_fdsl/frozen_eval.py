"""Judging a frozen backbone by its features: a linear probe and a k-NN classifier.

The protocols for label-free pre-training (and a second view of supervised pre-training): the backbone is not
trained; its pooled features (timm's ``forward_head(..., pre_logits=True)``) of the real training images are the
input of a classifier fitted here, and top-1 is measured on the test split (both as the fine-tuning settings
give them: ``per_class`` and ``max_test`` limit them).

* k-NN (Wu et al., 2018, as DINO uses it): features L2-normalised, cosine similarity to every training image,
  the ``k`` most similar vote for their class with weight ``exp(similarity / temperature)``.
* Linear probe (as MAE's: features standardised with the training set's mean and std, one linear layer) trained
  with AdamW and a cosine schedule on the frozen features, with the settings' ``weight_decay`` (MAE uses 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler


def model_input(pixels: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(B, 3, h, w)`` -> the model's normalised float input ``(B, 3, size, size)`` (bilinear resize
    when the sizes differ); ``mean``/``std`` ``(1, 3, 1, 1)`` on the images' device."""
    x = pixels.float() / 255
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - mean) / std


@torch.no_grad()
def extract_features(model: torch.nn.Module, pixels: torch.Tensor, size: int, mean: torch.Tensor,
                     std: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Pooled features of ``pixels (N, 3, h, w)`` uint8, resized to ``size``: ``(N, D)`` float32 on the CPU."""
    model.eval()
    out = []
    for i in range(0, len(pixels), batch_size):
        x = model_input(pixels[i:i + batch_size].to(device), size, mean.to(device), std.to(device))
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN votes: ``(M, D)`` test features against ``(N, D)`` training ones -> ``(M,)`` int64 classes.

    Ties between classes go to the lowest class index (``argmax``)."""
    train = F.normalize(train_features.float(), dim=1)
    k = min(k, len(train))
    predictions = []
    for i in range(0, len(test_features), chunk):
        similarity = F.normalize(test_features[i:i + chunk].float(), dim=1) @ train.T  # (m, N)
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes).scatter_add_(1, train_labels[index], (top / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, epochs: int, lr: float, weight_decay: float,
                 batch_size: int, seed: int) -> list[float]:
    """Trains a linear classifier on standardised frozen features; returns test top-1 after every epoch."""
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    train, test = (train_features - mean) / std, (test_features - mean) / std
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(train.shape[1], num_classes)
    with torch.no_grad():  # seeded initialisation, independent of the global generator
        bound = 1 / math.sqrt(train.shape[1])
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.zero_()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs * steps_per_epoch, lr_min=lr * 1e-3,
                                  t_in_epochs=False)
    top1, step = [], 0
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for i in range(0, len(train), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(head(train[batch]), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
        with torch.no_grad():
            top1.append(float((head(test).argmax(1) == test_labels).float().mean()))
    return top1
