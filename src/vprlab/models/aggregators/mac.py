"""MAC: maximum activations of convolutions, global max pooling of the feature map
(Tolias et al., "Particular object retrieval with integral max-pooling of CNN activations", ICLR 2016)."""

from __future__ import annotations

import torch
from torch import nn

from vprlab.models.aggregators._common import check_channels, check_positive_int, feature_map, l2_flatten


class MAC(nn.Module):
    """Feature map [B, C, H, W] -> L2-normalised spatial maximum [B, C]. No parameters; any spatial size."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        check_positive_int("MAC", in_channels=in_channels)
        self.in_channels = in_channels

    @property
    def descriptor_dim(self) -> int:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "MAC")
        check_channels(x, self.in_channels, "MAC")
        return l2_flatten(x.float().amax(dim=(-2, -1)))
