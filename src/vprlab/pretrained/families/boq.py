"""BoQ (Ali-bey et al., CVPR 2024): the released files use vprlab's own keys (no conversion)."""

from __future__ import annotations

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.registry import RELEASED_MODELS, PublishedModel


def build_boq(entry: PublishedModel) -> VPRModel:
    return RELEASED_MODELS[entry.options["released"]].architecture.build()
