"""SuperVLAD and SuperVLAD-CrossImage (Lu et al., NeurIPS 2024; github.com/Lu-Feng/SuperVLAD): the
whole DINOv2 ViT-B/14 (the zoo's :class:`~vprlab.models.backbones.dinov2.DinoV2Backbone`, final norm
applied to the patch tokens, 322x322) + the :class:`~vprlab.models.aggregators.supervlad.SuperVLAD`
aggregator (4 clusters + 1 ghost cluster, 4 x 768 = 3072), with the cross-image encoder across the
batch for SuperVLAD-CrossImage.

The Google Drive files hold ``{"model_state_dict": ...}`` as the repository's train.py saves it
(possibly with ``module.`` from ``torch.nn.DataParallel``, dropped on reading; VME drops it too).
Key map: ``backbone.X`` -> ``backbone.dino.X`` (``mask_token`` kept), ``aggregation.conv.weight`` ->
``aggregator.assignment.weight``, ``encoder.X`` -> ``aggregator.encoder.X``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    VME_322,
    Configs,
    check_against_model,
    dinov2_cfg,
    export_what,
)
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.supervlad"
SUPERVLAD_RULES: Rules = (
    (r"backbone\.(.+)", r"backbone.dino.\1"),
    (r"aggregation\.conv\.weight", "aggregator.assignment.weight"),
    (r"encoder\.(.+)", r"aggregator.encoder.\1"),
)
SUPERVLAD_EXPORT_RULES: Rules = (
    (r"backbone\.dino\.(.+)", r"backbone.\1"),
    (r"aggregator\.assignment\.weight", "aggregation.conv.weight"),
    (r"aggregator\.encoder\.(.+)", r"encoder.\1"),
)
_DRIVE = {False: "1wRkUO4E8s5hNRNNIWcuA8RUvlGob3Tbf", True: "1yomnWGTJko6nf3F2Ju6RWsLhP2EG82tL"}


def configs_supervlad(entry: Any = None) -> Configs:
    """SuperVLAD's release: DINOv2 ViT-B/14 (its last 4 blocks train, ``--freeze_te=8``; evaluated at
    322x322) + SuperVLAD(4 clusters + 1 ghost; cross-image encoder for SuperVLAD-CrossImage)."""
    cross_image = bool(getattr(entry, "options", {}).get("cross_image", False))
    backbone = {**dinov2_cfg([322, 322], megaloc=False), "return_cls_token": False}
    aggregator = {
        "_target_": f"{AGGREGATORS}.supervlad.SuperVLAD", "num_clusters": 4, "num_ghost_clusters": 1,
        "cross_image": cross_image, "cross_image_heads": 16, "cross_image_ff_dim": 2048, "cross_image_layers": 2,
        "dropout": 0.1,
    }
    return backbone, aggregator


def build_supervlad(entry: Any = None) -> VPRModel:
    return build_model(*configs_supervlad(entry))


def convert_supervlad(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """A SuperVLAD file's model_state_dict (``module.`` already dropped) -> the state dict of :func:`build_supervlad`."""
    name = getattr(entry, "file_name", "SuperVLAD.pth")
    what = f"SuperVLAD release ({name} layout: backbone.*, aggregation.conv.weight, encoder.* with the cross-image encoder)"
    return check_against_model(map_keys(raw, SUPERVLAD_RULES, what), build_supervlad, entry, what)


def export_supervlad(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> the release's (the inverse of :func:`convert_supervlad`)."""
    return map_keys(state, SUPERVLAD_EXPORT_RULES, export_what(entry))


# SuperVLAD's eval.py / datasets_ws.py: ToTensor, Normalize, then torchvision's tensor resize to 322x322
# (bilinear; no antialiasing with the pinned torchvision 0.15).
_OWN = EvalPreprocessing((322, 322), "bilinear", antialias=False, stage="normalized")
for _cross in (False, True):
    _method = "SuperVLAD-CrossImage" if _cross else "SuperVLAD"
    register(PublishedModel(
        name=f"supervlad{'_crossimage' if _cross else ''}_dinov2_3072", method=_method,
        paper="Lu et al., NeurIPS 2024", backbone="DINOv2 ViT-B/14", descriptor_dim=3072,
        file_name=f"{_method}.pth", url=None, container="torch", preprocessing=_OWN,
        build=f"{_HERE}:build_supervlad", convert=f"{_HERE}:convert_supervlad",
        configs=f"{_HERE}:configs_supervlad", export=f"{_HERE}:export_supervlad",
        options={"cross_image": _cross},
        manual_download=f"Google Drive file id {_DRIVE[_cross]} (https://drive.google.com/file/d/{_DRIVE[_cross]})",
        repo="Lu-Feng/SuperVLAD", protocols={"vpr-methods-evaluation": VME_322},
        note=(
            "descriptors depend on the other images of the batch (cross-image encoder); evaluation records its batch "
            "size, and the README evaluates with 8 (the code's default is 16) for database and queries alike"
        ) if _cross else "",
    ))
