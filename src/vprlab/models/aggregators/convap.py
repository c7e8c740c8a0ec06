"""Conv-AP (Ali-bey et al., "GSV-Cities: Toward Appropriate Supervised Visual Place Recognition",
Neurocomputing 2022; github.com/amaralibey/gsv-cities): a 1x1 convolution reduces the channels, an
adaptive average pooling keeps an s1 x s2 grid, and the flattened grid is L2-normalised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models.aggregators._common import (
    check_channels,
    check_positive_int,
    feature_map,
    l2_flatten,
)
from vprlab.models.spec import Aggregator, AggregatorSpec


class ConvAP(Aggregator):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, out_channels * s1 * s2].

    Defaults are those of the paper's code (out_channels 512, 2x2 -> 2048-d); its best ResNet50 model
    uses out_channels 1024 (4096-d). Needs a feature map of at least s1 x s2 (adaptive pooling of a
    smaller map would repeat cells rather than pool them).
    """

    spec = AggregatorSpec(
        name="convap", paper="Ali-bey et al., Neurocomputing 2022 (GSV-Cities)",
        descriptor="`out_channels` x `s1` x `s2`", min_map_size=("s1", "s2"), small={"out_channels": 8},
    )

    @staticmethod
    def output_dim(in_channels: int, out_channels: int, s1: int, s2: int, **args) -> int:
        return out_channels * s1 * s2

    def __init__(self, in_channels: int, out_channels: int = 512, s1: int = 2, s2: int = 2) -> None:
        super().__init__()
        check_positive_int("ConvAP", in_channels=in_channels, out_channels=out_channels, s1=s1, s2=s2)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.s1, self.s2 = s1, s2
        self.channel_pool = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)

    @property
    def descriptor_dim(self) -> int:
        return self.out_channels * self.s1 * self.s2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "ConvAP")
        check_channels(x, self.in_channels, "ConvAP")
        height, width = x.shape[-2:]
        if height < self.s1 or width < self.s2:
            raise ValueError(
                f"ConvAP pools to {self.s1}x{self.s2} cells (aggregator.s1, s2) but the feature map is only "
                f"{height}x{width}; use a larger input image or smaller s1/s2"
            )
        return l2_flatten(F.adaptive_avg_pool2d(self.channel_pool(x), (self.s1, self.s2)))
