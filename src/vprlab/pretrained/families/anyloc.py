"""AnyLoc (Keetha et al., IEEE RA-L 2023), AnyLoc-VLAD-DINOv2 as its torch.hub entry builds it
(github.com/AnyLoc/DINO ``hubconf.py:get_vlad_model``, ``model_wrapper.py``, ``dinov2_extractor.py``,
``utilities.py:VLAD``): Meta's DINOv2 ViT-G/14, the "value" facet of block 31 (0-based, of 40) for
the patch tokens, each L2-normalised, then VLAD over 32 released cluster centres (one vocabulary per
domain) with hard assignment by cosine similarity, residuals to the (unnormalised) centres,
intra-normalisation, cluster-major flattening and L2 normalisation: 32 x 1536 = 49152-d.

Built from zoo components: :class:`~vprlab.models.backbones.dinov2.DinoV2Backbone` with
``facet_layer=31, facet="value"`` and :class:`~vprlab.models.aggregators.netvlad.NetVLAD` with
``assignment="hard"``. Two files per model: the vocabulary (``dinov2_vitg14_l31_value_c32_<domain>_c_centers.pt``,
``torch.save`` of one [32, 1536] tensor) and the DINOv2 weights (``dinov2_vitg14_pretrain.pth``, a bare
state dict). Key map: the vocabulary -> ``aggregator.centroids``; ``dinov2.X`` (the DINOv2 file's
keys, prefixed on reading) -> ``backbone.dino.X``, with ViT-G's SwiGLU ``mlp.w12`` / ``mlp.w3`` ->
timm's ``mlp.fc1`` / ``mlp.fc2``. Evaluation only (AnyLoc trains nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import AGGREGATORS, FAMILIES_MODULE, VME_DINO, Configs, check_against_model
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, ReleaseFile, register
from vprlab.utils.errors import ConfigError
from vprlab.utils.weights import torch_load

_HERE = f"{FAMILIES_MODULE}.anyloc"
DOMAINS = ("urban", "indoor", "aerial", "structured", "unstructured", "global")
VOCABULARY_KEY = "c_centers"  # the name the vocabulary's one tensor gets (AnyLoc's VLAD.c_centers)
DINOV2_PREFIX = "dinov2."  # in front of the DINOv2 file's keys when read with the vocabulary
# The released combination (hubconf.py AVAIL_VLADCC_FILES): ViT-G/14, layer 31, value facet, 32 clusters.
ANYLOC_OPTIONS: dict[str, Any] = {
    "model_name": "vit_giant_patch14_dinov2", "facet_layer": 31, "facet": "value", "num_clusters": 32, "timm_overrides": None,
}
ANYLOC_RULES: Rules = (
    (VOCABULARY_KEY, "aggregator.centroids"),
    (r"dinov2\.blocks\.(\d+)\.mlp\.w12\.(weight|bias)", r"backbone.dino.blocks.\1.mlp.fc1.\2"),
    (r"dinov2\.blocks\.(\d+)\.mlp\.w3\.(weight|bias)", r"backbone.dino.blocks.\1.mlp.fc2.\2"),
    (r"dinov2\.(.+)", r"backbone.dino.\1"),
)
# AnyLoc's evaluation on the VG benchmarks (scripts/dino_v2_vlad.py with dvgl_benchmark/datasets_ws.py's
# BaseDataset and configs.py's defaults): ToTensor, ImageNet normalisation, resize to 480x640 (H x W) on
# the normalised tensor (torchvision 0.14.1: bilinear, no antialiasing for tensors), centre crop to
# multiples of 14 (476x630).
ANYLOC_EVAL = EvalPreprocessing((480, 640), "bilinear", antialias=False, stage="normalized", crop_multiple_of=14)
DINOV2_VITG14 = ReleaseFile(
    file_name="dinov2_vitg14_pretrain.pth", url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth",
    what="DINOv2 ViT-G/14 weights (Meta, 1.1B parameters, 4.5 GB)", prefix=DINOV2_PREFIX, cache_dir="checkpoints",
)


def _options(entry: Any) -> dict[str, Any]:
    return {**ANYLOC_OPTIONS, **dict(getattr(entry, "options", None) or {})}


def anyloc_configs(entry: Any = None) -> Configs:
    """The zoo configs of the model (random weights, nothing downloaded)."""
    opts = _options(entry)
    backbone = {
        "_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "model_name": opts["model_name"],
        "pretrained": False, "weights_path": None, "num_trainable_blocks": 0,
        "train_image_size": None, "eval_image_size": None, "return_cls_token": False, "apply_final_norm": False,
        "facet_layer": opts["facet_layer"], "facet": opts["facet"], "timm_overrides": opts["timm_overrides"],
    }
    aggregator = {
        "_target_": f"{AGGREGATORS}.netvlad.NetVLAD", "num_clusters": opts["num_clusters"], "normalize_input": True,
        "vladv2": False, "assignment": "hard", "flatten_order": "cluster_major",
    }
    return backbone, aggregator


def build_anyloc(entry: Any = None) -> VPRModel:
    return build_model(*anyloc_configs(entry))


def read_vocabulary(path: str | Path) -> dict[str, torch.Tensor]:
    """An AnyLoc vocabulary file (``torch.save`` of the [clusters, dim] centre tensor; read tensors-only)
    -> ``{"c_centers": tensor}``."""
    obj = torch_load(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2:
        found = f"a {tuple(obj.shape)} tensor" if isinstance(obj, torch.Tensor) else f"a {type(obj).__name__}"
        raise ConfigError(f"{str(path)!r} holds {found}, not an AnyLoc vocabulary (one [32, 1536] tensor of cluster "
                          "centres, e.g. dinov2_vitg14_l31_value_c32_urban_c_centers.pt)")
    return {VOCABULARY_KEY: obj}


def convert_anyloc(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """The vocabulary (``c_centers``) and the DINOv2 file's keys (under ``dinov2.``) -> the state dict of
    :func:`build_anyloc`; the NetVLAD's ``initialised`` flag is set (the centres are the vocabulary)."""
    what = ("AnyLoc files (vocabulary c_centers [32, 1536] + DINOv2 ViT-G/14 state dict dinov2_vitg14_pretrain.pth, "
            "its keys shown under dinov2.)")
    state = map_keys(raw, ANYLOC_RULES, what)
    state["aggregator.initialised"] = torch.tensor(True)
    return check_against_model(state, build_anyloc, entry, what)


for _domain in DOMAINS:
    _vocabulary = f"dinov2_vitg14_l31_value_c32_{_domain}_c_centers.pt"
    register(PublishedModel(
        name=f"anyloc_{_domain}_dinov2g_49152", method="AnyLoc", paper="Keetha et al., IEEE RA-L 2023",
        backbone="DINOv2 ViT-G/14", descriptor_dim=49152, file_name=_vocabulary,
        url=f"https://github.com/AnyLoc/DINO/releases/download/v1/{_vocabulary}", container="torch",
        preprocessing=ANYLOC_EVAL, build=f"{_HERE}:build_anyloc", convert=f"{_HERE}:convert_anyloc",
        read=f"{_HERE}:read_vocabulary", cache_dir="checkpoints/anyloc_files", repo="AnyLoc/AnyLoc",
        protocols={"vpr-methods-evaluation": VME_DINO}, extra_files=(DINOV2_VITG14,),
        options={"domain": _domain},
        note=(f"the {_domain} vocabulary (32 VLAD centres); also needs Meta's DINOv2 ViT-G/14 weights "
              "dinov2_vitg14_pretrain.pth (4.5 GB); evaluation only"),
    ))
