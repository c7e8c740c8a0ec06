"""GeM: generalised-mean pooling with a learnable exponent (Radenović et al., TPAMI 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, C]: (mean(clamp(x, eps)^p))^(1/p)."""

    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"GeM in_channels must be a positive integer, got {in_channels!r}")
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.in_channels = in_channels
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    @property
    def descriptor_dim(self) -> int:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)
        return F.normalize(pooled, p=2, dim=-1)
