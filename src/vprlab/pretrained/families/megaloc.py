"""MegaLoc (Berton and Masone, arXiv 2025): SALAD's DINOv2 ViT-B/14 without mask token, rounding
input sizes to multiples of 14 inside the forward pass, + SALAD(cluster_dim 256, out_dim 8448).
Key map of ``model.safetensors``: ``backbone.X`` -> ``backbone.dino.X``, ``aggregator.agg.X`` ->
``aggregator.X``, ``aggregator.linear.X`` -> ``aggregator.projection.X``; the earlier
``megaloc.torch`` has ``backbone.model.X`` instead, and a ``mask_token`` that is dropped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    FAMILIES_MODULE,
    VME_DINO,
    Configs,
    check_against_model,
    dinov2_cfg,
    export_what,
    salad_cfg,
)
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.megaloc"
_AGGREGATOR_RULES: Rules = ((r"aggregator\.agg\.(.+)", r"aggregator.\1"), (r"aggregator\.linear\.(.+)", r"aggregator.projection.\1"))
MEGALOC_RULES: Rules = ((r"backbone\.(?!model\.)(.+)", r"backbone.dino.\1"), *_AGGREGATOR_RULES)
MEGALOC_LEGACY_RULES: Rules = ((r"backbone\.model\.(.+)", r"backbone.dino.\1"), *_AGGREGATOR_RULES)
MEGALOC_LEGACY_DROP = (r"backbone\.model\.mask_token",)  # DINOv2's masked-image token, unused by MegaLoc


def configs_megaloc(entry: Any = None) -> Configs:
    """MegaLoc's release: DINOv2 ViT-B/14 without mask token, any input size (rounded to multiples of
    14 inside), + SALAD(64 x 256 + 256 = 16640) projected to 8448 by a Linear."""
    return dinov2_cfg(None, megaloc=True), salad_cfg(256, 8448)


def build_megaloc(entry: Any = None) -> VPRModel:
    return build_model(*configs_megaloc(entry))


def megaloc_layout(raw: Mapping[str, torch.Tensor]) -> str:
    """``"safetensors"`` (``backbone.*``, the file since January 2026) or ``"legacy"``
    (``backbone.model.*`` with ``mask_token``, ``megaloc.torch``)."""
    if any(k.startswith("backbone.model.") for k in raw):
        return "legacy"
    return "safetensors"


def convert_megaloc(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """MegaLoc's ``model.safetensors`` (189 keys) or the earlier ``megaloc.torch`` (190 keys, the
    layout is detected) -> the state dict of :func:`build_megaloc`."""
    if megaloc_layout(raw) == "legacy":
        what = "MegaLoc release (megaloc.torch layout: backbone.model.*, aggregator.agg.*, aggregator.linear.*)"
        state = map_keys(raw, MEGALOC_LEGACY_RULES, what, drop=MEGALOC_LEGACY_DROP)
    else:
        what = "MegaLoc release (model.safetensors layout: backbone.*, aggregator.agg.*, aggregator.linear.*)"
        state = map_keys(raw, MEGALOC_RULES, what)
    return check_against_model(state, build_megaloc, entry, what)


def export_megaloc(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> ``model.safetensors``'s (``backbone.*``, ``aggregator.agg.*``, ``aggregator.linear.*``;
    the inverse of :func:`convert_megaloc`), sorted by name as safetensors stores them."""
    out = map_keys(state, (
        (r"backbone\.dino\.(.+)", r"backbone.\1"),
        (r"aggregator\.projection\.(.+)", r"aggregator.linear.\1"),
        (r"aggregator\.(.+)", r"aggregator.agg.\1"),
    ), export_what(entry))
    return dict(sorted(out.items()))


_COMMON: dict[str, Any] = dict(
    method="MegaLoc", paper="Berton and Masone, arXiv 2025", backbone="DINOv2 ViT-B/14", descriptor_dim=8448,
    preprocessing=VME_DINO, build=f"{_HERE}:build_megaloc", convert=f"{_HERE}:convert_megaloc",
    configs=f"{_HERE}:configs_megaloc", export=f"{_HERE}:export_megaloc",
    repo="gmberton/MegaLoc", protocols={"vpr-methods-evaluation": VME_DINO},
)
register(
    PublishedModel(
        name="megaloc_dinov2_8448", file_name="model.safetensors",
        url="https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors", container="safetensors",
        cache_dir="megaloc", **_COMMON,
    ),
    PublishedModel(
        name="megaloc_dinov2_8448_legacy", file_name="megaloc.torch",
        url="https://github.com/gmberton/MegaLoc/releases/download/v1.0/megaloc.torch", container="torch",
        note="the file the hub entry used from February 2025 to January 2026 (same model as megaloc_dinov2_8448)",
        **_COMMON,
    ),
)
