"""MixVPR (Ali-bey et al., "MixVPR: Feature Mixing for Visual Place Recognition", WACV 2023;
github.com/amaralibey/MixVPR): each channel's flattened H*W map goes through a stack of MLP feature
mixers (holistic, over the whole spatial extent), then two linear projections reduce the channels
(``out_channels``) and the spatial axis (``out_rows``).

Module names (``mix.{i}.mix.{0,1,3}``, ``channel_proj``, ``row_proj``) follow the released MixVPR
checkpoints, so their aggregator weights load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from vprlab.models.aggregators._common import (
    check_channels,
    check_positive_int,
    feature_map,
    l2_flatten,
)
from vprlab.models.spec import Aggregator, AggregatorSpec


class FeatureMixer(nn.Module):
    """x + MLP(LayerNorm(x)) over the last axis (the H*W positions of one channel)."""

    def __init__(self, num_positions: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(num_positions * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"MixVPR mlp_ratio={mlp_ratio} leaves no hidden units for {num_positions} positions")
        self.mix = nn.Sequential(
            nn.LayerNorm(num_positions),
            nn.Linear(num_positions, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_positions),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(Aggregator):
    """Feature map [B, C, in_h, in_w] -> L2-normalised descriptor [B, out_channels * out_rows].

    The mixers are MLPs over the in_h * in_w positions, so the feature-map size is part of the
    architecture: ``in_h`` / ``in_w`` must equal the training image size divided by the backbone
    stride (ResNet50 cropped at layer3, stride 16: 320x320 -> 20x20; DINOv2, patch 14: 322 -> 23x23),
    and the model must be evaluated at that same size (MixVPR evaluates at 320x320). A map of another
    size is refused with the sizes involved.

    Defaults are the paper's 4096-d ResNet50 setting: 1024 channels at 20x20, out_channels 1024,
    out_rows 4, mix_depth 4, mlp_ratio 1. ``row_proj_bias=True`` gives ``row_proj`` a bias, as the
    released MixVPR checkpoints have (``aggregator.row_proj.bias``); the zoo default keeps it off.
    """

    spec = AggregatorSpec(
        name="mixvpr", paper="Ali-bey et al., WACV 2023", descriptor="`out_channels` x `out_rows`",
        fixed_map_size=("in_h", "in_w"),
        small={"out_channels": 8, "out_rows": 2, "mix_depth": 1},
    )

    @staticmethod
    def output_dim(in_channels: int, out_channels: int, out_rows: int, **args) -> int:
        return out_channels * out_rows

    def __init__(
        self,
        in_channels: int,
        in_h: int = 20,
        in_w: int = 20,
        out_channels: int = 1024,
        out_rows: int = 4,
        mix_depth: int = 4,
        mlp_ratio: float = 1.0,
        row_proj_bias: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int(
            "MixVPR", in_channels=in_channels, in_h=in_h, in_w=in_w, out_channels=out_channels, out_rows=out_rows
        )
        if isinstance(mix_depth, bool) or not isinstance(mix_depth, int) or mix_depth < 0:
            raise ValueError(f"MixVPR mix_depth must be a non-negative integer, got {mix_depth!r}")
        if mlp_ratio <= 0:
            raise ValueError(f"MixVPR mlp_ratio must be positive, got {mlp_ratio}")
        self.in_channels = in_channels
        self.in_h, self.in_w = in_h, in_w
        self.out_channels = out_channels
        self.out_rows = out_rows
        self.mix_depth = mix_depth
        self.mlp_ratio = mlp_ratio
        num_positions = in_h * in_w
        self.mix = nn.Sequential(*(FeatureMixer(num_positions, mlp_ratio) for _ in range(mix_depth)))
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(num_positions, out_rows, bias=row_proj_bias)

    @property
    def descriptor_dim(self) -> int:
        return self.out_channels * self.out_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "MixVPR")
        check_channels(x, self.in_channels, "MixVPR")
        height, width = x.shape[-2:]
        if (height, width) != (self.in_h, self.in_w):
            raise ValueError(
                f"MixVPR was built for {self.in_h}x{self.in_w} feature maps (aggregator.in_h={self.in_h}, "
                f"in_w={self.in_w}) but got {height}x{width}. Feed images of the size it was built for "
                f"(feature map = image size / backbone stride, e.g. 320x320 with ResNet50 cropped at layer3), "
                f"also at evaluation (backbone.eval_image_size), or set aggregator.in_h={height} "
                f"aggregator.in_w={width} and train again"
            )
        x = self.mix(x.flatten(2))  # [B, C, H*W]: each channel's map mixed over all positions
        x = self.channel_proj(x.transpose(1, 2))  # [B, H*W, out_channels]
        x = self.row_proj(x.transpose(1, 2))  # [B, out_channels, out_rows]
        return l2_flatten(x)
