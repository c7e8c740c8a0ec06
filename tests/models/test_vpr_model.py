"""VPRModel: strict loading of the released BoQ checkpoint layouts, build_model, and
forward/backward for every backbone x aggregator combination."""

from __future__ import annotations

import pytest
import torch
from release_reference import random_state_dict, read_layout

from vprlab.models import VPRModel, build_model
from vprlab.models.aggregators import BoQ, GeM
from vprlab.models.backbones import DinoV2Backbone, ResNetBackbone


@pytest.mark.parametrize(
    "layout_file, make_model, input_size, dim",
    [
        ("resnet50_16384.tsv", lambda: VPRModel(ResNetBackbone("resnet50", pretrained=False), BoQ(1024, 512, 64, 2, 32)), 64, 16384),
        ("dinov2_12288.tsv", lambda: VPRModel(DinoV2Backbone("vit_base_patch14_dinov2", pretrained=False), BoQ(768, 384, 64, 2, 32)), 70, 12288),
    ],
    ids=["resnet50", "dinov2"],
)
def test_released_layout_loads_strictly(layout_file, make_model, input_size: int, dim: int) -> None:
    layout = read_layout(layout_file)
    model = make_model()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    state = random_state_dict(layout)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        desc, attns = model.forward_with_attention(torch.randn(2, 3, input_size, input_size))
    assert desc.shape == (2, dim) and model.descriptor_dim == dim
    assert torch.isfinite(desc).all()
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    num_patches = (input_size // model.backbone.stride) ** 2
    assert [a.shape for a in attns] == [(2, 64, num_patches)] * 2
    assert torch.equal(model.aggregator.boqs[1].queries, state["aggregator.boqs.1.queries"])


BACKBONES = {
    "resnet18": ({"_target_": "vprlab.models.backbones.ResNetBackbone", "model_name": "resnet18", "pretrained": False,
                  "train_image_size": [48, 64], "eval_image_size": [64, 64]}, 64),
    "resnet18_full": ({"_target_": "vprlab.models.backbones.ResNetBackbone", "model_name": "resnet18", "pretrained": False,
                       "crop_last_block": False, "num_trainable_blocks": 2}, 64),
    "dinov2_small": ({"_target_": "vprlab.models.backbones.DinoV2Backbone", "model_name": "vit_small_patch14_dinov2",
                      "pretrained": False, "num_trainable_blocks": 1}, 42),
}
AGGREGATORS = {
    "boq": {"_target_": "vprlab.models.aggregators.BoQ", "proj_channels": 64, "num_queries": 4, "num_layers": 2, "row_dim": 2},
    "gem": {"_target_": "vprlab.models.aggregators.GeM"},
}


@pytest.mark.parametrize("aggregator_name", sorted(AGGREGATORS))
@pytest.mark.parametrize("backbone_name", sorted(BACKBONES))
def test_build_model_forward_backward(backbone_name: str, aggregator_name: str) -> None:
    torch.manual_seed(0)
    backbone_cfg, size = BACKBONES[backbone_name]
    model = build_model(backbone_cfg, AGGREGATORS[aggregator_name]).train()
    assert model.aggregator.in_channels == model.backbone.out_channels
    desc, attns = model.forward_with_attention(torch.randn(2, 3, size, size))
    assert desc.shape == (2, model.descriptor_dim)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert (attns is None) == (aggregator_name == "gem")
    if isinstance(model.backbone, ResNetBackbone):  # VPRModel.train() reaches the frozen BatchNorm rule
        assert not model.backbone.net[1].training and model.backbone.net[-1][0].bn1.training

    (desc * torch.randn_like(desc)).sum().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name
    assert any(p.requires_grad for p in model.backbone.parameters())
    assert any(not p.requires_grad for p in model.backbone.parameters())


def test_gem_pools_generalised_mean() -> None:
    gem = GeM(in_channels=3, p=2.0)
    x = torch.rand(2, 3, 4, 5) + 0.1
    expected = x.pow(2).mean(dim=(2, 3)).sqrt()
    torch.testing.assert_close(gem(x), expected / expected.norm(dim=1, keepdim=True))
    assert gem.descriptor_dim == 3 and gem.p.requires_grad


def test_vpr_model_accepts_tensor_or_tuple_aggregators() -> None:
    backbone = torch.nn.Conv2d(3, 4, 1)
    backbone.out_channels = 4
    model = VPRModel(backbone, GeM(4))
    desc, attns = model.forward_with_attention(torch.rand(1, 3, 5, 5))
    assert desc.shape == (1, 4) and attns is None
    assert torch.equal(model(torch.ones(1, 3, 2, 2)), model.forward_with_attention(torch.ones(1, 3, 2, 2))[0])
