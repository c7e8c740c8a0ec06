"""The BoQ eval fast path (cached query context, fused attention) computes what the training path computes."""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda

from vprlab.models.aggregators import BoQ


def _reference(boq: BoQ, x: torch.Tensor) -> torch.Tensor:
    """The training path: grad enabled, attention maps requested, context recomputed."""
    with torch.enable_grad():
        return boq(x, return_attention=True)[0].detach()


def test_fast_path_equals_training_path():
    torch.manual_seed(0)
    boq = BoQ(in_channels=32, proj_channels=128, num_queries=8, num_layers=2, row_dim=4).eval()
    x = torch.randn(3, 32, 5, 6)
    expected = _reference(boq, x)
    with torch.inference_mode():
        fast, attns = boq(x, return_attention=False)
        again, _ = boq(x, return_attention=False)  # second call uses the cached context
    assert attns == []
    assert (fast - expected).abs().max() <= 1e-5
    assert torch.equal(fast, again)
    assert all(block._context_cache is not None for block in boq.boqs)


def test_cache_follows_weight_changes():
    torch.manual_seed(0)
    boq = BoQ(in_channels=16, proj_channels=64, num_queries=4, num_layers=1, row_dim=2)
    x = torch.randn(2, 16, 4, 4)
    boq.eval()
    with torch.no_grad():
        before = boq(x, return_attention=False)[0]
    # an optimizer step changes the weights in place
    boq.train()
    opt = torch.optim.SGD(boq.parameters(), lr=0.5)
    boq(x)[0].sum().backward()
    opt.step()
    boq.eval()
    with torch.no_grad():
        after = boq(x, return_attention=False)[0]
    assert (after - _reference(boq, x)).abs().max() <= 1e-5
    assert not torch.allclose(before, after)
    # loading other weights too
    other = BoQ(in_channels=16, proj_channels=64, num_queries=4, num_layers=1, row_dim=2).eval()
    boq.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = boq(x, return_attention=False)[0]
    assert (loaded - _reference(other, x)).abs().max() <= 1e-5


def test_training_mode_never_uses_a_stale_cache():
    boq = BoQ(in_channels=16, proj_channels=64, num_queries=4, num_layers=1, row_dim=2).eval()
    with torch.no_grad():
        boq(torch.randn(1, 16, 3, 3), return_attention=False)
    boq.train()
    out = boq(torch.randn(1, 16, 3, 3))[0]
    assert boq.boqs[0]._context_cache is None and out.requires_grad


def test_fp32_cpu_inference_takes_the_onednn_block_and_matches_the_module_path(monkeypatch):
    from vprlab.models.aggregators.boq import BoQBlock

    calls = []
    real = BoQBlock._cpu_inference
    monkeypatch.setattr(BoQBlock, "_cpu_inference", lambda self, t: calls.append(t.shape) or real(self, t))
    for proj, queries in ((32, 5), (192, 8)):  # one head (below 64 channels), three heads
        torch.manual_seed(proj)
        boq = BoQ(in_channels=24, proj_channels=proj, num_queries=queries, num_layers=2, row_dim=3).eval()
        x = torch.randn(4, 24, 6, 5)
        with torch.inference_mode():
            fast = boq(x, return_attention=False)[0]
        assert (fast - _reference(boq, x)).abs().max() <= 1e-5
    assert calls == [(4, 30, 32)] * 2 + [(4, 30, 192)] * 2
    calls.clear()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        boq(x, return_attention=False)
    with torch.inference_mode():
        boq(x, return_attention=True)
    assert calls == []  # bf16 autocast and attention maps take the module path


def test_cached_query_projection_follows_the_cross_attention_weights():
    torch.manual_seed(1)
    boq = BoQ(in_channels=16, proj_channels=64, num_queries=4, num_layers=1, row_dim=2).eval()
    x = torch.randn(2, 16, 4, 4)
    with torch.inference_mode():
        before = boq(x, return_attention=False)[0]
    with torch.no_grad():  # only the query projection changes: the query context stays cached
        boq.boqs[0].cross_attn.in_proj_weight[:64].mul_(-2.0)
    with torch.inference_mode():
        after = boq(x, return_attention=False)[0]
    assert not torch.allclose(before, after)
    assert (after - _reference(boq, x)).abs().max() <= 1e-5


@pytest.mark.gpu
@requires_cuda
def test_boq_fast_path_on_cuda_equals_the_training_path():
    torch.manual_seed(0)
    boq = BoQ(in_channels=64, proj_channels=128, num_queries=8, num_layers=2, row_dim=4).cuda().eval()
    x = torch.randn(4, 64, 7, 7, device="cuda")
    expected = _reference(boq, x)
    with torch.inference_mode():
        fast = boq(x, return_attention=False)[0]
    assert (fast - expected).abs().max() <= 1e-4  # TF32 may be on for cuDNN/cuBLAS
