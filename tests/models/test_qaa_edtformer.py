"""The QAA and EDTformer aggregators and DinoV2Backbone's parallel adapters (EDTformer's LoPA), each
against a computation written out with plain torch ops on the modules' own parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from release_reference import _attention, _layer_norm

from vprlab.models.aggregators import EDTformer
from vprlab.models.aggregators.qaa import QAA
from vprlab.models.backbones import DinoV2Backbone

SMALL_DINO = "vit_small_patch14_dinov2"


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in module.state_dict().items()}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.5 if parameter.dim() > 1 else 0.2))


def _plain_sinkhorn(scores: torch.Tensor, dustbin: torch.Tensor, iters: int) -> torch.Tensor:
    """SALAD's Sinkhorn in probability space: masses 1 per cluster, n - m for the dustbin, 1 per feature."""
    batch, m, n = scores.shape
    kernel = torch.cat([scores, dustbin.expand(batch, 1, n)], dim=1).exp()
    rows = torch.ones(m + 1)
    rows[-1] = n - m
    u, v = torch.ones(batch, m + 1), torch.ones(batch, n)
    for _ in range(iters):
        u = rows / (kernel * v[:, None, :]).sum(2)
        v = 1 / (kernel * u[:, :, None]).sum(1)
    return (u[:, :, None] * kernel * v[:, None, :])[:, :m]


def ref_qaa(module: QAA, x: torch.Tensor, heads: int, out_norm: bool, sinkhorn: int) -> torch.Tensor:
    sd = _state(module)

    def queries(p: str) -> torch.Tensor:
        q = sd[p + ".queries"]
        return _layer_norm(q + _attention(q, q, q, sd, p + ".self_attn", heads)[0], sd, p + ".norm")

    codebook = queries("feature_queries")[0]  # [Q, L]
    local = x.flatten(2).transpose(1, 2)
    q = queries("score_queries").expand(x.shape[0], -1, -1)
    out = _layer_norm(_attention(q, local, local, sd, "score.cross_attn", heads)[0], sd, "score.norm")
    out = out @ sd["score.proj.weight"][:, :, 0].T + sd["score.proj.bias"]  # [B, Q, M]
    if out_norm:
        out = _layer_norm(out, sd, "score.out_norm")
    p = out.transpose(1, 2)
    if sinkhorn:
        p = _plain_sinkhorn(p, sd["dust_bin"], sinkhorn)
    v = torch.stack([codebook.T @ p[b].T for b in range(x.shape[0])])  # [B, L, M]
    v = v / v.norm(dim=1, keepdim=True)
    flat = v.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("out_norm, sinkhorn", [(False, 0), (True, 0), (False, 3)])
def test_qaa_matches_its_formula(out_norm: bool, sinkhorn: int) -> None:
    torch.manual_seed(0)
    module = QAA(8, num_clusters=3, cluster_dim=4, num_queries=6, feature_heads=2, score_heads=2,
                 out_norm=out_norm, sinkhorn_iters=sinkhorn).eval()
    _randomise(module, 1)
    x = torch.randn(2, 8, 3, 4)
    with torch.no_grad():
        out = module(x)
    assert out.shape == (2, 12) and module.descriptor_dim == 12
    torch.testing.assert_close(out, ref_qaa(module, x, 2, out_norm, sinkhorn), atol=1e-5, rtol=1e-4)


def test_qaa_scores_and_errors() -> None:
    module = QAA(8, num_clusters=3, cluster_dim=4, num_queries=6, feature_heads=2, score_heads=2).eval()
    with torch.no_grad():
        scores = module.scores(torch.randn(2, 8, 3, 4))
    assert scores.shape == (2, 3, 6)
    with pytest.raises(ValueError, match="in_channels=8 is not divisible by score_heads=3"):
        QAA(8, score_heads=3, feature_heads=2, cluster_dim=4)
    with pytest.raises(ValueError, match="cluster_dim=4 is not divisible by feature_heads=3"):
        QAA(8, score_heads=2, feature_heads=3, cluster_dim=4)
    with pytest.raises(ValueError, match="sinkhorn_iters must be an integer >= 0"):
        QAA(8, feature_heads=2, score_heads=2, cluster_dim=4, sinkhorn_iters=-1)


def test_edtformer_matches_its_formula() -> None:
    torch.manual_seed(0)
    module = EDTformer(8, num_queries=5, num_layers=2, num_heads=2, channel_dim=3, row_dim=4, dropout=0.1).eval()
    _randomise(module, 2)
    fmap, cls = torch.randn(2, 8, 3, 2), torch.randn(2, 8)
    with torch.no_grad():
        out = module((fmap, cls))
    sd = _state(module)
    memory = torch.cat([cls[:, None], fmap.flatten(2).transpose(1, 2)], 1) @ sd["input_proj.weight"].T + sd["input_proj.bias"]
    q = sd["queries"].expand(2, -1, -1)
    for i in range(2):
        p = f"layers.{i}"
        q = _layer_norm(q + _attention(q, q, q, sd, p + ".self_attn", 2)[0], sd, p + ".norm1")
        q = _layer_norm(q + _attention(q, memory, memory, sd, p + ".multihead_attn", 2)[0], sd, p + ".norm2")
    q = q @ sd["channel_proj.weight"].T + sd["channel_proj.bias"]  # [B, 5, 3]
    expected = (q.transpose(1, 2) @ sd["row_proj.weight"].T + sd["row_proj.bias"]).flatten(1)  # index d * 4 + r
    torch.testing.assert_close(out, F.normalize(expected, dim=1), atol=1e-5, rtol=1e-4)
    assert out.shape == (2, 12) and module.descriptor_dim == 12
    with pytest.raises(ValueError, match="return_cls_token=true"):
        module(fmap)
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        EDTformer(8, num_heads=3)


def test_dinov2_parallel_adapters() -> None:
    """adapter_dim: side stream y = adapter_i(y + block_i output), starting at the embedded tokens; the
    final norm and the outputs read y; only the adapters train when no block does."""
    torch.manual_seed(0)
    backbone = DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=0, return_cls_token=True,
                              apply_final_norm=True, adapter_dim=3, adapter_scale=0.5).eval()
    assert all(torch.equal(a.up.weight, torch.zeros(384, 3)) for a in backbone.adapters)  # EDTformer's init
    _randomise(backbone.adapters, 3)
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        grid, cls = backbone(x)
        tokens = backbone.embed(x)
        side = tokens
        for block, adapter in zip(backbone.dino.blocks, backbone.adapters):
            tokens = block(tokens)
            side = side + tokens
            side = side + 0.5 * F.linear(F.gelu(F.linear(side, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias)
        side = F.layer_norm(side, (384,), backbone.dino.norm.weight, backbone.dino.norm.bias, eps=1e-6)
    torch.testing.assert_close(cls, side[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grid, side[:, 1:].transpose(1, 2).reshape(2, 384, 2, 3), atol=1e-5, rtol=1e-5)
    trainable = {n.split(".")[0] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"adapters"}
    assert backbone.forward_frozen(x) is None  # no frozen/trainable split with a side stream
    backbone.train()
    grid, cls = backbone(x)
    (grid.sum() + cls.sum()).backward()
    assert backbone.adapters[0].down.weight.grad is not None and backbone.dino.blocks[0].attn.qkv.weight.grad is None
    assert math.isfinite(float(backbone.adapters[0].down.weight.grad.norm()))
    with pytest.raises(ValueError, match="adapter_dim must be a positive integer"):
        DinoV2Backbone(SMALL_DINO, pretrained=False, adapter_dim=0)
