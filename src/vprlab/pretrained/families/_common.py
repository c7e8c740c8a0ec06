"""What several families share: the evaluation protocols, the zoo configs of their backbones, the
ResNet key rules of gsv-cities' code (MixVPR, Conv-AP) and the check of a converted state dict
against the model it is meant for."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.keymaps import Rules, check_state, map_keys

FAMILIES_MODULE = "vprlab.pretrained.families"
AGGREGATORS = "vprlab.models.aggregators"
Configs = tuple[dict[str, Any], dict[str, Any]]

NATIVE = EvalPreprocessing(size=None)
# VPR-methods-evaluation (github.com/gmberton/VPR-methods-evaluation): ToTensor, normalise, then the
# model wrapper resizes the normalised tensor (bilinear, antialiased).
VME_320 = EvalPreprocessing((320, 320), "bilinear", antialias=True, stage="normalized")
# parser.py's --image_size 322 322 (SuperVLAD, QAA): the input transform resizes the normalised tensor to
# 322x322 (antialiased); the dino_v2_resize wrapper then keeps it (322 is a multiple of 14).
VME_322 = EvalPreprocessing((322, 322), "bilinear", antialias=True, stage="normalized")
VME_DINO = EvalPreprocessing(None, "bilinear", antialias=True, stage="normalized", multiple_of=14)


def resnet_cfg(model_name: str, crop_last_block: bool, trainable: int, train_size: Any, eval_size: Any) -> dict[str, Any]:
    """A :class:`~vprlab.models.backbones.resnet.ResNetBackbone` config (no pretraining download)."""
    return {
        "_target_": "vprlab.models.backbones.resnet.ResNetBackbone", "model_name": model_name, "pretrained": False,
        "weights_path": None, "crop_last_block": crop_last_block, "num_trainable_blocks": trainable,
        "train_image_size": train_size, "eval_image_size": eval_size,
    }


def vgg16_cfg(pixel_mean: Any, train_size: Any) -> dict[str, Any]:
    """VGG16 to conv5_3 (:class:`~vprlab.models.backbones.vgg.VGGBackbone`), conv5 trains, native-size evaluation."""
    return {
        "_target_": "vprlab.models.backbones.vgg.VGGBackbone", "model_name": "vgg16", "pretrained": False, "weights_path": None,
        "num_trainable_blocks": 1, "pixel_mean": pixel_mean, "train_image_size": train_size, "eval_image_size": None,
    }


def dinov2_cfg(eval_image_size: Any, megaloc: bool) -> dict[str, Any]:
    """DINOv2 ViT-B/14 as SALAD trains it: last 4 blocks and the final norm train, 224x224 images."""
    return {
        "_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "model_name": "vit_base_patch14_dinov2",
        "pretrained": False, "weights_path": None,
        "num_trainable_blocks": 4, "train_image_size": [224, 224], "eval_image_size": eval_image_size,
        "return_cls_token": True, "apply_final_norm": True,
        "round_to_patch_multiple": megaloc, "keep_mask_token": not megaloc,
    }


def salad_cfg(cluster_dim: int, out_dim: int | None) -> dict[str, Any]:
    return {
        "_target_": f"{AGGREGATORS}.salad.SALAD", "num_clusters": 64, "cluster_dim": cluster_dim, "token_dim": 256,
        "hidden_dim": 512, "dropout": 0.3, "sinkhorn_iters": 3, "out_dim": out_dim,
    }


def check_against_model(
    state: Mapping[str, torch.Tensor], build: Callable[[Any], VPRModel], entry: Any, what: str
) -> dict[str, torch.Tensor]:
    """``state`` in the model's key order, or a ValueError naming every key of the model that
    ``state`` lacks, every key it has in excess and every shape that differs. The model is built on
    the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        expected = build(entry).state_dict()
    return check_state(expected, state, what, "the model")


def release_prefix(entry: Any) -> str:
    """``entry.options["release_prefix"]``: a prefix in front of every key of the release file where
    the released model wraps another method's network (Indoor-VPR: ``model.``), else ``""``."""
    return str((getattr(entry, "options", None) or {}).get("release_prefix", ""))


def prefixed(rules: Rules, prefix: str) -> Rules:
    """``rules`` for the same keys behind ``prefix`` (the prefix is matched literally and dropped)."""
    return tuple((re.escape(prefix) + pattern, replacement) for pattern, replacement in rules)


def add_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` in front of every key (the inverse of :func:`prefixed`), in order."""
    return {prefix + key: value for key, value in state.items()}


def export_what(entry: Any) -> str:
    """How an export names the state dict it maps: ``vprlab <method> <backbone> state dict``."""
    return f"vprlab {getattr(entry, 'method', '')} {getattr(entry, 'backbone', '')} state dict".replace("  ", " ")


def dinov2_hub_order(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state`` (release keys) with the DINOv2 hub model's first three keys under ``prefix`` (``cls_token``,
    ``pos_embed``, ``mask_token``) first, as the hub model holds them (timm puts ``mask_token`` last)."""
    first = [f"{prefix}{name}" for name in ("cls_token", "pos_embed", "mask_token")]
    return {**{k: state[k] for k in first if k in state}, **{k: v for k, v in state.items() if k not in first}}


# gsv-cities' ResNet (MixVPR, Conv-AP): backbone.model.conv1 / bn1 / layerK -> ResNetBackbone.net.0 / 1 / 3+K.
GSV_BACKBONE_RULES: Rules = (
    (r"backbone\.model\.conv1\.(.+)", r"backbone.net.0.\1"),
    (r"backbone\.model\.bn1\.(.+)", r"backbone.net.1.\1"),
    *((rf"backbone\.model\.layer{k}\.(.+)", rf"backbone.net.{3 + k}.\1") for k in (1, 2, 3, 4)),
)


def export_gsv(state: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """Our keys -> MixVPR's / Conv-AP's (the inverse of their convert), in the release's order."""
    return map_keys(state, (
        (r"backbone\.net\.0\.(.+)", r"backbone.model.conv1.\1"),
        (r"backbone\.net\.1\.(.+)", r"backbone.model.bn1.\1"),
        *((rf"backbone\.net\.{3 + k}\.(.+)", rf"backbone.model.layer{k}.\1") for k in (1, 2, 3, 4)),
        (r"aggregator\.(.+)", r"aggregator.\1"),
    ), export_what(entry))
