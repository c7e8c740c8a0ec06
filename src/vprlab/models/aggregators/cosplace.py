"""CosPlace aggregation (Berton et al., "Rethinking Visual Geo-localization for Large-Scale
Applications", CVPR 2022; github.com/gmberton/CosPlace): L2-normalise each local feature, GeM-pool,
a fully connected layer, L2-normalise."""

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


class CosPlace(Aggregator):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, out_dim].

    Parameters: GeM's p (learnable, starts at 3) and ``fc`` (C x out_dim + out_dim). Any spatial size.
    ``out_dim`` 512 is CosPlace's default (``fc_output_dim``); its released ResNet50 models go up to 2048.
    """

    spec = AggregatorSpec(name="cosplace", paper="Berton et al., CVPR 2022", descriptor="`out_dim`", small={"out_dim": 8})

    @staticmethod
    def output_dim(in_channels: int, out_dim: int, **args) -> int:
        return out_dim

    def __init__(self, in_channels: int, out_dim: int = 512, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive_int("CosPlace", in_channels=in_channels, out_dim=out_dim)
        if p <= 0:
            raise ValueError(f"CosPlace p must be positive, got {p}")
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps
        self.fc = nn.Linear(in_channels, out_dim)

    @property
    def descriptor_dim(self) -> int:
        return self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "CosPlace")
        check_channels(x, self.in_channels, "CosPlace")
        x = F.normalize(x.float(), p=2.0, dim=1)  # each local feature, before pooling
        return l2_flatten(self.fc(gem_pool(x, self.p, self.eps)))
