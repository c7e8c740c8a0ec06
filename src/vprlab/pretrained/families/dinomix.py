"""DINO-Mix (Huang et al., Scientific Reports 2024; github.com/GaoShuang98/DINO-Mix): DINOv2 ViT-B/14
+ MixVPR, built from the zoo's :class:`~vprlab.models.backbones.dinov2.DinoV2Backbone` and ``MixVPR``
aggregator.

What the original code computes (``models/backbones/DINOv2_self.py``, ``hubconf.py``; VPR-methods-
evaluation ``vpr_models/dinomix.py`` is a copy): the DINOv2 hub ViT-B/14 with its final ``norm`` and
``head`` replaced by identities, ``forward_features`` (all 12 blocks run: ``layer1=7`` only freezes
patch embedding and blocks 0..7 for training, it cuts nothing), the patch tokens without the class
token and without a final norm, reshaped to [B, 768, 16, 16] at 224x224, then MixVPR(in 16x16,
768 -> 1024 channels, 4 rows, 2 mixers, mlp_ratio 1, ``row_proj`` with bias) -> 4096-d, L2.

File ``dinov2_vitb14_mix.ckpt``: a Lightning checkpoint ``{"state_dict": ...}`` whose keys are the
model's (``backbone.dino_model.*`` without ``norm.*``, ``aggregator.*``; the original loaders load it
strictly). Key map: ``backbone.dino_model.X`` -> ``backbone.dino.X``, ``aggregator.X`` unchanged."""

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
    dinov2_hub_order,
    export_what,
)
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.dinomix"
DINOMIX_RULES: Rules = ((r"backbone\.dino_model\.(.+)", r"backbone.dino.\1"), (r"aggregator\.(.+)", r"aggregator.\1"))
# DINO-Mix's DEFAULT_AGG_CONFIG (hubconf.py): 4096 = out_channels x out_rows.
AGG_CONFIG = {"in_h": 16, "in_w": 16, "out_channels": 1024, "out_rows": 4, "mix_depth": 2, "mlp_ratio": 1}
IMAGE_SIZE = (224, 224)


def configs_dinomix(entry: Any = None) -> Configs:
    """DINOv2 ViT-B/14 without final norm (blocks 8..11 train, as ``layer1=7`` freezes 0..7), 224x224,
    + MixVPR(16x16, 768 -> 1024 x 4 rows, 2 mixers, row_proj with bias)."""
    backbone = {
        "_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "model_name": "vit_base_patch14_dinov2",
        "pretrained": False, "weights_path": None, "num_trainable_blocks": 4,
        "train_image_size": list(IMAGE_SIZE), "eval_image_size": list(IMAGE_SIZE),
        "return_cls_token": False, "apply_final_norm": False, "keep_final_norm": False,
    }
    return backbone, {"_target_": f"{AGGREGATORS}.mixvpr.MixVPR", **AGG_CONFIG, "row_proj_bias": True}


def build_dinomix(entry: Any = None) -> VPRModel:
    return build_model(*configs_dinomix(entry))


def convert_dinomix(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """``dinov2_vitb14_mix.ckpt``'s ``state_dict`` (189 keys: 173 backbone, 16 aggregator) -> the state dict of :func:`build_dinomix`."""
    what = "DINO-Mix release (dinov2_vitb14_mix.ckpt layout: backbone.dino_model.*, aggregator.*)"
    return check_against_model(map_keys(raw, DINOMIX_RULES, what), build_dinomix, entry, what)


def export_dinomix(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> the release's (the inverse of :func:`convert_dinomix`), ``mask_token`` after
    ``pos_embed`` as the DINOv2 hub model holds it."""
    out = map_keys(state, ((r"backbone\.dino\.(.+)", r"backbone.dino_model.\1"), (r"aggregator\.(.+)", r"aggregator.\1")),
                   export_what(entry))
    return dinov2_hub_order(out, "backbone.dino_model.")


register(PublishedModel(
    name="dinomix_dinov2_4096", method="DINO-Mix", paper="Huang et al., Scientific Reports 2024", backbone="DINOv2 ViT-B/14",
    descriptor_dim=4096, file_name="dinov2_vitb14_mix.ckpt",
    url="https://github.com/GaoShuang98/DINO-Mix/releases/download/v1.0.0/dinov2_vitb14_mix.ckpt", container="torch",
    # GSVCitiesDataloader's valid_transform (the validation that gives the README's Pitts30k numbers).
    preprocessing=EvalPreprocessing(IMAGE_SIZE, "bilinear", stage="pil"),
    build=f"{_HERE}:build_dinomix", convert=f"{_HERE}:convert_dinomix",
    configs=f"{_HERE}:configs_dinomix", export=f"{_HERE}:export_dinomix", repo="GaoShuang98/DINO-Mix",
    # VPR-methods-evaluation: no ResizingWrapper; parser.py sets --image_size 224 224, which its
    # test_dataset applies after normalisation (torchvision Resize, bilinear, antialiased).
    protocols={"vpr-methods-evaluation": EvalPreprocessing(IMAGE_SIZE, "bilinear", antialias=True, stage="normalized")},
))
