"""The backbone: a timm model whose classes are the bank's categories and whose input is the renderer's image."""

from __future__ import annotations

import difflib

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from dr_fdsl.config import ModelConfig
from dr_fdsl.errors import ConfigError
from dr_fdsl.patch_conv import use_patch_conv


def create_classifier(cfg: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    """``timm.create_model(cfg.name)`` for ``image_size`` px inputs, checked with one dry forward.

    Raises:
        ConfigError: an unknown model name, or a model that cannot take ``image_size`` px images.
    """
    if not timm.is_model(cfg.name):
        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
        raise ConfigError(f"config key 'model.name': unknown timm model {cfg.name!r}{hint}")
    kwargs = dict(num_classes=num_classes, drop_path_rate=cfg.drop_path)
    if cfg.patch_size:
        try:
            return _checked(timm.create_model(cfg.name, img_size=image_size, patch_size=cfg.patch_size, **kwargs),
                            cfg.name, num_classes, image_size)
        except TypeError as err:
            raise ConfigError(f"config key 'model.patch_size': {cfg.name!r} has no patch size to set ({err}); "
                              "drop model.patch_size or choose a ViT") from err
    try:  # ViT-like models are built for the renderer's size; convolutional ones take any size
        model = timm.create_model(cfg.name, img_size=image_size, **kwargs)
    except TypeError:
        model = timm.create_model(cfg.name, **kwargs)
    return _checked(model, cfg.name, num_classes, image_size)


def _checked(model: nn.Module, name: str, num_classes: int, image_size: int) -> nn.Module:
    """``model`` after one dry forward of an ``image_size`` px image and a check of its patch grid and logits,
    its patch embedding's input gradient computed as one product on CPU (:mod:`dr_fdsl.patch_conv`)."""
    model = use_patch_conv(model)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None and any(image_size % p for p in patch):
        raise ConfigError(f"renderer.image_size={image_size} is not a multiple of {name}'s patch size "
                          f"{tuple(patch)}; choose a multiple of it")
    try:
        with torch.no_grad():
            was_training = model.training
            logits = model.eval()(torch.zeros(1, 3, image_size, image_size))
            model.train(was_training)
    except Exception as err:
        raise ConfigError(f"model {name!r} cannot take the renderer's {image_size} px images "
                          f"(renderer.image_size): {err}") from err
    if logits.shape != (1, num_classes):
        raise ConfigError(f"model {name!r} returned {tuple(logits.shape)} for one image, not (1, {num_classes})")
    return model


def normalization(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's input mean and std, ``(1, 3, 1, 1)`` each, from timm's data config for it."""
    data = resolve_model_data_config(model)
    return torch.tensor(data["mean"]).view(1, 3, 1, 1), torch.tensor(data["std"]).view(1, 3, 1, 1)
