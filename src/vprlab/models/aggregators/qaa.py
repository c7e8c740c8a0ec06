"""QAA (Xiao, Zhou and Loianno, "Query-Based Adaptive Aggregation for Multi-Dataset Joint Training
Toward Universal Visual Place Recognition", arXiv 2025 / ICRA 2026; github.com/arplaboratory/QAA,
the released models as VPR-methods-evaluation's ``vpr_models/qaa.py`` runs them).

Two sets of ``num_queries`` learned queries, each refined by a self-attention step (residual) and a
LayerNorm, independent of the image:

- the *feature* queries F [Q, cluster_dim] (the codebook whose mixtures become the descriptor),
- the *score* queries [Q, C], which cross-attend to the image's local features; the result is
  LayerNorm-ed and projected (1x1 Conv1d) to ``num_clusters`` scores per query: S [M, Q]
  (optionally LayerNorm-ed over the clusters, ``out_norm``).

The descriptor is F S^T [cluster_dim, M] ("cross-query similarity"), L2-normalised per cluster,
flattened with index ``l * num_clusters + m`` and L2-normalised. ``sinkhorn_iters > 0`` first turns S
into an optimal-transport plan with a dustbin (SALAD's :func:`log_optimal_transport`), as the training
code of the QAA repository does; VPR-methods-evaluation's copy of the released model skips that step
(0, the default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models.aggregators._common import check_channels, check_positive_int, feature_map, full_precision, l2_flatten
from vprlab.models.aggregators.salad import log_optimal_transport
from vprlab.models.spec import Aggregator, AggregatorSpec


class LearnedQueries(nn.Module):
    """``num_queries`` learned vectors of size ``dim``; ``forward()`` -> [1, Q, dim]: the queries plus
    their self-attention (if ``self_attention``), then a LayerNorm."""

    def __init__(self, dim: int, num_queries: int, num_heads: int, self_attention: bool = True) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True) if self_attention else None
        self.norm = nn.LayerNorm(dim)

    def forward(self) -> torch.Tensor:
        q = self.queries
        if self.self_attn is not None:
            q = q + self.self_attn(q, q, q, need_weights=False)[0]
        return self.norm(q)


class QueryScores(nn.Module):
    """Cross-attention of the score queries [B, Q, C] to the local features [B, N, C], LayerNorm,
    1x1 Conv1d to ``num_clusters`` (+ LayerNorm if ``out_norm``) -> scores [B, M, Q]."""

    def __init__(self, in_channels: int, num_clusters: int, num_heads: int, out_norm: bool) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(in_channels, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(in_channels)
        self.proj = nn.Conv1d(in_channels, num_clusters, 1)
        self.out_norm = nn.LayerNorm(num_clusters)  # held (and released) even when not applied
        self.apply_out_norm = bool(out_norm)
        self.out_norm.requires_grad_(self.apply_out_norm)  # unused weights do not train (no grads, no DDP complaint)

    def forward(self, local: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.cross_attn(queries, local, local, need_weights=False)[0])  # [B, Q, C]
        out = self.proj(out.transpose(1, 2)).transpose(1, 2)  # [B, Q, M]
        if self.apply_out_norm:
            out = self.out_norm(out)
        return out.transpose(1, 2)


class QAA(Aggregator):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, num_clusters * cluster_dim].

    Defaults are the released 8192-d model as VPR-methods-evaluation builds it: 256 queries, 64
    clusters of 128, 16 heads in both query sets, no Sinkhorn, no output LayerNorm. A ``(feature
    map, class token)`` input is read for its map (the class token is not used).
    """

    spec = AggregatorSpec(
        name="qaa", paper="Xiao et al., ICRA 2026", descriptor="`num_clusters` x `cluster_dim`",
        hint="pretrained=qaa_dinov2_8192",
        small={"num_clusters": 4, "cluster_dim": 8, "num_queries": 8, "feature_heads": 2, "score_heads": 2},
    )

    @staticmethod
    def output_dim(in_channels: int, num_clusters: int, cluster_dim: int, **args) -> int:
        return num_clusters * cluster_dim

    def __init__(
        self,
        in_channels: int,
        num_clusters: int = 64,
        cluster_dim: int = 128,
        num_queries: int = 256,
        feature_heads: int = 16,
        score_heads: int = 16,
        query_self_attention: bool = True,
        out_norm: bool = False,
        sinkhorn_iters: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int(
            "QAA", in_channels=in_channels, num_clusters=num_clusters, cluster_dim=cluster_dim,
            num_queries=num_queries, feature_heads=feature_heads, score_heads=score_heads,
        )
        if isinstance(sinkhorn_iters, bool) or not isinstance(sinkhorn_iters, int) or sinkhorn_iters < 0:
            raise ValueError(f"QAA sinkhorn_iters must be an integer >= 0, got {sinkhorn_iters!r}")
        for width, heads, width_name, heads_name in (
            (in_channels, score_heads, "in_channels", "score_heads"), (cluster_dim, feature_heads, "cluster_dim", "feature_heads"),
        ):
            if width % heads:
                raise ValueError(f"QAA {width_name}={width} is not divisible by {heads_name}={heads} (attention heads)")
        self.in_channels = in_channels
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.num_queries = num_queries
        self.sinkhorn_iters = sinkhorn_iters
        self.feature_queries = LearnedQueries(cluster_dim, num_queries, feature_heads, query_self_attention)
        self.score_queries = LearnedQueries(in_channels, num_queries, score_heads, query_self_attention)
        self.score = QueryScores(in_channels, num_clusters, score_heads, out_norm)
        self.dust_bin = nn.Parameter(torch.tensor(1.0), requires_grad=sinkhorn_iters > 0)  # used only with sinkhorn_iters > 0

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The cluster scores of each score query for feature map x [B, C, H, W]: [B, M, Q] (after
        Sinkhorn if ``sinkhorn_iters > 0``)."""
        local = x.flatten(2).transpose(1, 2)  # [B, N, C]
        queries = self.score_queries().expand(x.shape[0], -1, -1)
        scores = self.score(local, queries)
        if self.sinkhorn_iters:
            scores = log_optimal_transport(scores, self.dust_bin, self.sinkhorn_iters)[:, :-1].exp()
        return scores

    def forward(self, x: object) -> torch.Tensor:
        features = feature_map(x, "QAA")
        check_channels(features, self.in_channels, "QAA")
        scores = self.scores(features)  # [B, M, Q]
        codebook = self.feature_queries()[0]  # [Q, L]
        with full_precision(scores):
            clusters = torch.einsum("ql,bmq->blm", codebook.float(), scores.float())  # [B, L, M]
            return l2_flatten(F.normalize(clusters, p=2.0, dim=1))
