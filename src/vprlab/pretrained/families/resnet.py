"""The ResNet families: CosPlace and EigenPlaces (same network), MixVPR and Conv-AP, built from the
zoo's own components (:class:`~vprlab.models.backbones.resnet.ResNetBackbone` and the ``CosPlace``,
``MixVPR``, ``ConvAP`` aggregators), with the release keys mapped explicitly onto ours.

Key maps (reference/published_checkpoints/README.md):

- CosPlace / EigenPlaces: ``backbone.N.*`` -> ``backbone.net.N.*`` (the same ``nn.Sequential`` of
  conv1, bn1, relu, maxpool, layer1..layer4, so the indices agree), ``aggregation.1.p`` ->
  ``aggregator.p`` (GeM exponent), ``aggregation.3.*`` -> ``aggregator.fc.*``.
- MixVPR / Conv-AP: ``backbone.model.conv1.*`` -> ``backbone.net.0.*``, ``bn1`` -> ``net.1``,
  ``layerK`` -> ``net.(3+K)``; ``aggregator.*`` keys are already ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.registry import PublishedModel

_BACKBONE = "vprlab.models.backbones.resnet.ResNetBackbone"
_AGGREGATORS = "vprlab.models.aggregators"


def map_keys(raw: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]], what: str) -> dict[str, torch.Tensor]:
    """Rename every key of ``raw`` by the first matching ``(regex, replacement)`` rule (full match);
    a key no rule maps is an error that names it."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in raw.items():
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(replacement, key)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(unmapped[:8]) + (f" ... and {len(unmapped) - 8} more" if len(unmapped) > 8 else "")
        raise ValueError(f"{len(unmapped)} keys of the file are not part of the released {what} layout: {shown}")
    return out


def _backbone_cfg(model_name: str, crop_last_block: bool, trainable: int, train_size: Any, eval_size: Any) -> dict[str, Any]:
    return {
        "_target_": _BACKBONE, "model_name": model_name, "pretrained": False, "weights_path": None,
        "crop_last_block": crop_last_block, "num_trainable_blocks": trainable,
        "train_image_size": train_size, "eval_image_size": eval_size,
    }


# ------------------------------------------------------------------------------ CosPlace, EigenPlaces


def configs_cosplace(entry: PublishedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """ResNet with layer4 kept (stride 32) + CosPlace (per-position L2, GeM with learned p, Linear, L2).
    CosPlace trains layer3 and layer4 at 512x512 and evaluates at the native size (eval_image_size None)."""
    backbone = _backbone_cfg(entry.options["backbone"], False, 2, [512, 512], None)
    return backbone, {"_target_": f"{_AGGREGATORS}.cosplace.CosPlace", "out_dim": int(entry.options["fc_dim"])}


def build_cosplace(entry: PublishedModel) -> VPRModel:
    return build_model(*configs_cosplace(entry))


def convert_cosplace(raw: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    return map_keys(raw, [
        (r"backbone\.([014567])\.(.+)", r"backbone.net.\1.\2"),
        (r"aggregation\.1\.p", "aggregator.p"),
        (r"aggregation\.3\.(weight|bias)", r"aggregator.fc.\1"),
    ], f"{entry.method} {entry.backbone}")


def export_cosplace(state: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    """Our keys -> CosPlace's (the inverse of :func:`convert_cosplace`), in the release's order."""
    return map_keys(state, [
        (r"backbone\.net\.([014567])\.(.+)", r"backbone.\1.\2"),
        (r"aggregator\.p", "aggregation.1.p"),
        (r"aggregator\.fc\.(weight|bias)", r"aggregation.3.\1"),
    ], f"vprlab {entry.method} {entry.backbone}")


# ------------------------------------------------------------------------------------ MixVPR, Conv-AP

_GSV_BACKBONE_RULES = [
    (r"backbone\.model\.conv1\.(.+)", r"backbone.net.0.\1"),
    (r"backbone\.model\.bn1\.(.+)", r"backbone.net.1.\1"),
    *((rf"backbone\.model\.layer{k}\.(.+)", rf"backbone.net.{3 + k}.\1") for k in (1, 2, 3, 4)),
]


def configs_mixvpr(entry: PublishedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """ResNet50 cropped after layer3 (1024 channels, 20x20 at 320x320; layer3 trains) + MixVPR
    (4 mixers over 400 positions, mlp_ratio 1, row_proj with bias as released)."""
    backbone = _backbone_cfg("resnet50", True, 1, [320, 320], [320, 320])
    return backbone, {
        "_target_": f"{_AGGREGATORS}.mixvpr.MixVPR", "in_h": 20, "in_w": 20,
        "out_channels": int(entry.options["out_channels"]), "out_rows": int(entry.options["out_rows"]),
        "mix_depth": 4, "mlp_ratio": 1, "row_proj_bias": True,
    }


def build_mixvpr(entry: PublishedModel) -> VPRModel:
    return build_model(*configs_mixvpr(entry))


def convert_mixvpr(raw: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    return map_keys(raw, [*_GSV_BACKBONE_RULES, (r"aggregator\.(.+)", r"aggregator.\1")], "MixVPR ResNet50")


def configs_convap(entry: PublishedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full ResNet50 up to layer4 (2048 channels, stride 32; layer3 and layer4 train) + Conv-AP
    (1x1 conv, 2x2 adaptive average pooling), trained and evaluated at 320x320."""
    backbone = _backbone_cfg("resnet50", False, 2, [320, 320], [320, 320])
    return backbone, {
        "_target_": f"{_AGGREGATORS}.convap.ConvAP", "out_channels": int(entry.options["out_channels"]),
        "s1": int(entry.options["s1"]), "s2": int(entry.options["s2"]),
    }


def build_convap(entry: PublishedModel) -> VPRModel:
    return build_model(*configs_convap(entry))


def convert_convap(raw: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    return map_keys(raw, [*_GSV_BACKBONE_RULES, (r"aggregator\.(channel_pool\.(?:weight|bias))", r"aggregator.\1")], "Conv-AP ResNet50")


def export_gsv(state: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    """Our keys -> MixVPR's / Conv-AP's (the inverse of their convert), in the release's order."""
    return map_keys(state, [
        (r"backbone\.net\.0\.(.+)", r"backbone.model.conv1.\1"),
        (r"backbone\.net\.1\.(.+)", r"backbone.model.bn1.\1"),
        *((rf"backbone\.net\.{3 + k}\.(.+)", rf"backbone.model.layer{k}.\1") for k in (1, 2, 3, 4)),
        (r"aggregator\.(.+)", r"aggregator.\1"),
    ], f"vprlab {entry.method} {entry.backbone}")
