"""Metric-learning losses over batches of P places x K images (thin wrappers over
pytorch-metric-learning, so the math is the library's and only the plumbing is ours)."""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import nn


class MinedMetricLoss(nn.Module):
    """A pair-based loss applied to the pairs chosen by a miner.

    ``forward`` returns the loss and statistics worth logging: how many positive and
    negative pairs the miner kept and the fraction of the batch that still has at
    least one informative pair (gsv-cities' "batch accuracy" is one minus that).
    """

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(self, descriptors: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # The loss is computed in fp32 whatever the autocast precision: MultiSimilarity's
        # exp(beta * (s - base)) with beta=50 overflows in fp16.
        descriptors = descriptors.float()
        stats: dict[str, float] = {}
        if self.miner is not None:
            pairs = self.miner(descriptors, labels)
            a1, _, a2, _ = pairs
            # Mining already synchronises with the host (its outputs have data-dependent
            # sizes), so reading the sizes here costs nothing extra.
            stats["mined_pos_pairs"] = float(a1.numel())
            stats["mined_neg_pairs"] = float(a2.numel())
            anchors = torch.unique(torch.cat([a1, a2]))
            stats["mined_fraction"] = anchors.numel() / max(1, labels.numel())
            value = self.loss(descriptors, labels, pairs)
        else:
            value = self.loss(descriptors, labels)
        return value, stats


def multi_similarity(
    alpha: float = 1.0, beta: float = 50.0, base: float = 0.0, miner_epsilon: float | None = 0.1
) -> MinedMetricLoss:
    """MultiSimilarity loss with the MultiSimilarity miner: the GSV-Cities / BoQ default."""
    miner = miners.MultiSimilarityMiner(epsilon=miner_epsilon) if miner_epsilon is not None else None
    return MinedMetricLoss(losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base), miner)
