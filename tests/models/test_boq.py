"""BoQ against an independent step-by-step computation from torch primitives (reference README)."""

from __future__ import annotations

import pytest
import torch
from release_reference import reference_boq

from vprlab.models.aggregators import BoQ


@pytest.mark.parametrize(
    "proj_channels, heads, train_mode",
    [(128, 2, False), (128, 2, True), (32, 1, False)],
)
def test_boq_matches_step_by_step_reference(proj_channels: int, heads: int, train_mode: bool) -> None:
    torch.manual_seed(0)
    num_layers, num_queries, row_dim = 2, 8, 4
    model = BoQ(in_channels=16, proj_channels=proj_channels, num_queries=num_queries,
                num_layers=num_layers, row_dim=row_dim)
    # Non-trivial LayerNorm affine parameters so a swapped norm would show.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.train(train_mode)
    x = torch.randn(2, 16, 5, 6)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        desc, attns = model(x)
        ref_desc, ref_attns = reference_boq(x, sd, num_layers, heads)

    assert desc.shape == (2, proj_channels * row_dim) == (2, model.descriptor_dim)
    torch.testing.assert_close(desc, ref_desc, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert len(attns) == num_layers
    for attn, ref_attn in zip(attns, ref_attns):
        assert attn.shape == (2, num_queries, 30)
        torch.testing.assert_close(attn, ref_attn, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, num_queries), atol=1e-5, rtol=0)


def test_boq_parameter_names_and_heads() -> None:
    model = BoQ(in_channels=8, proj_channels=128, num_queries=4, num_layers=2, row_dim=2)
    top = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert top == {"proj_c", "norm_input", "boqs", "fc"}
    block = {name.split(".")[2] for name, _ in model.named_parameters() if name.startswith("boqs.1.")}
    assert block == {"encoder", "queries", "self_attn", "norm_q", "cross_attn", "norm_out"}
    assert model.boqs[0].encoder.self_attn.num_heads == 2
    assert model.boqs[0].cross_attn.num_heads == 2
    assert model.boqs[0].encoder.linear1.out_features == 4 * 128
    assert model.fc.in_features == 2 * 4


def test_boq_default_projection_is_half_the_input_width() -> None:
    assert BoQ(in_channels=256, proj_channels=None, num_queries=2, num_layers=1, row_dim=2).proj_channels == 128


def test_boq_rejects_channels_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match=r"proj_channels=200 is not divisible by its number of attention heads 3"):
        BoQ(in_channels=8, proj_channels=200)
    with pytest.raises(ValueError, match="num_queries must be a positive integer"):
        BoQ(in_channels=8, proj_channels=64, num_queries=0)


def test_boq_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = BoQ(in_channels=8, proj_channels=64, num_queries=4, num_layers=2, row_dim=2)
    x = torch.randn(3, 8, 3, 3, requires_grad=True)
    desc, _ = model(x)
    (desc * torch.randn_like(desc)).sum().backward()
    assert x.grad is not None
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
