"""Metric-learning losses over batches of P places x K images (thin wrappers over
pytorch-metric-learning, so the math is the library's and only the plumbing is ours)."""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import nn


class MinedMetricLoss(nn.Module):
    """A metric-learning loss applied to the pairs or triplets chosen by a miner.

    ``forward`` returns the loss and statistics worth logging. A pair miner (4-tuples
    ``a1, p, a2, n``, e.g. MultiSimilarityMiner) gives ``mined_pos_pairs`` and
    ``mined_neg_pairs``; a triplet miner (3-tuples ``a, p, n``, e.g. TripletMarginMiner)
    gives ``mined_triplets``. Both give ``mined_fraction``, the fraction of the batch that
    still anchors at least one informative pair or triplet (gsv-cities' "batch accuracy"
    is one minus that). pytorch-metric-learning losses convert either tuple kind to the
    one they need, so any pair loss takes triplets and the triplet loss takes pairs.
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
            indices = self.miner(descriptors, labels)
            # Mining already synchronises with the host (its outputs have data-dependent
            # sizes), so reading the sizes here costs nothing extra.
            if len(indices) == 4:
                a1, _, a2, _ = indices
                stats["mined_pos_pairs"] = float(a1.numel())
                stats["mined_neg_pairs"] = float(a2.numel())
                anchors = torch.unique(torch.cat([a1, a2]))
            elif len(indices) == 3:
                a, _, _ = indices
                stats["mined_triplets"] = float(a.numel())
                anchors = torch.unique(a)
            else:
                raise ValueError(
                    f"miner {type(self.miner).__name__} returned a {len(indices)}-tuple; expected pairs "
                    "(a1, p, a2, n) or triplets (a, p, n)"
                )
            stats["mined_fraction"] = anchors.numel() / max(1, labels.numel())
            value = self.loss(descriptors, labels, indices)
        else:
            value = self.loss(descriptors, labels)
        return value, stats


def multi_similarity(
    alpha: float = 1.0, beta: float = 50.0, base: float = 0.0, miner_epsilon: float | None = 0.1
) -> MinedMetricLoss:
    """MultiSimilarity loss with the MultiSimilarity miner: the GSV-Cities / BoQ default.

    The loss config used to target this function (``loss.miner_epsilon`` chose the miner);
    it stays so that configs stored with old runs still build. New configs pick the loss
    and the miner in two groups (conf/loss, conf/miner) joined by ``build_loss``.
    """
    miner = miners.MultiSimilarityMiner(epsilon=miner_epsilon) if miner_epsilon is not None else None
    return MinedMetricLoss(losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base), miner)
