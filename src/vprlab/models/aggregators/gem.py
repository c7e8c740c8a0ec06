"""GeM: generalised-mean pooling with a learnable exponent (Radenović et al., TPAMI 2018), optionally
followed by a fully connected layer and a whitening layer (AP-GeM, Revaud et al., ICCV 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, C] (or [B, fc_dim]):
    (mean(clamp(x, eps)^p))^(1/p).

    ``p`` is learned (3 at the start, as in the paper); p = 1 is average pooling and p -> inf max
    pooling. Any spatial size. Descriptor: ``in_channels`` (2048 for a full ResNet50, 1024 cropped).

    ``fc_dim``: a Linear (``fc``, with bias) from the pooled C values to ``fc_dim``, then L2 (the
    pooled vector is not normalised before it), as dirtorch's AP-GeM network computes.
    ``whitening=True``: then a second Linear (``whiten``, square, with bias) and L2 again: a learned
    PCA whitening written as ``W (x - mean)`` (AP-GeM's Landmarks-clean whitening).
    """

    spec = AggregatorSpec(name="gem", paper="Radenović et al., TPAMI 2018", descriptor="channels (or `fc_dim`)")

    @staticmethod
    def output_dim(in_channels: int, fc_dim: int | None = None, **args) -> int:
        return fc_dim or in_channels

    def __init__(
        self, in_channels: int, p: float = 3.0, eps: float = 1e-6, fc_dim: int | None = None, whitening: bool = False
    ) -> None:
        super().__init__()
        check_positive_int("GeM", in_channels=in_channels)
        if fc_dim is not None:
            check_positive_int("GeM", fc_dim=fc_dim)
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.in_channels = in_channels
        self.fc_dim = fc_dim
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps
        self.fc = nn.Linear(in_channels, fc_dim) if fc_dim else None
        dim = fc_dim or in_channels
        self.whiten = nn.Linear(dim, dim) if whitening else None

    @property
    def descriptor_dim(self) -> int:
        return self.fc_dim or self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "GeM")
        check_channels(x, self.in_channels, "GeM")
        pooled = gem_pool(x, self.p, self.eps)
        if self.fc is not None:
            pooled = F.linear(pooled, self.fc.weight.float(), self.fc.bias.float())
        x = l2_flatten(pooled)
        if self.whiten is not None:
            x = l2_flatten(F.linear(x, self.whiten.weight.float(), self.whiten.bias.float()))
        return x
