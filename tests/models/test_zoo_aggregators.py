"""The aggregator zoo: each method checked against an independent small computation, its errors,
and its behaviour under any batch size, map size and autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vprlab.models.aggregators import (
    AVG,
    MAC,
    SALAD,
    BoQ,
    ConvAP,
    CosPlace,
    GeM,
    MixVPR,
    NetVLAD,
    registry,
)
from vprlab.models.aggregators.salad import log_optimal_transport


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------- pooling


def test_gem_avg_mac_match_their_formulas() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 5, 4, 6) + 0.05
    gem = GeM(5, p=2.5)
    with torch.no_grad():
        gem.p.fill_(1.7)  # a learned p, not the initial 3
    expected = torch.stack([torch.stack([(c ** 1.7).mean() ** (1 / 1.7) for c in img]) for img in x])
    torch.testing.assert_close(gem(x), _unit_rows(expected))
    torch.testing.assert_close(AVG(5)(x), _unit_rows(x.mean(dim=(2, 3))))
    torch.testing.assert_close(MAC(5)(x), _unit_rows(x.amax(dim=(2, 3))))
    # GeM clamps at eps: negative activations do not produce NaNs
    assert torch.isfinite(gem(x - 0.5)).all()


def test_cosplace_is_l2norm_gem_fc_l2norm() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 5)
    cosplace = CosPlace(6, out_dim=4)
    unit = x / x.norm(dim=1, keepdim=True)  # each local feature
    pooled = unit.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    expected = pooled @ cosplace.fc.weight.T + cosplace.fc.bias
    torch.testing.assert_close(cosplace(x), _unit_rows(expected))
    assert cosplace.descriptor_dim == 4
    assert sum(p.numel() for p in cosplace.parameters()) == 1 + 6 * 4 + 4


def test_convap_pools_conv_output_on_a_grid() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 6)
    convap = ConvAP(5, out_channels=3, s1=2, s2=2)
    conv = torch.einsum("oc,bchw->bohw", convap.channel_pool.weight[:, :, 0, 0], x) + convap.channel_pool.bias[:, None, None]
    cells = torch.stack(
        [torch.stack([conv[:, :, i * 2:(i + 1) * 2, j * 3:(j + 1) * 3].mean(dim=(2, 3)) for j in range(2)], dim=-1) for i in range(2)],
        dim=-2,
    )  # [B, 3, 2, 2]
    torch.testing.assert_close(convap(x), _unit_rows(cells.flatten(1)))
    assert convap.descriptor_dim == 12
    with pytest.raises(ValueError, match=r"ConvAP pools to 2x2 cells.*feature map is only 1x3"):
        convap(torch.randn(1, 5, 1, 3))


# -------------------------------------------------------------------------------------- MixVPR


def test_mixvpr_shapes_per_stage_and_result() -> None:
    torch.manual_seed(0)
    mixvpr = MixVPR(8, in_h=3, in_w=4, out_channels=6, out_rows=2, mix_depth=2, mlp_ratio=2)
    x = torch.randn(5, 8, 3, 4)
    shapes = {}
    for name in ("mix.0", "mix.1", "channel_proj", "row_proj"):
        mixvpr.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    mixvpr.mix[0].mix[1].register_forward_hook(lambda m, i, o: shapes.__setitem__("hidden", tuple(o.shape)))
    out = mixvpr(x)
    assert shapes == {"mix.0": (5, 8, 12), "hidden": (5, 8, 24), "mix.1": (5, 8, 12), "channel_proj": (5, 12, 6), "row_proj": (5, 6, 2)}
    assert out.shape == (5, 12) and mixvpr.descriptor_dim == 12

    def mixer(t, layer):
        ln, fc1, _, fc2 = layer.mix
        h = F.layer_norm(t, (12,), ln.weight, ln.bias)
        return t + torch.relu(h @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias

    t = x.reshape(5, 8, 12)
    for layer in mixvpr.mix:
        t = mixer(t, layer)
    t = t.transpose(1, 2) @ mixvpr.channel_proj.weight.T + mixvpr.channel_proj.bias  # [5, 12, 6]
    t = t.transpose(1, 2) @ mixvpr.row_proj.weight.T  # [5, 6, 2]
    torch.testing.assert_close(out, _unit_rows(t.reshape(5, -1)))


def test_mixvpr_paper_setting_and_released_names() -> None:
    mixvpr = MixVPR(1024)  # defaults: the 4096-d ResNet50 model
    assert mixvpr.descriptor_dim == 4096
    names = {n for n, _ in mixvpr.named_parameters()}
    assert {"mix.3.mix.0.weight", "mix.3.mix.1.weight", "mix.3.mix.3.bias", "channel_proj.weight", "row_proj.weight"} <= names
    assert "row_proj.bias" not in names


def test_mixvpr_refuses_a_map_of_another_size() -> None:
    mixvpr = MixVPR(16, in_h=20, in_w=20, out_channels=8, out_rows=2, mix_depth=1)
    with pytest.raises(ValueError, match=r"MixVPR was built for 20x20 feature maps \(aggregator.in_h=20, in_w=20\) but got 24x24.*eval_image_size"):
        mixvpr(torch.randn(1, 16, 24, 24))
    with pytest.raises(ValueError, match=r"MixVPR was built for 16 input channels.*has 8"):
        mixvpr(torch.randn(1, 8, 20, 20))


# ------------------------------------------------------------------------------------- NetVLAD


def _netvlad_by_loops(x: torch.Tensor, netvlad: NetVLAD) -> torch.Tensor:
    """Residual sums written out: for each image, cluster and position."""
    out = []
    for img in x:
        feats = img.reshape(img.shape[0], -1).T  # [N, C]
        feats = feats / feats.norm(dim=1, keepdim=True)
        logits = feats @ netvlad.conv.weight[:, :, 0, 0].T
        if netvlad.conv.bias is not None:
            logits = logits + netvlad.conv.bias
        assign = torch.softmax(logits, dim=1)  # [N, K]
        rows = []
        for k in range(netvlad.num_clusters):
            residual = torch.zeros(feats.shape[1])
            for n in range(feats.shape[0]):
                residual += assign[n, k] * (feats[n] - netvlad.centroids[k])
            rows.append(residual / residual.norm())
        vlad = torch.cat(rows)
        out.append(vlad / vlad.norm())
    return torch.stack(out)


@pytest.mark.parametrize("vladv2", [False, True])
def test_netvlad_matches_residual_loop(vladv2: bool) -> None:
    torch.manual_seed(0)
    netvlad = NetVLAD(4, num_clusters=3, vladv2=vladv2)
    with torch.no_grad():
        netvlad.conv.weight.normal_()
        if vladv2:
            netvlad.conv.bias.normal_()
    x = torch.randn(2, 4, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(netvlad(x), _netvlad_by_loops(x, netvlad), atol=1e-5, rtol=1e-5)
    assert netvlad.descriptor_dim == 12


def test_netvlad_channel_major_order_is_the_transposed_cluster_major_one() -> None:
    """flatten_order="channel_major" (the MATLAB release's index c * K + k) holds the same values as the
    default k * C + c, transposed; the optional PCA then reads that order."""
    torch.manual_seed(0)
    cluster_major = NetVLAD(4, num_clusters=3)
    channel_major = NetVLAD(4, num_clusters=3, flatten_order="channel_major")
    channel_major.load_state_dict(cluster_major.state_dict())
    x = torch.randn(2, 4, 3, 2)
    with torch.no_grad():
        a, b = cluster_major(x), channel_major(x)
    torch.testing.assert_close(b, a.reshape(2, 3, 4).transpose(1, 2).reshape(2, 12))
    with pytest.raises(ValueError, match=r"flatten_order='matlab' is not one of \['cluster_major', 'channel_major'\]"):
        NetVLAD(4, flatten_order="matlab")


def _clustered_features(num_images=40, channels=6, side=5, clusters=4, seed=0):
    """Feature maps whose local features sit near ``clusters`` random directions."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, channels, generator=generator), dim=1) * 3
    labels = torch.randint(clusters, (num_images, side * side), generator=generator)
    local = centres[labels] + 0.05 * torch.randn(num_images, side * side, channels, generator=generator)
    return local.transpose(1, 2).reshape(num_images, channels, side, side), centres


def test_netvlad_init_from_features_kmeans_and_alpha() -> None:
    features, centres = _clustered_features()
    netvlad = NetVLAD(6, num_clusters=4, init_descriptors=500, kmeans_iters=20)
    assert not netvlad.initialised
    netvlad.init_from_features(features)
    assert netvlad.initialised
    # the centroids are a k-means fixed point of the (L2-normalised) sampled local features:
    # each one is the mean of the features nearest to it
    local = netvlad.sample_local_features(features)
    centroids = netvlad.centroids.detach()
    nearest = torch.cdist(local, centroids).argmin(dim=1)
    for k in range(4):
        torch.testing.assert_close(centroids[k], local[nearest == k].mean(dim=0), atol=1e-4, rtol=1e-4)
    assert local.shape == (500, 6)
    torch.testing.assert_close(local.norm(dim=1), torch.ones(500))
    # v1 assignment: alpha * unit centroids, no bias; alpha makes the nearest centroid ~100x the second
    weight = netvlad.conv.weight[:, :, 0, 0].detach()
    alpha = weight.norm(dim=1)
    torch.testing.assert_close(alpha, alpha[:1].expand(4))
    top2 = (local @ F.normalize(weight, dim=1).T).topk(2, dim=1).values  # over the sampled features
    assert alpha[0].item() == pytest.approx(-math.log(0.01) / (top2[:, 0] - top2[:, 1]).mean().item(), rel=1e-4)
    assert netvlad.conv.bias is None
    # a list of per-image outputs (what the trainer passes for tuple backbones) works the same way
    again = NetVLAD(6, num_clusters=4, init_descriptors=500, kmeans_iters=20)
    again.init_from_features(list(features.split(1)))
    torch.testing.assert_close(again.centroids, netvlad.centroids)


def test_netvlad_v2_init_is_soft_nearest_centroid() -> None:
    features, _ = _clustered_features()
    netvlad = NetVLAD(6, num_clusters=4, vladv2=True, init_descriptors=500, kmeans_iters=20)
    netvlad.init_from_features(features)
    centroids = netvlad.centroids.detach()
    local = F.normalize(torch.randn(7, 6), dim=1)
    logits = local @ netvlad.conv.weight[:, :, 0, 0].T + netvlad.conv.bias
    alpha = (netvlad.conv.weight[0, :, 0, 0] / (2 * centroids[0])).mean()
    by_distance = torch.softmax(-alpha * torch.cdist(local, centroids).pow(2), dim=1)
    torch.testing.assert_close(torch.softmax(logits, dim=1), by_distance, atol=1e-5, rtol=1e-4)


def test_netvlad_pca_whitening_learned_on_training_descriptors() -> None:
    features, _ = _clustered_features(num_images=40)
    netvlad = NetVLAD(6, num_clusters=4, pca_dim=5, init_descriptors=500, kmeans_iters=20)
    assert netvlad.descriptor_dim == 5
    netvlad.init_from_features(features)
    with torch.no_grad():
        vlad = netvlad.vlad(features)
        projected = netvlad.pca(vlad)  # before the final L2 normalisation
        out = netvlad(features)
    torch.testing.assert_close(projected.mean(dim=0), torch.zeros(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(projected.T), torch.eye(5), atol=1e-3, rtol=1e-3)  # whitened
    assert out.shape == (40, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(40))
    # the kept directions are the top principal components of the training descriptors
    centred = vlad - vlad.mean(dim=0)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[:5]
    cosines = F.normalize(netvlad.pca.weight.detach(), dim=1) @ top.T
    torch.testing.assert_close(cosines.abs(), torch.eye(5), atol=1e-3, rtol=0)


def test_netvlad_errors() -> None:
    features, _ = _clustered_features(num_images=4)
    with pytest.raises(ValueError, match=r"pca_dim=8 needs more than 8 training descriptors.*got 4.*aggregator_init_images"):
        NetVLAD(6, num_clusters=4, pca_dim=8, kmeans_iters=5).init_from_features(features)
    with pytest.raises(ValueError, match=r"needs at least num_clusters=64 local features.*got 10"):
        NetVLAD(6, num_clusters=64, init_descriptors=10).init_from_features(features)
    with pytest.raises(ValueError, match=r"pca_dim=100 exceeds the VLAD dimension 24"):
        NetVLAD(6, num_clusters=4, pca_dim=100)


# --------------------------------------------------------------------------------------- SALAD


def test_sinkhorn_plan_marginals() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 5, 12)
    dustbin = torch.tensor(0.5)
    plan = log_optimal_transport(scores, dustbin, iters=3).exp()
    assert plan.shape == (3, 6, 12)
    # the last update normalises the columns: every local feature distributes exactly its unit mass
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(3, 12))
    # with enough iterations the rows converge too: 1 per cluster, n - m = 7 for the dustbin
    plan = log_optimal_transport(scores, dustbin, iters=200).exp()
    torch.testing.assert_close(plan.sum(dim=2), torch.tensor([1.0] * 5 + [7.0]).expand(3, 6), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(3, 12), atol=1e-5, rtol=1e-5)


def test_sinkhorn_matches_plain_probability_space_iterations() -> None:
    """The log-space iterations are Sinkhorn's matrix scaling, done with exponentials."""
    torch.manual_seed(1)
    scores, dustbin = torch.randn(1, 3, 7), torch.tensor(-0.3)
    kernel = torch.cat([scores[0], dustbin.expand(1, 7)]).exp()  # [4, 7]
    rows, cols = torch.tensor([1.0, 1.0, 1.0, 4.0]), torch.ones(7)
    u, v = torch.ones(4), torch.ones(7)
    for _ in range(3):
        u = rows / (kernel @ v)
        v = cols / (kernel.T @ u)
    expected = u[:, None] * kernel * v[None, :]
    torch.testing.assert_close(log_optimal_transport(scores, dustbin, iters=3).exp()[0], expected)


def test_salad_matches_manual_computation() -> None:
    torch.manual_seed(0)
    salad = SALAD(8, num_clusters=3, cluster_dim=4, token_dim=5, hidden_dim=6, dropout=0.0).eval()
    fmap, token = torch.randn(2, 8, 3, 4), torch.randn(2, 8)
    out = salad((fmap, token))
    assert out.shape == (2, 3 * 4 + 5) and salad.descriptor_dim == 17

    def conv_mlp(seq, x):  # 1x1 conv, (dropout), relu, 1x1 conv on [C, N]
        first, last = seq[0], seq[-1]
        hidden = torch.relu(first.weight[:, :, 0, 0] @ x + first.bias[:, None])
        return last.weight[:, :, 0, 0] @ hidden + last.bias[:, None]

    expected = []
    for b in range(2):
        x = fmap[b].reshape(8, 12)
        feats, scores = conv_mlp(salad.cluster_features, x), conv_mlp(salad.score, x)  # [4, 12], [3, 12]
        plan = log_optimal_transport(scores[None], salad.dust_bin, 3).exp()[0, :3]  # [3, 12]
        clusters = torch.stack([(feats * plan[k]).sum(dim=1) for k in range(3)], dim=1)  # [4, 3]
        clusters = clusters / clusters.norm(dim=0, keepdim=True)
        t1, t2 = salad.token_features[0], salad.token_features[2]
        glob = t2(torch.relu(t1(token[b])))
        expected.append(torch.cat([glob / glob.norm(), clusters.flatten()]))
    torch.testing.assert_close(out, _unit_rows(torch.stack(expected)))


def test_salad_out_dim_projects_the_normalised_descriptor() -> None:
    """out_dim (MegaLoc): Linear with bias on the L2-normalised SALAD descriptor, L2-normalised again."""
    torch.manual_seed(0)
    plain = SALAD(8, num_clusters=3, cluster_dim=4, token_dim=5, hidden_dim=6, dropout=0.0).eval()
    projected = SALAD(8, num_clusters=3, cluster_dim=4, token_dim=5, hidden_dim=6, dropout=0.0, out_dim=7).eval()
    state = projected.state_dict()
    assert {"projection.weight", "projection.bias"} <= set(state) and state["projection.weight"].shape == (7, 17)
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("projection.")})
    fmap, token = torch.randn(2, 8, 3, 4), torch.randn(2, 8)
    with torch.no_grad():
        expected = _unit_rows(projected.projection(plain((fmap, token))))
        torch.testing.assert_close(projected((fmap, token)), expected)
    assert projected.descriptor_dim == 7 == SALAD.descriptor_dim_for(8, num_clusters=3, cluster_dim=4, token_dim=5, out_dim=7)
    assert SALAD(768, cluster_dim=256, out_dim=8448).descriptor_dim == 8448


def test_salad_paper_size_and_errors() -> None:
    salad = SALAD(768)
    assert salad.descriptor_dim == 8448
    assert {"dust_bin", "token_features.0.weight", "cluster_features.3.weight", "score.3.bias"} <= {n for n, _ in salad.named_parameters()}
    with pytest.raises(ValueError, match=r"SALAD needs the backbone's class token.*backbone.return_cls_token=true"):
        salad(torch.randn(1, 768, 23, 23))
    with pytest.raises(ValueError, match=r"more local features than clusters.*n=16 features for m=64 clusters"):
        salad((torch.randn(1, 768, 4, 4), torch.randn(1, 768)))
    with pytest.raises(ValueError, match=r"class token of shape \[B, 768\], got \(1, 384\)"):
        salad((torch.randn(1, 768, 9, 9), torch.randn(1, 384)))


# ------------------------------------------------------------------------------ every aggregator


MAP = (5, 3)  # the map the aggregators with a fixed map size are built for here


def _zoo(channels: int = 16) -> dict[str, torch.nn.Module]:
    """A small instance of every registered aggregator (its ``spec.small`` arguments)."""
    zoo = {}
    for name, cls in registry().items():
        torch.manual_seed(0)
        args = dict(cls.spec.small)
        if cls.spec.fixed_map_size:
            args.update(zip(cls.spec.fixed_map_size, MAP))
        zoo[name] = cls(channels, **args)
    return zoo


def _inputs(name: str, batch: int, height: int, width: int, channels: int = 16):
    fmap = torch.randn(batch, channels, height, width)
    return (fmap, torch.randn(batch, channels)) if registry()[name].spec.needs_cls_token else fmap


def test_every_aggregator_module_is_registered() -> None:
    """The registry finds every aggregator of the package by itself (no list to keep): the classes above
    and any other ``Aggregator`` with a ``spec`` in a module of vprlab.models.aggregators."""
    assert {"avg", "boq", "convap", "cosplace", "gem", "mac", "mixvpr", "netvlad", "salad"} <= set(registry())
    assert registry()["boq"] is BoQ and registry()["salad"] is SALAD
    for name, cls in registry().items():
        assert cls.spec.name == name and cls.spec.paper and cls.spec.descriptor


@pytest.mark.parametrize("name", sorted(registry()))
def test_any_batch_and_map_size(name: str) -> None:
    aggregator = _zoo()[name].eval()
    sizes = [MAP] if registry()[name].spec.fixed_map_size else [MAP, (2, 7), (6, 6)]
    for batch in (1, 3):
        for height, width in sizes:
            out = aggregator(_inputs(name, batch, height, width))
            out = out[0] if isinstance(out, tuple) else out
            assert out.shape == (batch, aggregator.descriptor_dim) and out.dtype == torch.float32
            torch.testing.assert_close(out.norm(dim=1), torch.ones(batch))
    # the batch does not mix: each descriptor depends on its own image only, unless the aggregator
    # declares that it does (cross-image encoders), and then it really does
    x = _inputs(name, 3, *sizes[0])
    first = (x[0][:1], x[1][:1]) if isinstance(x, tuple) else x[:1]
    full, alone = aggregator(x), aggregator(first)
    full, alone = (full[0], alone[0]) if isinstance(full, tuple) else (full, alone)
    if aggregator.mixes_batch:
        assert (full[:1] - alone).abs().max() > 1e-4
    else:
        torch.testing.assert_close(full[:1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(registry()))
def test_autocast(name: str, dtype: torch.dtype) -> None:
    aggregator = _zoo()[name].eval()
    x = _inputs(name, 2, 5, 3)
    with torch.no_grad():
        reference = aggregator(x)
        with torch.autocast("cpu", dtype=dtype):
            low = aggregator(x)
    reference, low = (reference[0], low[0]) if isinstance(reference, tuple) else (reference, low)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low.norm(dim=1), torch.ones(2))
    assert F.cosine_similarity(low, reference).min() > 0.98


@pytest.mark.parametrize("name", sorted(registry()))
def test_clear_errors_for_wrong_inputs(name: str) -> None:
    aggregator = _zoo()[name]
    needs_token = registry()[name].spec.needs_cls_token
    wrong_channels = _inputs(name, 1, *MAP, channels=12)
    with pytest.raises(ValueError, match=r"in_channels|class token of shape"):
        aggregator(wrong_channels)
    if not needs_token:
        with pytest.raises(ValueError, match=r"backbone returns a tuple.*return_cls_token=false"):
            aggregator((torch.randn(1, 16, 5, 3), torch.randn(1, 16)))
    with pytest.raises(ValueError, match="positive integer"):
        type(aggregator)(0)
