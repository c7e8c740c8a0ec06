"""CricaVPR (Lu et al., "CricaVPR: Cross-image Correlation-aware Representation Learning for Visual
Place Recognition", CVPR 2024; github.com/Lu-Feng/CricaVPR).

The class token and GeM-pooled regions of the L2-normalised patch features (the map split into 2x2
and 3x3 grids of regions: 1 + 4 + 9 = 14 tokens of C channels), then a cross-image encoder that
attends, for each of the 14 token positions, across the images of the batch; the 14 encoded tokens
are concatenated and L2-normalised. A descriptor therefore depends on the other images of the batch
(``mixes_batch``). The backbone is DINOv2 with CricaVPR's adapters (``backbone.conv_adapters=true``),
final norm applied, class token returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models.aggregators._common import (
    CrossImageAggregator,
    check_channels,
    check_positive_int,
    encode_across_batch,
    feature_map,
    gem_pool,
    l2_flatten,
    region_bounds,
)
from vprlab.models.spec import AggregatorSpec


class CricaVPR(CrossImageAggregator):
    """(feature map [B, C, H, W], class token [B, C]) -> L2-normalised descriptor
    [B, (1 + sum(g * g for g in grids)) * C]: 14 x 768 = 10752 for DINOv2 ViT-B/14.

    Regions: for each g in ``grids``, the rows and the columns are split at ``round(i * side / g)``
    (:func:`~vprlab.models.aggregators._common.region_bounds`; at CricaVPR's 16x16 map exactly its
    slices), taken row by row; each region is GeM-pooled (one learned ``p``, 3 at the start, ``eps``
    1e-6) after L2-normalising every patch feature. Tokens: [class token, 2x2 regions, 3x3 regions].
    ``cross_image_layers=0`` leaves the encoder out (each image then stands alone).
    """

    spec = AggregatorSpec(
        name="cricavpr", paper="Lu et al., CVPR 2024",
        descriptor="(1 + 2x2 + 3x3 regions) x channels", needs_cls_token=True, hint="pretrained=cricavpr_dinov2_10752",
        small={"cross_image_heads": 2, "cross_image_ff_dim": 8},
    )

    @staticmethod
    def output_dim(in_channels: int, grids: Sequence[int] = (2, 3), **args: Any) -> int:
        return (1 + sum(int(g) ** 2 for g in grids)) * in_channels

    def __init__(
        self,
        in_channels: int,
        grids: Sequence[int] = (2, 3),
        p: float = 3.0,
        eps: float = 1e-6,
        cross_image_heads: int = 16,
        cross_image_ff_dim: int = 2048,
        cross_image_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive_int("CricaVPR", in_channels=in_channels)
        check_positive_int("CricaVPR", **{f"grids[{i}]": g for i, g in enumerate(grids)})
        if not grids:
            raise ValueError("CricaVPR grids must name at least one grid, e.g. [2, 3]")
        if p <= 0:
            raise ValueError(f"CricaVPR p must be positive, got {p}")
        self.in_channels = in_channels
        self.grids = tuple(int(g) for g in grids)
        self.eps = eps
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.set_encoder(cross_image_layers > 0, in_channels, cross_image_heads, cross_image_ff_dim, cross_image_layers, dropout)

    @property
    def descriptor_dim(self) -> int:
        return (1 + sum(g * g for g in self.grids)) * self.in_channels

    def tokens(self, features: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """[B, 1 + regions, C]: the class token, then each grid's GeM regions row by row."""
        normed = F.normalize(features.float(), p=2.0, dim=1)
        out = [token.float()]
        height, width = normed.shape[-2:]
        for grid in self.grids:
            for top, bottom in region_bounds(height, grid):
                for left, right in region_bounds(width, grid):
                    out.append(gem_pool(normed[:, :, top:bottom, left:right], self.p, self.eps))
        return torch.stack(out, dim=1)

    def forward(self, x: Any) -> torch.Tensor:
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(
                "CricaVPR needs the backbone's class token as well as its feature map; set "
                "backbone.return_cls_token=true (DINOv2 or timm ViT backbones)"
            )
        features, token = x
        features = feature_map(features, "CricaVPR")
        check_channels(features, self.in_channels, "CricaVPR")
        if token.shape != (features.shape[0], self.in_channels):
            raise ValueError(f"CricaVPR expects a class token of shape [B, {self.in_channels}], got {tuple(token.shape)}")
        tokens = self.tokens(features, token)
        if self.encoder is not None:
            tokens = encode_across_batch(self.encoder, tokens)
        return l2_flatten(tokens)
