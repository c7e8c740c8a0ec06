"""Conv-AP (Ali-bey et al., Neurocomputing 2022, gsv-cities): the full ResNet50 + Conv-AP (1x1 conv,
adaptive average pooling), built from the zoo's :class:`~vprlab.models.backbones.resnet.ResNetBackbone`
and ``ConvAP`` aggregator. Key map: gsv-cities' ResNet keys as for MixVPR
(:data:`._common.GSV_BACKBONE_RULES`), ``aggregator.channel_pool.*`` unchanged. The files are on
Google Drive (no URL)."""

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

_HERE = f"{FAMILIES_MODULE}.convap"


def configs_convap(entry: PublishedModel) -> Configs:
    """Full ResNet50 up to layer4 (2048 channels, stride 32; layer3 and layer4 train) + Conv-AP
    (1x1 conv, 2x2 adaptive average pooling), trained and evaluated at 320x320."""
    backbone = resnet_cfg("resnet50", False, 2, [320, 320], [320, 320])
    return backbone, {
        "_target_": f"{AGGREGATORS}.convap.ConvAP", "out_channels": int(entry.options["out_channels"]),
        "s1": int(entry.options["s1"]), "s2": int(entry.options["s2"]),
    }


def build_convap(entry: PublishedModel) -> VPRModel:
    return build_model(*configs_convap(entry))


def convert_convap(raw: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    return map_keys(raw, (*GSV_BACKBONE_RULES, (r"aggregator\.(channel_pool\.(?:weight|bias))", r"aggregator.\1")),
                    "Conv-AP ResNet50 release (backbone.model.*, aggregator.channel_pool.*)")


_DRIVE = ("Google Drive folder 1VYPw9uGD11NgiGFgfWueLt3noJYOIuhL "
          "(https://drive.google.com/drive/folders/1VYPw9uGD11NgiGFgfWueLt3noJYOIuhL, from github.com/amaralibey/gsv-cities)")
for _channels in (128, 512, 1024, 2048):
    register(PublishedModel(
        name=f"convap_resnet50_{4 * _channels}", method="Conv-AP", paper="Ali-bey et al., Neurocomputing 2022",
        backbone="ResNet50", descriptor_dim=4 * _channels, file_name=f"resnet50_ConvAP_{_channels}_2x2.ckpt", url=None,
        container="torch", preprocessing=EvalPreprocessing((320, 320), "bilinear", stage="pil"),
        build=f"{_HERE}:build_convap", convert=f"{_HERE}:convert_convap", configs=f"{_HERE}:configs_convap",
        export=f"{FAMILIES_MODULE}._common:export_gsv",
        options={"out_channels": _channels, "s1": 2, "s2": 2}, manual_download=_DRIVE,
        repo="amaralibey/gsv-cities", protocols={"vpr-methods-evaluation": VME_320},
    ))
