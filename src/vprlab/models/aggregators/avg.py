"""AVG: global average pooling of the feature map, the simplest baseline of the VPR literature
(e.g. the "AVG" rows of the GSV-Cities and MixVPR comparisons)."""

from __future__ import annotations

import torch
from torch import nn

from vprlab.models.aggregators._common import check_channels, check_positive_int, feature_map, l2_flatten


class AVG(nn.Module):
    """Feature map [B, C, H, W] -> L2-normalised spatial mean [B, C]. No parameters; any spatial size."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        check_positive_int("AVG", in_channels=in_channels)
        self.in_channels = in_channels

    @property
    def descriptor_dim(self) -> int:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "AVG")
        check_channels(x, self.in_channels, "AVG")
        return l2_flatten(x.float().mean(dim=(-2, -1)))
