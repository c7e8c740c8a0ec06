"""SALAD (Izquierdo & Civera, "Optimal Transport Aggregation for Visual Place Recognition", CVPR 2024;
github.com/serizba/salad).

Local features are assigned to clusters by optimal transport (a few Sinkhorn iterations in log
space) with a "dustbin" row that absorbs the features that belong to no cluster; the per-cluster
sums of (reduced) features are intra-normalised and concatenated with a projection of the
backbone's global (class) token.

Parameter names (``token_features``, ``cluster_features``, ``score``, ``dust_bin``) follow the
released SALAD checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models.aggregators._common import (
    check_positive_int,
    full_precision,
    l2_flatten,
    map_and_class_token,
)
from vprlab.models.spec import Aggregator, AggregatorSpec


def log_optimal_transport(scores: torch.Tensor, dustbin: torch.Tensor, iters: int) -> torch.Tensor:
    """Log transport plan [B, m + 1, n] between m clusters + a dustbin and n local features.

    ``scores`` [B, m, n] are the log-affinities; the dustbin row has the constant score ``dustbin``.
    Marginals: every feature (column) carries mass 1; every cluster (row) receives mass 1 and the
    dustbin the remaining n - m, so n must exceed m. ``iters`` Sinkhorn iterations alternate a row
    and a column update in log space, so the columns sum exactly to one at the end and the rows
    approach their marginals as ``iters`` grows. Computed in float32 whatever the input dtype.

    Written as the SALAD and MegaLoc releases compute it (so the float32 rounding is theirs too): the
    masses are first divided by n + m (log targets -log(n + m), and log(n - m) - log(n + m) for the
    dustbin), the potentials start at zero, and the plan is multiplied back by n + m at the end.
    """
    batch, num_clusters, num_features = scores.shape
    if num_features <= num_clusters:
        raise ValueError(
            f"SALAD's optimal transport needs more local features than clusters (the dustbin takes the "
            f"n - m leftover mass): got n={num_features} features for m={num_clusters} clusters; use a larger "
            "input image (DINOv2 at 322x322 gives 23x23=529 features) or fewer aggregator.num_clusters"
        )
    with full_precision(scores):
        scores = scores.float()
        bins = dustbin.float().reshape(1, 1, 1).expand(batch, 1, num_features)
        log_plan = torch.cat([scores, bins], dim=1)  # [B, m + 1, n]
        norm = -torch.tensor(math.log(num_features + num_clusters), device=scores.device)
        log_rows = norm.expand(num_clusters + 1).clone()
        log_rows[-1] = log_rows[-1] + math.log(num_features - num_clusters)
        log_rows = log_rows.expand(batch, -1)
        log_cols = norm.expand(batch, num_features)
        u, v = torch.zeros_like(log_rows), torch.zeros_like(log_cols)
        for _ in range(iters):
            u = log_rows - torch.logsumexp(log_plan + v[:, None, :], dim=2)
            v = log_cols - torch.logsumexp(log_plan + u[:, :, None], dim=1)
        return log_plan + u[:, :, None] + v[:, None, :] - norm


class SALAD(Aggregator):
    """(feature map [B, C, H, W], class token [B, C]) -> L2-normalised descriptor
    [B, num_clusters * cluster_dim + token_dim].

    Defaults are the paper's: 64 clusters of 128 dimensions + a 256-d global token = 8448-d, hidden
    width 512, dropout 0.3, 3 Sinkhorn iterations. The backbone must return its class token
    (DINOv2 / timm ViT with ``return_cls_token=true``; SALAD also applies DINOv2's final norm, see
    experiment=salad_dinov2). Needs more local features than clusters (H * W > num_clusters).

    ``out_dim`` (MegaLoc's setting: 64 x 256 + 256 = 16640 -> 8448) adds a final ``projection``
    Linear (with bias) from that L2-normalised descriptor to ``out_dim`` values, L2-normalised again.
    """

    spec = AggregatorSpec(
        name="salad", paper="Izquierdo & Civera, CVPR 2024", descriptor="`num_clusters` x `cluster_dim` + `token_dim`",
        needs_cls_token=True, more_positions_than="num_clusters", hint="experiment=salad_dinov2",
        small={"num_clusters": 4, "cluster_dim": 4, "token_dim": 4, "hidden_dim": 8, "dropout": 0.0},
    )

    @staticmethod
    def output_dim(
        in_channels: int, num_clusters: int, cluster_dim: int, token_dim: int, out_dim: int | None = None, **args
    ) -> int:
        return out_dim or num_clusters * cluster_dim + token_dim

    def __init__(
        self,
        in_channels: int,
        num_clusters: int = 64,
        cluster_dim: int = 128,
        token_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.3,
        sinkhorn_iters: int = 3,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(
            "SALAD", in_channels=in_channels, num_clusters=num_clusters, cluster_dim=cluster_dim,
            token_dim=token_dim, hidden_dim=hidden_dim, sinkhorn_iters=sinkhorn_iters,
        )
        if out_dim is not None:
            check_positive_int("SALAD", out_dim=out_dim)
        if not 0 <= dropout < 1:
            raise ValueError(f"SALAD dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.token_dim = token_dim
        self.sinkhorn_iters = sinkhorn_iters

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.token_features = nn.Sequential(
            nn.Linear(in_channels, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, token_dim)
        )
        self.cluster_features = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 1), drop(), nn.ReLU(), nn.Conv2d(hidden_dim, cluster_dim, 1)
        )
        self.score = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 1), drop(), nn.ReLU(), nn.Conv2d(hidden_dim, num_clusters, 1)
        )
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.out_dim = out_dim
        self.projection = nn.Linear(num_clusters * cluster_dim + token_dim, out_dim) if out_dim else None

    @property
    def descriptor_dim(self) -> int:
        return self.out_dim or self.num_clusters * self.cluster_dim + self.token_dim

    def transport_plan(self, x: torch.Tensor) -> torch.Tensor:
        """Assignment of the features of map x [B, C, H, W] to the clusters: [B, m, H*W] (dustbin dropped)."""
        scores = self.score(x).flatten(2)
        return log_optimal_transport(scores, self.dust_bin, self.sinkhorn_iters)[:, :-1].exp()

    def forward(self, x: Any) -> torch.Tensor:
        features, token = map_and_class_token(x, self.in_channels, "SALAD", "experiment=salad_dinov2")
        local = self.cluster_features(features).flatten(2)  # [B, l, n]
        glob = self.token_features(token)  # [B, g]
        plan = self.transport_plan(features)  # [B, m, n], float32
        with full_precision(plan):
            clusters = torch.bmm(local.float(), plan.transpose(1, 2))  # [B, l, m]: sum_n f_ln p_mn
            clusters = F.normalize(clusters, p=2.0, dim=1)  # per cluster
            glob = F.normalize(glob.float(), p=2.0, dim=-1)
            descriptor = l2_flatten(torch.cat([glob, clusters.flatten(1)], dim=1))
            if self.projection is None:
                return descriptor
            return l2_flatten(F.linear(descriptor, self.projection.weight.float(), self.projection.bias.float()))
