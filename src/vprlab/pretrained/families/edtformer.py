"""EDTformer (Jin, Lu, Hu, Yuan and Liu, IEEE TCSVT 2025): DINOv2 ViT-B/14 with parallel low-rank
adapters (LoPA, bottleneck 4, residual weight 0.5) whose side stream goes through the final norm, then
the zoo's ``edtformer`` decoder aggregator (64 queries, 2 blocks, 256 x 16 = 4096-d).

``EDTformer.pth`` (GitHub release v1.0.0) is a torch file whose ``model_state_dict`` holds the state
dict of ``DataParallel(VPRNet)``. Key map, after the ``module.`` prefix is dropped:
``backbone.adapters.i.D_fc1/D_fc2.*`` -> ``backbone.adapters.i.down/up.*``, ``backbone.X`` ->
``backbone.dino.X`` (DINOv2's own names, ``mask_token`` kept), ``fc.*`` -> ``aggregator.input_proj.*``,
``decoder.layers.i.multihead_attn.*`` -> ``aggregator.layers.i.cross_attn.*``,
``decoder.layers.i.{self_attn,norm1,norm2}.*`` -> ``aggregator.layers.i.*``, ``queries`` /
``channel_proj.*`` / ``row_proj.*`` -> ``aggregator.*``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    VME_DINO,
    Configs,
    check_against_model,
    dinov2_cfg,
    export_what,
)
from vprlab.pretrained.keymaps import Rules, map_keys, prefix_rules
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.edtformer"

# (release prefix, our prefix); the adapters' layers (D_fc1 / D_fc2 -> down / up) and the bare
# ``queries`` key are renamed by the rules around them.
EDTFORMER_PREFIXES = (
    ("backbone", "backbone.dino"),
    ("fc", "aggregator.input_proj"),
    ("decoder.layers", "aggregator.layers"),
    ("channel_proj", "aggregator.channel_proj"),
    ("row_proj", "aggregator.row_proj"),
)
_ADAPTER_LAYERS = (("D_fc1", "down"), ("D_fc2", "up"))
EDTFORMER_RULES: Rules = (
    *((rf"backbone\.adapters\.(\d+)\.{old}\.(weight|bias)", rf"backbone.adapters.\1.{new}.\2") for old, new in _ADAPTER_LAYERS),
    *prefix_rules(EDTFORMER_PREFIXES),
    (r"queries", r"aggregator.queries"),
)
EXPORT_RULES: Rules = (
    *((rf"backbone\.adapters\.(\d+)\.{new}\.(weight|bias)", rf"backbone.adapters.\1.{old}.\2") for old, new in _ADAPTER_LAYERS),
    *prefix_rules(EDTFORMER_PREFIXES, inverse=True),
    (r"aggregator\.queries", r"queries"),
)


def configs_edtformer(entry: Any = None) -> Configs:
    """EDTformer's release: DINOv2 ViT-B/14 (every block frozen, adapters of width 4 trained, final
    norm, class token; trained at 224x224, evaluated at 322x322) + EDTformer(64 queries, 2 blocks,
    16 heads, 256 x 16)."""
    backbone = {**dinov2_cfg([322, 322], megaloc=False), "num_trainable_blocks": 0, "adapter_dim": 4, "adapter_scale": 0.5}
    aggregator = {
        "_target_": f"{AGGREGATORS}.edtformer.EDTformer", "num_queries": 64, "num_layers": 2, "num_heads": 16,
        "channel_dim": 256, "row_dim": 16, "dropout": 0.1,
    }
    return backbone, aggregator


def build_edtformer(entry: Any = None) -> VPRModel:
    return build_model(*configs_edtformer(entry))


def convert_edtformer(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """``EDTformer.pth``'s ``model_state_dict`` (``module.`` already dropped) -> the state dict of :func:`build_edtformer`."""
    what = "EDTformer release (EDTformer.pth model_state_dict layout: backbone.*, fc.*, decoder.layers.*, queries, channel_proj.*, row_proj.*)"
    return check_against_model(map_keys(raw, EDTFORMER_RULES, what), build_edtformer, entry, what)


def export_edtformer(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> the release's (the inverse of :func:`convert_edtformer`, without DataParallel's ``module.``)."""
    return map_keys(state, EXPORT_RULES, export_what(entry))


register(PublishedModel(
    name="edtformer_dinov2_4096", method="EDTformer", paper="Jin et al., IEEE TCSVT 2025", backbone="DINOv2 ViT-B/14",
    descriptor_dim=4096, file_name="EDTformer.pth",
    url="https://github.com/Tong-Jin01/EDTformer/releases/download/v1.0.0/EDTformer.pth", container="torch",
    # eval.py / datasets_ws.py: ToTensor, ImageNet Normalize, then transforms.functional.resize(img, [322, 322])
    # on the normalised tensor (bilinear; torchvision 0.15 as pinned: no antialiasing on tensors).
    preprocessing=EvalPreprocessing((322, 322), "bilinear", antialias=False, stage="normalized"),
    build=f"{_HERE}:build_edtformer", convert=f"{_HERE}:convert_edtformer",
    configs=f"{_HERE}:configs_edtformer", export=f"{_HERE}:export_edtformer",
    repo="Tong-Jin01/EDTformer", protocols={"vpr-methods-evaluation": VME_DINO},
))
