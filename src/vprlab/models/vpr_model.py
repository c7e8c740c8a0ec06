"""The VPR model: backbone -> aggregator -> L2-normalised global descriptor."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class VPRModel(nn.Module):
    """``backbone`` and ``aggregator`` are the only children, so state-dict keys are
    ``backbone.*`` / ``aggregator.*`` as in the released BoQ checkpoints."""

    def __init__(self, backbone: nn.Module, aggregator: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    @property
    def descriptor_dim(self) -> int:
        return self.aggregator.descriptor_dim

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Descriptor [B, D] and the aggregator's attention maps (None if it has none)."""
        out = self.aggregator(self.backbone(x))
        if isinstance(out, torch.Tensor):
            return out, None
        return out[0], (out[1] if len(out) > 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        if getattr(self.aggregator, "returns_attention", False):
            # Only the descriptor is wanted: let the aggregator skip its attention maps (fused kernels).
            return self.aggregator(features, return_attention=False)[0]
        out = self.aggregator(features)
        return out if isinstance(out, torch.Tensor) else out[0]


def build_model(backbone_cfg: Any, aggregator_cfg: Any) -> VPRModel:
    """Build a VPRModel from two ``_target_`` configs; the aggregator gets ``in_channels`` from the backbone."""
    from vprlab.utils.instantiate import (
        build,  # Hydra only here: torch.hub users get the model without it
    )

    backbone = build(backbone_cfg)
    aggregator = build(aggregator_cfg, in_channels=backbone.out_channels)
    return VPRModel(backbone, aggregator)
