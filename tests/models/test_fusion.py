"""BatchNorm folding for inference: same outputs, fewer layers, only where the forward order is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vprlab.models.fusion import fold_batchnorm
from vprlab.models.vpr_model import build_model


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters far from the identity, so folding has work to do."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(0.2 * torch.randn(bn.num_features, generator=generator))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=generator))
            bn.weight.copy_(1 + 0.2 * torch.randn(bn.num_features, generator=generator))
            bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=generator))


@pytest.mark.parametrize("model_name, convs", [("resnet18", 1 + 8 * 2 + 3), ("resnet50", 1 + 13 * 3 + 3)])
def test_folded_resnet_boq_gives_the_same_descriptors(model_name, convs):
    """ResNet18 (BasicBlock) to layer4 and ResNet50 (Bottleneck) cropped after layer3, as BoQ uses it."""
    torch.manual_seed(0)
    backbone = {"_target_": "vprlab.models.backbones.resnet.ResNetBackbone", "model_name": model_name, "pretrained": False}
    if model_name == "resnet18":
        backbone["crop_last_block"] = False
    model = build_model(backbone, {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": 32,
                                   "num_queries": 4, "num_layers": 1, "row_dim": 4}).eval()
    randomise_batchnorm(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model) == batchnorms == convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
        model.to(memory_format=torch.channels_last)  # as evaluate.py runs it
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), expected, rtol=0, atol=1e-6)


class ReorderedBlock(nn.Module):
    """A conv and a BatchNorm registered one after the other but not applied in that order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_only_known_orders_are_folded_and_training_models_are_refused():
    model = nn.Sequential(ReorderedBlock(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    randomise_batchnorm(model)
    with pytest.raises(ValueError, match=r"fold_batchnorm is for inference: call model.eval\(\) first"):
        fold_batchnorm(model)
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    assert fold_batchnorm(model) == 1  # only the last pair: ReLU sits between the first, the block's order is unknown
    assert isinstance(model[0].bn, nn.BatchNorm2d) and isinstance(model[3], nn.BatchNorm2d) and isinstance(model[5], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
