"""MixVPR (Ali-bey et al., WACV 2023): ResNet50 cropped after layer3 + MixVPR, built from the zoo's
:class:`~vprlab.models.backbones.resnet.ResNetBackbone` and ``MixVPR`` aggregator. Key map
(reference/published_checkpoints/README.md): gsv-cities' ``backbone.model.conv1.*`` ->
``backbone.net.0.*``, ``bn1`` -> ``net.1``, ``layerK`` -> ``net.(3+K)``; ``aggregator.*`` keys are
already ours. The files are on Google Drive (no URL)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    GSV_BACKBONE_RULES,
    VME_320,
    Configs,
    resnet_cfg,
)
from vprlab.pretrained.keymaps import map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.mixvpr"


def configs_mixvpr(entry: PublishedModel) -> Configs:
    """ResNet50 cropped after layer3 (1024 channels, 20x20 at 320x320; layer3 trains) + MixVPR
    (4 mixers over 400 positions, mlp_ratio 1, row_proj with bias as released)."""
    backbone = resnet_cfg("resnet50", True, 1, [320, 320], [320, 320])
    return backbone, {
        "_target_": f"{AGGREGATORS}.mixvpr.MixVPR", "in_h": 20, "in_w": 20,
        "out_channels": int(entry.options["out_channels"]), "out_rows": int(entry.options["out_rows"]),
        "mix_depth": 4, "mlp_ratio": 1, "row_proj_bias": True,
    }


def build_mixvpr(entry: PublishedModel) -> VPRModel:
    return build_model(*configs_mixvpr(entry))


def convert_mixvpr(raw: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    return map_keys(raw, (*GSV_BACKBONE_RULES, (r"aggregator\.(.+)", r"aggregator.\1")),
                    "MixVPR ResNet50 release (backbone.model.*, aggregator.*)")


_DRIVE = {4096: "1vuz3PvnR7vxnDDLQrdHJaOA04SQrtk5L"}
for _dim, _channels, _rows in ((4096, 1024, 4), (512, 256, 2), (128, 64, 2)):
    _where = (f"Google Drive file id {_DRIVE[_dim]} (https://drive.google.com/file/d/{_DRIVE[_dim]})"
              if _dim in _DRIVE else "the Google Drive link in github.com/amaralibey/MixVPR's README")
    register(PublishedModel(
        name=f"mixvpr_resnet50_{_dim}", method="MixVPR", paper="Ali-bey et al., WACV 2023", backbone="ResNet50",
        descriptor_dim=_dim, file_name=f"resnet50_MixVPR_{_dim}_channels({_channels})_rows({_rows}).ckpt", url=None,
        container="torch", preprocessing=EvalPreprocessing((320, 320), "bilinear", stage="pil"),
        build=f"{_HERE}:build_mixvpr", convert=f"{_HERE}:convert_mixvpr", configs=f"{_HERE}:configs_mixvpr",
        export=f"{FAMILIES_MODULE}._common:export_gsv",
        options={"out_channels": _channels, "out_rows": _rows}, manual_download=_where,
        repo="amaralibey/MixVPR", protocols={"vpr-methods-evaluation": VME_320},
    ))
