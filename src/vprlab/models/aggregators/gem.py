"""GeM: generalised-mean pooling with a learnable exponent (Radenović et al., TPAMI 2018)."""

from __future__ import annotations

import torch
from torch import nn

from vprlab.models.aggregators._common import (
    check_channels,
    check_positive_int,
    feature_map,
    gem_pool,
    l2_flatten,
)
from vprlab.models.spec import Aggregator, AggregatorSpec


class GeM(Aggregator):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, C]: (mean(clamp(x, eps)^p))^(1/p).

    ``p`` is learned (3 at the start, as in the paper); p = 1 is average pooling and p -> inf max
    pooling. Any spatial size. Descriptor: ``in_channels`` (2048 for a full ResNet50, 1024 cropped).
    """

    spec = AggregatorSpec(name="gem", paper="Radenović et al., TPAMI 2018", descriptor="channels")

    @staticmethod
    def output_dim(in_channels: int, **args) -> int:
        return in_channels

    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive_int("GeM", in_channels=in_channels)
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.in_channels = in_channels
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    @property
    def descriptor_dim(self) -> int:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "GeM")
        check_channels(x, self.in_channels, "GeM")
        return l2_flatten(gem_pool(x, self.p, self.eps))
