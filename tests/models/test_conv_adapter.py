"""CricaVPR's convolutional adapter (models/backbones/conv_adapter.py) and DinoV2Backbone(conv_adapters=True):
the adapter against a plain-op computation of its steps, a new adapter changes nothing, and the
backbone runs it inside every block's second LayerScale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vprlab.models.backbones.conv_adapter import ConvAdapter
from vprlab.models.backbones.dinov2 import DinoV2Backbone

SMALL_DINO = "vit_small_patch14_dinov2"


def randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.is_floating_point():
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=generator))


def conv_bn_relu(x: torch.Tensor, sd: dict, p: str, padding: int) -> torch.Tensor:
    x = F.conv2d(x, sd[p + "conv.weight"], sd[p + "conv.bias"], padding=padding)
    x = (x - sd[p + "bn.running_mean"][:, None, None]) / torch.sqrt(sd[p + "bn.running_var"][:, None, None] + 1e-3)
    return torch.relu(x * sd[p + "bn.weight"][:, None, None] + sd[p + "bn.bias"][:, None, None])


def reference_adapter(y: torch.Tensor, sd: dict, p: str, grid: tuple[int, int]) -> torch.Tensor:
    """The adapter's steps with plain ops (eval-mode BatchNorm)."""
    h = torch.relu(F.linear(y, sd[p + "down.weight"], sd[p + "down.bias"]))
    batch, _, hidden = h.shape
    image = h[:, 1:].permute(0, 2, 1).reshape(batch, hidden, *grid)
    b1 = conv_bn_relu(image, sd, p + "branch1x1.", 0)
    b3 = conv_bn_relu(conv_bn_relu(image, sd, p + "branch3x3.0.", 0), sd, p + "branch3x3.1.", 1)
    b5 = conv_bn_relu(conv_bn_relu(image, sd, p + "branch5x5.0.", 0), sd, p + "branch5x5.1.", 2)
    conv = torch.cat([b1, b3, b5], dim=1).reshape(batch, hidden, -1).permute(0, 2, 1)
    out = torch.cat([h[:, :1] * 2, conv + h[:, 1:]], dim=1)  # the class row gets h twice
    return 0.2 * F.linear(out, sd[p + "up.weight"], sd[p + "up.bias"])


def test_adapter_matches_its_steps_on_a_non_square_grid() -> None:
    adapter = ConvAdapter(768).eval()
    assert sum(p.numel() for p in adapter.parameters()) > 0 and adapter.hidden == 384
    randomise(adapter, 0)
    y = torch.randn(2, 1 + 3 * 5, 768, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = adapter(y, (3, 5))
        expected = reference_adapter(y, adapter.state_dict(), "", (3, 5))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"1 class token \+ 4x4 patch tokens, got 16 tokens"):
        adapter(y, (4, 4))
    with pytest.raises(ValueError, match="must add up to its hidden width 384"):
        ConvAdapter(768, branch1x1=100)


def test_backbone_adapters_start_as_zero_update_and_train() -> None:
    torch.manual_seed(0)
    plain = DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=1, apply_final_norm=True).eval()
    adapted = DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=1, apply_final_norm=True,
                             conv_adapters=True).eval()
    extra = set(adapted.state_dict()) - set(plain.state_dict())
    assert extra and all(".adapter." in k for k in extra) and "dino.blocks.0.adapter.branch5x5.1.bn.running_var" in extra
    adapted.load_state_dict({**adapted.state_dict(), **plain.state_dict()})
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), plain(x))  # up = 0: no change before training
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert "dino.blocks.0.adapter.down.weight" in trainable and "dino.blocks.0.attn.qkv.weight" not in trainable
    assert adapted.forward_frozen(x) is None  # trainable adapters in the early blocks: no frozen shortcut
    with pytest.raises(ValueError, match="without register tokens"):
        DinoV2Backbone("vit_small_patch14_reg4_dinov2", pretrained=False, conv_adapters=True)


def test_backbone_runs_the_adapter_inside_the_second_layer_scale() -> None:
    torch.manual_seed(0)
    backbone = DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=2, apply_final_norm=True,
                              conv_adapters=True).eval()
    randomise(backbone, 3)
    sd = backbone.dino.state_dict()
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        grid = backbone(x)
        tokens = backbone.embed(x)
        for i in range(len(backbone.dino.blocks)):
            p = f"blocks.{i}."
            attn = backbone.dino.blocks[i].attn  # attention itself is timm's, checked in test_zoo_backbones
            h = F.layer_norm(tokens, (384,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
            tokens = tokens + sd[p + "ls1.gamma"] * attn(h)
            h = F.layer_norm(tokens, (384,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
            mlp = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                           sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
            tokens = tokens + sd[p + "ls2.gamma"] * (mlp + reference_adapter(h, sd, p + "adapter.", (2, 3)))
        tokens = F.layer_norm(tokens, (384,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    torch.testing.assert_close(grid, tokens[:, 1:].transpose(1, 2).reshape(2, 384, 2, 3), atol=1e-4, rtol=1e-4)
