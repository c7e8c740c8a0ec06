"""QAA (Xiao, Zhou and Loianno, ICRA 2026): DINOv2 ViT-B/14 (every block, final norm on every token,
patch tokens only) + the zoo's ``qaa`` aggregator, one Hugging Face repository per descriptor size
(``xjh19972/QAA-<dim>``: ``config.json`` + ``model.safetensors``, written by ``PyTorchModelHubMixin``),
as VPR-methods-evaluation's ``vpr_models/qaa.py`` builds them.

Key map of ``model.safetensors``: ``backbone.model.X`` -> ``backbone.dino.X`` (the DINOv2 hub model's
names; the unused ``mask_token`` kept), ``aggregator.queries_feature.{queries,self_attn.*,norm_q.*}``
-> ``aggregator.feature_queries.{queries,self_attn.*,norm.*}`` (the same for ``queries_score`` ->
``score_queries``), ``aggregator.score.{cross_attn,norm_out,conv,norm2_out}.*`` ->
``aggregator.score.{cross_attn,norm,proj,out_norm}.*``, ``aggregator.dust_bin`` unchanged.

The sizes below 8192 are built as ``dim / 128`` clusters of 128 (the 8192-d model's cluster width);
the configs of those repositories could not be read here, so a file with another split is refused by
the strict load, which names the misshapen keys. The settings the shapes cannot show (attention heads,
``out_norm``, ``score_norm``) are VPR-methods-evaluation's defaults; a ``config.json`` next to the
weights is checked against them (:func:`check_qaa_config`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
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
from vprlab.pretrained.keymaps import map_keys, prefix_rules
from vprlab.pretrained.registry import PublishedModel, register
from vprlab.utils.errors import ConfigError, DataError

_HERE = f"{FAMILIES_MODULE}.qaa"
DIMS = (1024, 2048, 4096, 8192)  # VPR-methods-evaluation's MODEL_REPOS
CLUSTER_DIM = 128

# (release prefix, our prefix), longer prefixes first; the aggregator's other keys (dust_bin) keep their names.
QAA_PREFIXES = (
    ("backbone.model", "backbone.dino"),
    ("aggregator.queries_feature.norm_q", "aggregator.feature_queries.norm"),
    ("aggregator.queries_feature", "aggregator.feature_queries"),
    ("aggregator.queries_score.norm_q", "aggregator.score_queries.norm"),
    ("aggregator.queries_score", "aggregator.score_queries"),
    ("aggregator.score.norm_out", "aggregator.score.norm"),
    ("aggregator.score.conv", "aggregator.score.proj"),
    ("aggregator.score.norm2_out", "aggregator.score.out_norm"),
    ("aggregator", "aggregator"),
)


# What VPR-methods-evaluation's QAA builds from config.json's model_config_dict, with its defaults for the
# keys a config leaves out ("backbone_config.norm_layer" defaults to False there): the values vprlab's build
# equals, checked by check_qaa_config when config.json lies next to the weights.
_VME_DEFAULTS: dict[str, Any] = {
    "backbone_arch": None, "backbone_config.norm_layer": False,
    "agg_config.num_channels": 768, "agg_config.num_clusters": 64, "agg_config.cluster_dim": 128,
    "agg_config.token_dim": 0, "agg_config.num_queries": 256, "agg_config.feature_nheads": 16,
    "agg_config.score_nheads": 16, "agg_config.self_attn_out_norm": True, "agg_config.out_norm": False,
    "agg_config.score_norm": "none",
}


def _built(entry: Any) -> dict[str, Any]:
    """The settings of :func:`build_qaa` in config.json's terms."""
    return {
        "backbone_arch": "dinov2_vitb14", "backbone_config.norm_layer": True,
        **{k: v for k, v in _VME_DEFAULTS.items() if k.startswith("agg_config.")},
        "agg_config.num_clusters": entry.descriptor_dim // CLUSTER_DIM,
    }


def check_qaa_config(path: Path, entry: Any) -> None:
    """If the Hugging Face ``config.json`` lies next to the weights (a copy of the repository, or the hub
    cache), refuse a release whose architecture, as VPR-methods-evaluation reads it from that file,
    differs from what vprlab builds, naming each setting: the head counts, ``out_norm`` and
    ``score_norm`` do not show in the weights' shapes. Without the file (a download by URL) nothing is checked."""
    config_path = Path(path).with_name("config.json")
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
        settings = config.get("model_config_dict", config)
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"{config_path} (next to the QAA weights) is not a readable JSON config: {err}") from err
    differences = []
    for key, ours in _built(entry).items():
        group, _, name = key.rpartition(".")
        scope = settings.get(group, {}) if group else settings
        value = scope.get(name, _VME_DEFAULTS[key]) if isinstance(scope, dict) else _VME_DEFAULTS[key]
        if value != ours:
            differences.append(f"{key}={value!r} (vprlab builds {ours!r})")
    if differences:
        raise ConfigError(
            f"{config_path}: the released QAA-{entry.descriptor_dim} configuration differs from the architecture vprlab "
            f"builds for {entry.name} (VPR-methods-evaluation's vpr_models/qaa.py): {'; '.join(differences)}. "
            "Its descriptors would not be the original's, so it is not loaded; please report this file"
        )


def qaa_cfg(num_clusters: int) -> dict[str, Any]:
    """The ``qaa`` aggregator as VPR-methods-evaluation's ``QAAAggregator`` runs the release."""
    return {
        "_target_": f"{AGGREGATORS}.qaa.QAA", "num_clusters": num_clusters, "cluster_dim": CLUSTER_DIM,
        "num_queries": 256, "feature_heads": 16, "score_heads": 16, "query_self_attention": True,
        "out_norm": False, "sinkhorn_iters": 0,
    }


def configs_qaa(entry: Any) -> Configs:
    """DINOv2 ViT-B/14 (final norm, patch tokens; evaluated at 322x322, trained at 224x224 with the
    last 2 blocks trainable, as QAA's configs do) + QAA(dim / 128 clusters of 128)."""
    backbone = {**dinov2_cfg([322, 322], megaloc=False), "num_trainable_blocks": 2, "return_cls_token": False}
    return backbone, qaa_cfg(entry.descriptor_dim // CLUSTER_DIM)


def build_qaa(entry: Any) -> VPRModel:
    return build_model(*configs_qaa(entry))


def convert_qaa(raw: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """QAA's ``model.safetensors`` -> the state dict of :func:`build_qaa`."""
    what = f"QAA-{entry.descriptor_dim} release (model.safetensors layout: backbone.model.*, aggregator.queries_*, aggregator.score.*)"
    return check_against_model(map_keys(raw, prefix_rules(QAA_PREFIXES), what), build_qaa, entry, what)


def export_qaa(state: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """Our keys -> the release's (the inverse of :func:`convert_qaa`), sorted as safetensors stores them."""
    return dict(sorted(map_keys(state, prefix_rules(QAA_PREFIXES, inverse=True), export_what(entry)).items()))


# The evaluation code of arplaboratory/QAA (dataloaders/GenericDataloader.py test_transform, test_image_size
# [322, 322] in every config; GenericDataset opens PIL images): T.Resize([322, 322], bilinear) on the PIL
# image, ToTensor, ImageNet Normalize. (QAA_demo.py resizes the uint8 image tensor instead, antialiased.)
QAA_PREPROCESSING = EvalPreprocessing((322, 322), "bilinear", stage="pil")

register(*(
    PublishedModel(
        name=f"qaa_dinov2_{dim}", method="QAA", paper="Xiao, Zhou and Loianno, ICRA 2026", backbone="DINOv2 ViT-B/14",
        descriptor_dim=dim, file_name="model.safetensors",
        url=f"https://huggingface.co/xjh19972/QAA-{dim}/resolve/main/model.safetensors", container="safetensors",
        preprocessing=QAA_PREPROCESSING, build=f"{_HERE}:build_qaa", convert=f"{_HERE}:convert_qaa",
        configs=f"{_HERE}:configs_qaa", export=f"{_HERE}:export_qaa", check_sidecar=f"{_HERE}:check_qaa_config",
        cache_dir=f"qaa-{dim}",
        repo="arplaboratory/QAA", protocols={"vpr-methods-evaluation": VME_322},
        note=(f"Hugging Face xjh19972/QAA-{dim}; heads, out_norm and score_norm (not visible in the weights) are checked "
              "against its config.json only when that file lies next to the weights"),
    )
    for dim in DIMS
))
