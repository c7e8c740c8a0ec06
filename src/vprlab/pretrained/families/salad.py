"""SALAD (Izquierdo and Civera, CVPR 2024): DINOv2 ViT-B/14 + SALAD, built from the zoo's
:class:`~vprlab.models.backbones.dinov2.DinoV2Backbone` (timm ViT-B/14, whose parameter names are
the DINOv2 hub model's; final norm on every token, class token returned, the release's
position-embedding interpolation) and ``SALAD`` aggregator (cluster_dim 128). Key map of
``dino_salad.ckpt``: ``backbone.model.X`` -> ``backbone.dino.X`` (the unused ``mask_token`` kept, as
the backbone holds it), ``aggregator.X`` unchanged.

Other releases of this network use the same functions, told apart by ``entry.options``:
CliqueMining (:mod:`.cliquemining`, the same model and keys in a Lightning checkpoint) and
Indoor-VPR's SALAD (:mod:`.indoor_vpr`: every key behind ``release_prefix="model."``, and
``round_to_patch_multiple`` because its forward resizes any input to multiples of 14)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    FAMILIES_MODULE,
    VME_DINO,
    Configs,
    add_prefix,
    check_against_model,
    dinov2_cfg,
    dinov2_hub_order,
    export_what,
    prefixed,
    release_prefix,
    salad_cfg,
)
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.salad"
SALAD_RULES: Rules = ((r"backbone\.model\.(.+)", r"backbone.dino.\1"), (r"aggregator\.(.+)", r"aggregator.\1"))


# SALAD's own evaluation (eval.py --image_size 322 322): PIL bilinear resize, ToTensor, ImageNet norm.
SALAD_EVAL = EvalPreprocessing((322, 322), "bilinear", stage="pil")


def _options(entry: Any) -> Mapping[str, Any]:
    return getattr(entry, "options", None) or {}


def configs_salad(entry: Any = None) -> Configs:
    """SALAD's release: DINOv2 ViT-B/14 (evaluated at 322x322) + SALAD(64 x 128 + 256 = 8448).
    ``options["round_to_patch_multiple"]`` (Indoor-VPR): any input size, rounded to multiples of 14
    inside the forward pass (bilinear, antialiased), as that release's forward does."""
    backbone = dinov2_cfg([322, 322], megaloc=False)
    if _options(entry).get("round_to_patch_multiple"):
        backbone.update(eval_image_size=None, round_to_patch_multiple=True)
    return backbone, salad_cfg(128, None)


def build_salad(entry: Any = None) -> VPRModel:
    return build_model(*configs_salad(entry))


def _what(entry: Any) -> str:
    prefix = release_prefix(entry)
    method, file_name = getattr(entry, "method", "SALAD"), getattr(entry, "file_name", "dino_salad.ckpt")
    return f"{method} release ({file_name} layout: {prefix}backbone.model.*, {prefix}aggregator.*)"


def convert_salad(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """``dino_salad.ckpt`` (188 keys; behind ``options["release_prefix"]`` where the release has one)
    -> the state dict of :func:`build_salad`."""
    state = map_keys(raw, prefixed(SALAD_RULES, release_prefix(entry)), _what(entry))
    return check_against_model(state, build_salad, entry, _what(entry))


def export_salad(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> ``dino_salad.ckpt``'s (the inverse of :func:`convert_salad`), in the release's order
    (``mask_token`` right after ``pos_embed``, as the DINOv2 hub model holds it)."""
    out = map_keys(state, ((r"backbone\.dino\.(.+)", r"backbone.model.\1"), (r"aggregator\.(.+)", r"aggregator.\1")), export_what(entry))
    return add_prefix(dinov2_hub_order(out, "backbone.model."), release_prefix(entry))


register(PublishedModel(
    name="salad_dinov2_8448", method="SALAD", paper="Izquierdo and Civera, CVPR 2024", backbone="DINOv2 ViT-B/14",
    descriptor_dim=8448, file_name="dino_salad.ckpt",
    url="https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt", container="torch",
    preprocessing=SALAD_EVAL,
    build=f"{_HERE}:build_salad", convert=f"{_HERE}:convert_salad",
    configs=f"{_HERE}:configs_salad", export=f"{_HERE}:export_salad",
    repo="serizba/salad", protocols={"vpr-methods-evaluation": VME_DINO},
))
