"""SFRS (Ge et al., "Self-supervising Fine-grained Region Similarities for Large-scale Image
Localization", ECCV 2020; github.com/yxgeee/OpenIBL): VGG16 + NetVLAD(64) + a 4096-d projection, as
OpenIBL's ``hubconf.py`` builds it (``vgg16_netvlad``: ``models.create('vgg16')``, ``'netvlad'``,
``'embednetpca'``), built from the zoo's :class:`~vprlab.models.backbones.vgg.VGGBackbone` and
``NetVLAD`` aggregator.

What the original code computes (``ibl/models/vgg.py``, ``ibl/models/netvlad.py``): torchvision's
``vgg16().features`` without its last ReLU and max-pool (to conv5_3), on the 0-255 image minus the
mean pixel (OpenIBL normalises with mean (0.48502, 0.45796, 0.40760) and std 1/255, i.e. the
MatConvNet VGG input); NetVLAD with L2-normalised input, bias-free 1x1 assignment conv, softmax over
64 clusters, residuals to ``centroids`` (stored as they are), intra-normalisation, the 64 x 512
matrix flattened cluster by cluster, L2; then ``pca_layer`` (1x1 conv 32768 -> 4096 with bias) and L2.

File ``vgg16_netvlad.pth`` (OpenIBL release v0.1.0-beta): a bare state dict loaded strictly by the hub
entry. Key map: ``base_model.base.N.X`` -> ``backbone.net.N.X`` (torchvision's feature indices on
both sides), ``net_vlad.conv.weight`` / ``net_vlad.centroids`` -> ``aggregator.conv.weight`` /
``aggregator.centroids``, ``pca_layer.weight`` [4096, 32768, 1, 1] -> ``aggregator.pca.weight``
[4096, 32768], ``pca_layer.bias`` -> ``aggregator.pca.bias``; the mean pixel (``backbone.pixel_mean``,
a constant of OpenIBL's transform, not in the file) and ``aggregator.initialised`` are added."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    NATIVE,
    Configs,
    check_against_model,
    export_what,
    vgg16_cfg,
)
from vprlab.pretrained.keymaps import map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.sfrs"
# OpenIBL's Normalize(mean=..., std=[1/255] * 3) (ibl/utils/data/__init__.py, examples/extract.py): x * 255 - 255 * mean.
OPENIBL_MEAN = (0.48501960784313836, 0.4579568627450961, 0.4076039215686255)
PIXEL_MEAN = tuple(255.0 * m for m in OPENIBL_MEAN)  # 123.68, 116.779, 103.939
PCA_DIM = 4096


def configs_sfrs(entry: Any = None) -> Configs:
    """VGG16 to conv5_3 with the MatConvNet input (OpenIBL's mean pixel; conv5 trains, 480x640 as
    OpenIBL trains) + NetVLAD (64 clusters, PyTorch flatten order) projected to 4096 by a Linear."""
    backbone = vgg16_cfg(list(PIXEL_MEAN), [480, 640])
    aggregator = {
        "_target_": f"{AGGREGATORS}.netvlad.NetVLAD", "num_clusters": 64, "normalize_input": True, "vladv2": False,
        "pca_dim": PCA_DIM, "flatten_order": "cluster_major",
    }
    return backbone, aggregator


def build_sfrs(entry: Any = None) -> VPRModel:
    return build_model(*configs_sfrs(entry))


def convert_sfrs(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """``vgg16_netvlad.pth`` (30 keys) -> the state dict of :func:`build_sfrs`."""
    what = "SFRS release (OpenIBL vgg16_netvlad.pth layout: base_model.base.*, net_vlad.*, pca_layer.*)"
    state = map_keys(raw, (
        (r"base_model\.base\.(\d+)\.(weight|bias)", r"backbone.net.\1.\2"),
        (r"net_vlad\.(conv\.weight|centroids)", r"aggregator.\1"),
        (r"pca_layer\.(weight|bias)", r"aggregator.pca.\1"),
    ), what)
    weight = state.get("aggregator.pca.weight")
    if weight is not None and weight.dim() == 4 and weight.shape[2:] == (1, 1):
        state["aggregator.pca.weight"] = weight.reshape(weight.shape[0], weight.shape[1])
    state["backbone.pixel_mean"] = torch.tensor(PIXEL_MEAN, dtype=torch.float32)
    state["aggregator.initialised"] = torch.tensor(True)
    return check_against_model(state, build_sfrs, entry, what)


def export_sfrs(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> ``vgg16_netvlad.pth``'s (the inverse of :func:`convert_sfrs`; the mean pixel and the
    ``initialised`` flag are not in the release), the projection back as a 1x1 conv."""
    state = {k: v for k, v in state.items() if k not in ("backbone.pixel_mean", "aggregator.initialised")}
    out = map_keys(state, (
        (r"backbone\.net\.(\d+)\.(weight|bias)", r"base_model.base.\1.\2"),
        (r"aggregator\.(conv\.weight|centroids)", r"net_vlad.\1"),
        (r"aggregator\.pca\.(weight|bias)", r"pca_layer.\1"),
    ), export_what(entry))
    if "pca_layer.weight" in out and out["pca_layer.weight"].dim() == 2:
        out["pca_layer.weight"] = out["pca_layer.weight"][:, :, None, None]
    # The release's order: EmbedNetPCA's base_model, net_vlad (its own parameter centroids before its
    # submodule conv, as state_dict() lists them), pca_layer.
    rank = {"net_vlad.centroids": 1, "net_vlad.conv.weight": 2, "pca_layer.weight": 3, "pca_layer.bias": 4}
    return dict(sorted(out.items(), key=lambda item: rank.get(item[0], 0)))


register(PublishedModel(
    name="sfrs_vgg16_4096", method="SFRS", paper="Ge et al., ECCV 2020", backbone="VGG16", descriptor_dim=PCA_DIM,
    file_name="vgg16_netvlad.pth",
    url="https://github.com/yxgeee/OpenIBL/releases/download/v0.1.0-beta/vgg16_netvlad.pth", container="torch",
    # OpenIBL's get_transformer_test(480, 640): PIL Resize((480, 640)) (bilinear), ToTensor, its
    # normalisation (the backbone's mean-pixel input computes it from the ImageNet-normalised tensor).
    preprocessing=EvalPreprocessing((480, 640), "bilinear", stage="pil"),
    build=f"{_HERE}:build_sfrs", convert=f"{_HERE}:convert_sfrs", configs=f"{_HERE}:configs_sfrs",
    export=f"{_HERE}:export_sfrs", repo="yxgeee/OpenIBL",
    # VPR-methods-evaluation: native size, ImageNet-normalised; vpr_models/sfrs.py undoes that and
    # applies OpenIBL's normalisation (what the backbone's mean-pixel input does).
    protocols={"vpr-methods-evaluation": NATIVE},
    note="OpenIBL's Tokyo 24/7 queries are resized to a shorter side of 640 instead (get_transformer_test(tokyo=True))",
))
