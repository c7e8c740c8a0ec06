import torch
import torch.nn.functional as F

from vprlab.losses import multi_similarity


def _ms_loss_reference(x, labels, alpha=1.0, beta=50.0, base=0.0, eps=0.1):
    """MultiSimilarity loss with its miner, written from the paper's formulas."""
    sim = x @ x.T
    n = len(labels)
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(n) if labels[j] != labels[i]]
        sp, sn = sim[i, pos], sim[i, neg]
        keep_n = sn > sp.min() - eps
        keep_p = sp < sn.max() + eps
        term = 0.0
        if keep_p.any():
            term = term + torch.log1p(torch.exp(-alpha * (sp[keep_p] - base)).sum()) / alpha
        if keep_n.any():
            term = term + torch.log1p(torch.exp(beta * (sn[keep_n] - base)).sum()) / beta
        total = total + term
    return total / n


def test_multi_similarity_matches_the_formula():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(12, 8), dim=1)
    labels = torch.arange(4).repeat_interleave(3)
    loss_fn = multi_similarity()
    value, stats = loss_fn(x, labels)
    assert torch.allclose(value, _ms_loss_reference(x, labels), atol=1e-5)
    assert 0 < stats["mined_fraction"] <= 1
    assert stats["mined_pos_pairs"] > 0 and stats["mined_neg_pairs"] > 0


def test_well_separated_batch_mines_nothing_and_costs_nothing():
    labels = torch.arange(4).repeat_interleave(2)
    x = F.one_hot(labels, 8).float()  # images of one place identical, places orthogonal
    value, stats = multi_similarity()(x, labels)
    assert stats["mined_pos_pairs"] == 0 and stats["mined_fraction"] == 0
    assert value.item() == 0.0
