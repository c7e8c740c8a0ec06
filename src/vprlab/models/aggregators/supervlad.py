"""SuperVLAD (Lu et al., "SuperVLAD: Compact and Robust Image Descriptors for Visual Place
Recognition", NeurIPS 2024; github.com/Lu-Feng/SuperVLAD).

NetVLAD without centroids: the L2-normalised local features are soft-assigned (1x1 convolution
without bias, softmax over the clusters) to ``num_clusters`` clusters plus ``num_ghost_clusters``
"ghost" clusters that absorb uninformative features and are dropped; each kept cluster holds the
assignment-weighted *sum of the features themselves* (no residual to a centroid). Each cluster
vector is L2-normalised, the flat vector too. With ``cross_image=True`` (SuperVLAD-CrossImage) the
K cluster vectors of every image then go through the cross-image encoder, which attends across the
images of the batch, and the result is L2-normalised again: a descriptor then depends on the batch.
"""

from __future__ import annotations

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
    full_precision,
    l2_flatten,
)
from vprlab.models.spec import AggregatorSpec


class SuperVLAD(CrossImageAggregator):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, num_clusters * C] (cluster-major).

    The paper's setting (DINOv2 ViT-B/14): 4 clusters + 1 ghost cluster = 3072-d. ``assignment``
    holds the cluster logits' 1x1 convolution weight [num_clusters + num_ghost_clusters, C, 1, 1].
    ``cross_image=True`` adds ``encoder`` (2 post-norm Transformer layers, 16 heads, feed-forward
    2048, GELU, dropout 0.1 by default) over the batch axis: see ``mixes_batch``.
    """

    spec = AggregatorSpec(
        name="supervlad", paper="Lu et al., NeurIPS 2024", descriptor="`num_clusters` x channels",
        small={"num_clusters": 3, "num_ghost_clusters": 1, "cross_image_heads": 2, "cross_image_ff_dim": 8},
    )

    @staticmethod
    def output_dim(in_channels: int, num_clusters: int, **args: Any) -> int:
        return num_clusters * in_channels

    def __init__(
        self,
        in_channels: int,
        num_clusters: int = 4,
        num_ghost_clusters: int = 1,
        cross_image: bool = False,
        cross_image_heads: int = 16,
        cross_image_ff_dim: int = 2048,
        cross_image_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive_int("SuperVLAD", in_channels=in_channels, num_clusters=num_clusters)
        if isinstance(num_ghost_clusters, bool) or not isinstance(num_ghost_clusters, int) or num_ghost_clusters < 0:
            raise ValueError(f"SuperVLAD num_ghost_clusters must be a non-negative integer, got {num_ghost_clusters!r}")
        self.in_channels = in_channels
        self.num_clusters = num_clusters
        self.num_ghost_clusters = num_ghost_clusters
        self.assignment = nn.Conv2d(in_channels, num_clusters + num_ghost_clusters, 1, bias=False)
        self.set_encoder(cross_image, in_channels, cross_image_heads, cross_image_ff_dim, cross_image_layers, dropout)

    @property
    def descriptor_dim(self) -> int:
        return self.num_clusters * self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = feature_map(x, "SuperVLAD")
        check_channels(x, self.in_channels, "SuperVLAD")
        with full_precision(x):
            x = F.normalize(x.float(), p=2.0, dim=1)
            logits = F.conv2d(x, self.assignment.weight.float()).flatten(2)  # [B, K + G, N]
            weights = logits.softmax(dim=1)[:, : self.num_clusters]  # ghost clusters dropped
            clusters = torch.bmm(weights, x.flatten(2).transpose(1, 2))  # [B, K, C]: sum_n a_kn x_n
            descriptor = l2_flatten(F.normalize(clusters, p=2.0, dim=2))
        if self.encoder is None:
            return descriptor
        tokens = descriptor.reshape(descriptor.shape[0], self.num_clusters, self.in_channels)
        return l2_flatten(encode_across_batch(self.encoder, tokens))
