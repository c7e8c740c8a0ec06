"""BoQ (Ali-bey et al., CVPR 2024): the released files use vprlab's own keys (no conversion)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.registry import RELEASED_MODELS, PublishedModel


def build_boq(entry: PublishedModel) -> VPRModel:
    return RELEASED_MODELS[entry.options["released"]].architecture.build()


def configs_boq(entry: PublishedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The zoo configs of the released BoQ architecture (what :func:`build_boq` builds), trained as the
    BoQ recipes do (2 trainable blocks; ResNet50 at 320x320, DINOv2 at 280x280)."""
    arch = RELEASED_MODELS[entry.options["released"]].architecture
    sizes = {"eval_image_size": list(arch.eval_image_size or ())}
    if arch.is_dinov2:
        backbone = {"_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "model_name": arch.backbone,
                    "pretrained": False, "weights_path": None, "num_trainable_blocks": 2, "train_image_size": [280, 280], **sizes}
    else:
        backbone = {"_target_": "vprlab.models.backbones.resnet.ResNetBackbone", "model_name": arch.backbone,
                    "pretrained": False, "weights_path": None, "crop_last_block": arch.crop_last_block,
                    "num_trainable_blocks": 2, "train_image_size": [320, 320], **sizes}
    aggregator = {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": arch.proj_channels,
                  "num_queries": arch.num_queries, "num_layers": arch.num_layers, "row_dim": arch.row_dim}
    return backbone, aggregator


def export_boq(state: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    """The release uses our keys: the state dict as it is."""
    return dict(state)
