"""SuperVLAD and CricaVPR (models/aggregators/supervlad.py, cricavpr.py) against plain-op computations
of their steps; the cross-image encoder attends across the batch (so batch composition matters), and
the helpers they share (region_bounds, mixes_batch). The full encoder is checked step by step in
tests/pretrained/test_published_cricavpr.py."""

from __future__ import annotations

import pytest
import torch

from vprlab.models.aggregators import CricaVPR, SuperVLAD
from vprlab.models.aggregators._common import region_bounds
from vprlab.models.spec import mixes_batch
from vprlab.models.vpr_model import VPRModel


def unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True)


def test_region_bounds_are_cricavpr_slices_at_16_and_never_empty() -> None:
    assert region_bounds(16, 2) == [(0, 8), (8, 16)]
    assert region_bounds(16, 3) == [(0, 5), (5, 11), (11, 16)]
    for size in range(1, 30):
        for parts in (1, 2, 3, 4):
            bounds = region_bounds(size, parts)
            assert len(bounds) == parts and all(0 <= a < b <= size for a, b in bounds)
            assert bounds[0][0] == 0 and bounds[-1][1] == size


def test_supervlad_is_centroid_free_vlad_with_ghost_clusters_dropped() -> None:
    torch.manual_seed(0)
    agg = SuperVLAD(8, num_clusters=3, num_ghost_clusters=2).eval()
    assert agg.descriptor_dim == 24 and not agg.mixes_batch and agg.encoder is None
    x = torch.randn(2, 8, 4, 5)
    with torch.no_grad():
        out = agg(x)
    w = agg.assignment.weight[:, :, 0, 0]  # [5, 8]
    expected = []
    for b in range(2):
        feats = unit(x[b].reshape(8, -1).T)  # [N, 8]
        a = torch.softmax(feats @ w.T, dim=1)  # [N, 5]
        clusters = [unit(sum(a[n, k] * feats[n] for n in range(feats.shape[0]))) for k in range(3)]
        expected.append(unit(torch.cat(clusters)))
    torch.testing.assert_close(out, torch.stack(expected), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_ghost_clusters must be a non-negative integer"):
        SuperVLAD(8, num_ghost_clusters=-1)


def test_supervlad_cross_image_encodes_the_cluster_vectors_across_the_batch() -> None:
    torch.manual_seed(0)
    agg = SuperVLAD(8, num_clusters=3, cross_image=True, cross_image_heads=2, cross_image_ff_dim=16).eval()
    plain = SuperVLAD(8, num_clusters=3)
    plain.load_state_dict({k: v for k, v in agg.state_dict().items() if not k.startswith("encoder.")})
    assert agg.mixes_batch and agg.descriptor_dim == 24
    x = torch.randn(4, 8, 3, 3)
    with torch.no_grad():
        out = agg(x)
        tokens = plain(x).reshape(4, 3, 8)  # [B, K, C], cluster-major
        expected = unit(agg.encoder(tokens).reshape(4, 24))  # batch_first=False: the B images are the sequence
        assert (agg(x[:2]) - out[:2]).abs().max() > 1e-4  # another batch, another descriptor
        shuffled = agg(x[[2, 0, 3, 1]])  # no positions: the same set in another order
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled, out[[2, 0, 3, 1]], atol=1e-5, rtol=1e-5)


def test_cricavpr_tokens_are_class_token_and_gem_regions() -> None:
    torch.manual_seed(0)
    agg = CricaVPR(8, cross_image_heads=2, cross_image_ff_dim=16).eval()
    with torch.no_grad():
        agg.p.fill_(2.5)
    assert agg.descriptor_dim == 14 * 8 and agg.mixes_batch
    fmap, cls = torch.randn(3, 8, 16, 16), torch.randn(3, 8)
    with torch.no_grad():
        tokens = agg.tokens(fmap, cls)
        out = agg((fmap, cls))
    normed = unit(fmap, dim=1)

    def gem(region: torch.Tensor) -> torch.Tensor:
        return region.clamp(min=1e-6).pow(2.5).mean(dim=(-2, -1)).pow(1 / 2.5)

    rows2, rows3 = [(0, 8), (8, 16)], [(0, 5), (5, 11), (11, 16)]  # CricaVPR's slices
    regions = [gem(normed[:, :, a:b, c:d]) for (a, b) in rows2 for (c, d) in rows2]
    regions += [gem(normed[:, :, a:b, c:d]) for (a, b) in rows3 for (c, d) in rows3]
    torch.testing.assert_close(tokens, torch.stack([cls, *regions], dim=1), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        expected = unit(agg.encoder(tokens).reshape(3, -1))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    alone = CricaVPR(8, p=2.5, cross_image_layers=0).eval()
    assert not alone.mixes_batch and alone.encoder is None
    torch.testing.assert_close(alone((fmap, cls)), unit(torch.stack([cls, *regions], 1).reshape(3, -1)))
    with pytest.raises(ValueError, match="needs the backbone's class token"):
        agg(fmap)
    with pytest.raises(ValueError, match="do not split into 3 heads"):
        CricaVPR(8, cross_image_heads=3)


def test_mixes_batch_finds_the_aggregator_in_a_model() -> None:
    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    assert mixes_batch(VPRModel(Identity(), CricaVPR(8, cross_image_heads=2, cross_image_ff_dim=8)))
    assert not mixes_batch(VPRModel(Identity(), SuperVLAD(8)))
