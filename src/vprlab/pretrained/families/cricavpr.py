"""CricaVPR (Lu et al., CVPR 2024; github.com/Lu-Feng/CricaVPR): DINOv2 ViT-B/14 with CricaVPR's
multi-scale convolutional adapter in every block (the zoo's
:class:`~vprlab.models.backbones.dinov2.DinoV2Backbone` with ``conv_adapters=true``, final norm,
class token), then the :class:`~vprlab.models.aggregators.cricavpr.CricaVPR` aggregator (class token +
2x2 and 3x3 GeM regions, 14 x 768 = 10752, and the cross-image encoder across the batch).

``CricaVPR.pth`` (GitHub release v1.0) holds ``{"model_state_dict": ...}`` of the model wrapped in
``torch.nn.DataParallel`` (every key starts with ``module.``, dropped on reading). Key map:
``backbone.blocks.N.adapter.{D_fc1, D_fc2, branch1, branch2, branch3}.*`` ->
``backbone.dino.blocks.N.adapter.{down, up, branch1x1, branch3x3, branch5x5}.*``, the other
``backbone.X`` -> ``backbone.dino.X``, ``aggregation.1.p`` -> ``aggregator.p``, ``encoder.X`` ->
``aggregator.encoder.X``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    Configs,
    check_against_model,
    dinov2_cfg,
    export_what,
)
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.cricavpr"
# The release's adapter module names -> ours (ConvAdapter).
_ADAPTER_NAMES = (("D_fc1", "down"), ("D_fc2", "up"), ("branch1", "branch1x1"), ("branch2", "branch3x3"), ("branch3", "branch5x5"))
CRICAVPR_RULES: Rules = (
    *((rf"backbone\.blocks\.(\d+)\.adapter\.{old}\.(.+)", rf"backbone.dino.blocks.\1.adapter.{new}.\2") for old, new in _ADAPTER_NAMES),
    (r"backbone\.(.+)", r"backbone.dino.\1"),
    (r"aggregation\.1\.p", "aggregator.p"),
    (r"encoder\.(.+)", r"aggregator.encoder.\1"),
)
CRICAVPR_EXPORT_RULES: Rules = (
    *((rf"backbone\.dino\.blocks\.(\d+)\.adapter\.{new}\.(.+)", rf"backbone.blocks.\1.adapter.{old}.\2") for old, new in _ADAPTER_NAMES),
    (r"backbone\.dino\.(.+)", r"backbone.\1"),
    (r"aggregator\.p", "aggregation.1.p"),
    (r"aggregator\.encoder\.(.+)", r"encoder.\1"),
)
# A descriptor depends on the other images of its batch (the cross-image encoder): said in every listing.
BATCH_NOTE = (
    "descriptors depend on the other images of the batch (cross-image encoder); evaluation records its batch size, "
    "and the original code uses 16 (8 on Pitts30k/250k) for database and queries alike"
)


def configs_cricavpr(entry: Any = None) -> Configs:
    """CricaVPR's release: DINOv2 ViT-B/14 + adapters (only the adapters train, as in CricaVPR's
    training; evaluated at 224x224) + CricaVPR(14 x 768 = 10752)."""
    backbone = {**dinov2_cfg([224, 224], megaloc=False), "num_trainable_blocks": 0, "conv_adapters": True}
    aggregator = {
        "_target_": f"{AGGREGATORS}.cricavpr.CricaVPR", "grids": [2, 3], "p": 3.0, "eps": 1e-6,
        "cross_image_heads": 16, "cross_image_ff_dim": 2048, "cross_image_layers": 2, "dropout": 0.1,
    }
    return backbone, aggregator


def build_cricavpr(entry: Any = None) -> VPRModel:
    return build_model(*configs_cricavpr(entry))


def convert_cricavpr(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """``CricaVPR.pth``'s model_state_dict (``module.`` already dropped) -> the state dict of :func:`build_cricavpr`."""
    what = "CricaVPR release (CricaVPR.pth layout: backbone.*, aggregation.1.p, encoder.*)"
    return check_against_model(map_keys(raw, CRICAVPR_RULES, what), build_cricavpr, entry, what)


def export_cricavpr(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> ``CricaVPR.pth``'s (without the ``module.`` prefix; the inverse of :func:`convert_cricavpr`)."""
    return map_keys(state, CRICAVPR_EXPORT_RULES, export_what(entry))


register(PublishedModel(
    name="cricavpr_dinov2_10752", method="CricaVPR", paper="Lu et al., CVPR 2024", backbone="DINOv2 ViT-B/14",
    descriptor_dim=10752, file_name="CricaVPR.pth",
    url="https://github.com/Lu-Feng/CricaVPR/releases/download/v1.0/CricaVPR.pth", container="torch",
    # eval.py / datasets_ws.py: ToTensor, Normalize, then torchvision's tensor resize to 224x224 (bilinear;
    # no antialiasing with the pinned torchvision 0.15, whose tensor default was antialias=False).
    preprocessing=EvalPreprocessing((224, 224), "bilinear", antialias=False, stage="normalized"),
    build=f"{_HERE}:build_cricavpr", convert=f"{_HERE}:convert_cricavpr",
    configs=f"{_HERE}:configs_cricavpr", export=f"{_HERE}:export_cricavpr",
    repo="Lu-Feng/CricaVPR", note=BATCH_NOTE,
    # VPR-methods-evaluation: ResizingWrapper(resize_type=224) on the normalised tensor, antialiased.
    protocols={"vpr-methods-evaluation": EvalPreprocessing((224, 224), "bilinear", antialias=True, stage="normalized")},
))
