"""AVG: global average pooling of the feature map, the simplest baseline of the VPR literature
(e.g. the "AVG" rows of the GSV-Cities and MixVPR comparisons)."""

from __future__ import annotations

import torch

from vprlab.models.aggregators._common import GlobalPool
from vprlab.models.spec import AggregatorSpec


class AVG(GlobalPool):
    """Feature map [B, C, H, W] -> L2-normalised spatial mean [B, C]. No parameters; any spatial size."""

    spec = AggregatorSpec(name="avg", paper="global average pooling (baseline)", descriptor="channels")

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))
