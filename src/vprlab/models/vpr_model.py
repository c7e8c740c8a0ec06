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
        return self._descriptor(self.backbone(x))

    def forward_frozen(self, x: torch.Tensor) -> Any | None:
        """The output of the backbone's frozen part (computed without autograd), for backbones that can split
        their forward there (``forward_frozen`` / ``forward_from_frozen``); None otherwise. Gradient caching
        keeps it from the first pass so the second recomputes only the trained part."""
        split = getattr(self.backbone, "forward_frozen", None)
        return split(x) if split is not None else None

    def forward_from_frozen(self, frozen: Any) -> torch.Tensor:
        """The descriptor from :meth:`forward_frozen`'s output: ``forward(x) == forward_from_frozen(forward_frozen(x))``."""
        return self._descriptor(self.backbone.forward_from_frozen(frozen))

    def _descriptor(self, features: Any) -> torch.Tensor:
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
