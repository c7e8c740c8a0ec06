"""Any timm model as a VPR backbone: a CNN feature map (one stage of ``features_only``) or a ViT
token grid (the patch tokens of one block, reshaped to [B, C, H/p, W/p]).

``backbone=timm backbone.model_name=convnext_tiny`` is all it takes; ``feature_index`` picks the
stage (CNN) or block (ViT). For DINOv2 prefer ``backbone=dinov2_*``, which reproduces the released
position-embedding resize exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vprlab.models.backbones._weights import create_timm_pretrained
from vprlab.models.spec import Backbone
from vprlab.utils.images import as_hw


def _create(model_name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` asking ViTs for any input size (``dynamic_img_size``), which CNN
    constructors refuse as an unexpected keyword."""
    try:
        return timm.create_model(model_name, dynamic_img_size=True, **kwargs)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
    return timm.create_model(model_name, **kwargs)


class TimmBackbone(Backbone):
    """A timm model cut at one feature level; returns [B, out_channels, H/stride, W/stride], or
    ``(feature map, class token [B, C])`` for a ViT with ``return_cls_token=True`` (SALAD).

    - ``model_name``: any name of ``timm.list_models()`` that supports ``features_only`` (CNNs such
      as ``convnext_tiny``, ``efficientnet_b0``, ``resnet50``; ViTs such as ``vit_base_patch16_224``).
    - ``feature_index``: which feature level: a stage of a CNN (-1 = the last, -2 = the one before,
      like cropping ResNet's layer4) or a block of a ViT. Levels after it are not built.
    - ``num_trainable_blocks``: how many feature levels, counted back from the chosen one, train;
      the rest is frozen (frozen BatchNorm layers stay in eval mode). 0 freezes everything, -1
      trains the whole model (stem, embeddings and all). For a CNN a level is everything between
      the previous feature level and this one; for a ViT it is one transformer block.
    - ``pretrained``: timm's pretrained weights (downloaded); ``weights_path``: a local file of the
      full timm model (``.safetensors`` or ``.pth``, as on the Hugging Face hub) loaded instead.
    - ``model_kwargs``: passed to ``timm.create_model`` (e.g. ``drop_path_rate``, or ``img_size`` for
      models with a fixed input size such as Swin).
    - ``mean`` / ``std``: the model's pretrained normalisation (timm's ``pretrained_cfg``).
    - ``train_image_size`` / ``eval_image_size``: the input sizes the model is meant for, as for the
      other backbones (a ViT needs multiples of its patch size).

    Stride and patch size are known only once the model is built (``config_stride`` is None).
    """

    can_return_cls_token = True  # ViTs only; a CNN with return_cls_token=True is refused when built

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        weights_path: str | Path | None = None,
        feature_index: int = -1,
        num_trainable_blocks: int = 1,
        return_cls_token: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        train_image_size: int | Sequence[int] | None = (224, 224),
        eval_image_size: int | Sequence[int] | None = (224, 224),
    ) -> None:
        super().__init__()
        if not timm.is_model(model_name):
            raise ValueError(
                f"unknown timm model_name={model_name!r}; list the available ones with "
                f"timm.list_models('*{model_name.split('_')[0]}*')"
            )
        kwargs: dict[str, Any] = dict(features_only=True, out_indices=(int(feature_index),), **(model_kwargs or {}))
        if weights_path is not None:  # a local file wins over downloading
            path = Path(weights_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"backbone.weights_path={str(path)!r} does not exist; point it to a timm {model_name} "
                    "state dict (.safetensors or .pth) or set backbone.weights_path=null"
                )
            model = _create(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        elif pretrained:
            # From the hub cache without network, else fails within seconds offline (no hub retries).
            model = create_timm_pretrained(_create, model_name, f"{model_name}.safetensors", **kwargs)
        else:
            model = _create(model_name, pretrained=False, **kwargs)
        self.model = model
        self.model_name = model_name

        info = model.feature_info
        levels = [entry["module"] for entry in info.info]
        self.feature_level = int(info.out_indices[0]) % len(levels)
        self.out_channels: int = int(info.channels()[-1])
        self.stride: int = int(info.reduction()[-1])
        inner = getattr(model, "model", None)  # token models are wrapped by a feature getter
        self.is_vit = inner is not None and hasattr(inner, "patch_embed") and hasattr(inner, "num_prefix_tokens")
        self.patch_size: int | None = None
        if self.is_vit:
            patch = inner.patch_embed.patch_size
            self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.channels_last_output = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
        self.return_cls_token = bool(return_cls_token)
        if self.return_cls_token and not (self.is_vit and getattr(inner, "cls_token", None) is not None):
            raise ValueError(
                f"backbone.return_cls_token=true needs a ViT with a class token, and {model_name} "
                f"{'has no class token' if self.is_vit else 'is not a token (ViT) model'}; use a ViT such as "
                "vit_base_patch16_224 or a DINOv2 backbone (backbone=dinov2_vitb14), or an aggregator "
                "without a global token"
            )

        pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
        self.mean = tuple(pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
        self.train_image_size = None if train_image_size is None else as_hw(train_image_size, "train_image_size")
        self.eval_image_size = None if eval_image_size is None else as_hw(eval_image_size, "eval_image_size")
        for name, size in (("train_image_size", self.train_image_size), ("eval_image_size", self.eval_image_size)):
            if size is not None and self.patch_size:
                try:
                    self._check_size(size)
                except ValueError as err:
                    raise ValueError(f"backbone.{name}: {err}") from None

        self._segments = self._level_segments(levels[: self.feature_level + 1])  # later levels are not built
        usable = self.feature_level + 1
        if not -1 <= num_trainable_blocks <= usable:
            raise ValueError(
                f"num_trainable_blocks={num_trainable_blocks} is out of range for {model_name} cut at feature "
                f"level {self.feature_level} ({levels[self.feature_level]}); use 0..{usable}, or -1 to train everything"
            )
        self.num_trainable_blocks = num_trainable_blocks
        if num_trainable_blocks != -1:
            self.model.requires_grad_(False)
            for segment in self._segments[usable - num_trainable_blocks : usable]:
                for module in segment:
                    module.requires_grad_(True)
        self.train(self.training)

    def _resolve(self, name: str) -> nn.Module:
        for candidate in (name, name.replace(".", "_"), f"model.{name}"):
            try:
                return self.model.get_submodule(candidate)
            except AttributeError:
                continue
        raise ValueError(f"timm feature level {name!r} of {self.model_name} is not a submodule of the model")

    def _level_segments(self, levels: list[str]) -> list[list[nn.Module]]:
        """The modules that make up each feature level: when every level is a top-level child (timm's
        FeatureListNet), everything from the previous level's module to this one; otherwise (ViT
        blocks, nested stages) the level's own module."""
        modules = [self._resolve(name) for name in levels]
        children = list(self.model.children())
        if all(any(m is c for c in children) for m in modules):
            segments: list[list[nn.Module]] = [[] for _ in modules]
            current = 0
            for child in children:
                if current >= len(modules):
                    segments[-1].append(child)
                    continue
                segments[current].append(child)
                if child is modules[current]:
                    current += 1
            return segments
        return [[m] for m in modules]

    def _check_size(self, size: Sequence[int]) -> None:
        for side in size:
            if side % self.patch_size:
                below = max(self.patch_size, side // self.patch_size * self.patch_size)
                above = (side // self.patch_size + 1) * self.patch_size
                raise ValueError(
                    f"image size {side} is not a multiple of the patch size {self.patch_size} of {self.model_name}; "
                    f"use {above} or {below}"
                )

    def train(self, mode: bool = True) -> "TimmBackbone":
        super().train(mode)
        if mode:  # frozen BatchNorm keeps the running statistics of the loaded weights
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    if not any(p.requires_grad for p in module.parameters()):
                        module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.patch_size:
            self._check_size(x.shape[-2:])
        if self.return_cls_token:
            grid, prefix = self.model.model.forward_intermediates(
                x, indices=self.model.out_indices, return_prefix_tokens=True, norm=False,
                output_fmt="NCHW", intermediates_only=True,
            )[-1]
            return grid, prefix[:, 0]
        features = self.model(x)[-1]
        if self.channels_last_output:
            features = features.permute(0, 3, 1, 2)
        return features
