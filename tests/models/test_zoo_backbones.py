"""The backbone zoo: ResNet/ResNeXt variants, DINOv2 sizes, registers, class token and final norm,
and any timm model (CNN stage or ViT token grid). Never downloads: pretrained=False, or a failing stub."""

from __future__ import annotations

from unittest import mock

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vprlab.models.backbones import (
    DinoV2Backbone,
    ResNetBackbone,
    TimmBackbone,
    VGGBackbone,
)
from vprlab.models.backbones.dinov2 import interpolate_pos_embed, release_to_timm_keys

SMALL_DINO = "vit_small_patch14_dinov2"
SMALL_DINO_REG = "vit_small_patch14_reg4_dinov2"


# -------------------------------------------------------------------------------- ResNet / ResNeXt


@pytest.mark.parametrize(
    "name, crop, channels, stride",
    [("resnet34", True, 256, 16), ("resnet34", False, 512, 32), ("resnext50_32x4d", True, 1024, 16), ("resnext50_32x4d", False, 2048, 32)],
)
def test_resnet_family_channels_and_stride(name: str, crop: bool, channels: int, stride: int) -> None:
    backbone = ResNetBackbone(name, pretrained=False, crop_last_block=crop, num_trainable_blocks=1).eval()
    assert (backbone.out_channels, backbone.stride) == (channels, stride)
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 32)).shape == (1, channels, 64 // stride, 32 // stride)
    trained = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trained == {"7" if not crop else "6"}  # only the last kept stage


def test_resnext_loads_a_torchvision_state_dict(tmp_path) -> None:
    import torchvision

    source = torchvision.models.resnext50_32x4d(weights=None)
    torch.save(source.state_dict(), tmp_path / "resnext.pth")
    backbone = ResNetBackbone("resnext50_32x4d", pretrained=True, weights_path=tmp_path / "resnext.pth")
    torch.testing.assert_close(backbone.net[6][2].conv2.weight, source.layer3[2].conv2.weight)
    assert backbone.net[6][0].conv2.groups == 32


# -------------------------------------------------------------------------------------------- VGG16


@pytest.fixture(scope="module")
def vgg() -> VGGBackbone:
    torch.manual_seed(0)
    return VGGBackbone("vgg16", pretrained=False).eval()


def test_vgg16_is_torchvision_features_up_to_conv5_3(vgg: VGGBackbone, tmp_path) -> None:
    """features[:29] of torchvision's vgg16 (last ReLU and max-pool dropped): 512 channels at stride 16;
    a torchvision vgg16 state dict (classifier included) loads, conv5 alone trains by default."""
    import torchvision

    source = torchvision.models.vgg16(weights=None).eval()
    torch.save(source.state_dict(), tmp_path / "vgg16.pth")
    loaded = VGGBackbone("vgg16", pretrained=True, weights_path=tmp_path / "vgg16.pth").eval()
    assert (loaded.out_channels, loaded.stride) == (512, 16)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.features[:29](x))
        assert (source.features[:29](x) < 0).any()  # no final ReLU
    assert list(vgg.state_dict())[-2:] == ["net.28.weight", "net.28.bias"]
    trainable = {n.split(".")[1] for n, p in vgg.named_parameters() if p.requires_grad}
    assert trainable == {"24", "26", "28"}
    with pytest.raises(ValueError, match=r"num_trainable_blocks=6 is out of range for vgg16; use 0\.\.5"):
        VGGBackbone("vgg16", pretrained=False, num_trainable_blocks=6)


def test_vgg16_matconvnet_input(vgg: VGGBackbone) -> None:
    """pixel_mean: ImageNet normalisation undone, clamped to [0, 1], x 255, mean pixel subtracted."""
    matconvnet = VGGBackbone("vgg16", pretrained=False, pixel_mean=[120.0, 110.0, 100.0]).eval()
    matconvnet.net.load_state_dict(vgg.net.state_dict())
    assert torch.equal(matconvnet.state_dict()["pixel_mean"], torch.tensor([120.0, 110.0, 100.0]))
    images = torch.rand(1, 3, 32, 32)
    images[0, 0, 0, 0] = 1.5  # out of range: clamped
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected_input = images.clamp(0, 1) * 255 - torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(matconvnet((images - mean) / std), vgg.net(expected_input), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match=r"pixel_mean must hold 3 values"):
        VGGBackbone("vgg16", pretrained=False, pixel_mean=[1.0])


# ------------------------------------------------------------------------------------------ DINOv2


@pytest.fixture(scope="module")
def dino_cls() -> DinoV2Backbone:
    torch.manual_seed(0)
    backbone = DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=2, return_cls_token=True,
                              apply_final_norm=True).eval()
    with torch.no_grad():
        backbone.dino.pos_embed.normal_(std=0.5)
        backbone.dino.norm.weight.normal_()
    return backbone


def test_dinov2_class_token_and_final_norm(dino_cls: DinoV2Backbone) -> None:
    dino = dino_cls.dino
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        grid, cls = dino_cls(x)
        tokens = dino_cls.embed(x)
        for block in dino.blocks:
            tokens = block(tokens)
        tokens = F.layer_norm(tokens, (384,), dino.norm.weight, dino.norm.bias, eps=dino.norm.eps)
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grid, tokens[:, 1:].transpose(1, 2).reshape(2, 384, 2, 3), atol=1e-5, rtol=1e-5)
    trainable = {n for n, p in dino_cls.named_parameters() if p.requires_grad}
    assert {"dino.norm.weight", "dino.norm.bias"} <= trainable  # the norm trains with the last blocks
    assert not any(n.startswith("dino.blocks.9.") for n in trainable)


def test_dinov2_rounds_to_patch_multiples_and_drops_the_mask_token(dino_cls: DinoV2Backbone) -> None:
    """round_to_patch_multiple (MegaLoc): any size, resized to the nearest multiples of 14 (bilinear,
    antialiased) first; keep_mask_token=False: no mask_token in the state dict."""
    rounding = DinoV2Backbone(SMALL_DINO, pretrained=False, return_cls_token=True, apply_final_norm=True,
                              round_to_patch_multiple=True, keep_mask_token=False, eval_image_size=None).eval()
    assert "mask_token" not in {k.split(".", 1)[1] for k in rounding.state_dict()}
    rounding.load_state_dict({k: v for k, v in dino_cls.state_dict().items() if k != "dino.mask_token"})
    x = torch.randn(1, 3, 45, 33)  # -> 42 x 28
    with torch.no_grad():
        grid, cls = rounding(x)
        resized = F.interpolate(x, size=(42, 28), mode="bilinear", align_corners=False, antialias=True)
        expected_grid, expected_cls = dino_cls(resized)
    assert grid.shape == (1, 384, 3, 2)
    torch.testing.assert_close(grid, expected_grid)
    torch.testing.assert_close(cls, expected_cls)
    assert DinoV2Backbone.config_patch_size({"round_to_patch_multiple": True}) is None
    assert DinoV2Backbone.config_patch_size({}) == 14


def test_dinov2_defaults_unchanged() -> None:
    backbone = DinoV2Backbone(SMALL_DINO, pretrained=False)
    assert not backbone.return_cls_token and not backbone.apply_final_norm
    assert not backbone.dino.norm.weight.requires_grad
    assert isinstance(backbone(torch.randn(1, 3, 28, 28)), torch.Tensor)


def test_dinov2_registers_forward_matches_release_recipe() -> None:
    """Register models: patch positions resized like the release, registers between the class token
    and the patches, dropped from the output."""
    torch.manual_seed(0)
    backbone = DinoV2Backbone(SMALL_DINO_REG, pretrained=False, num_trainable_blocks=1, return_cls_token=True).eval()
    dino = backbone.dino
    assert backbone.num_register_tokens == 4 and dino.pos_embed.shape == (1, 37 * 37, 384)
    with torch.no_grad():
        dino.pos_embed.normal_(std=0.5)
        dino.reg_token.normal_()
        x = torch.randn(1, 3, 42, 28)
        grid, cls = backbone(x)
        patches = F.conv2d(x, dino.patch_embed.proj.weight, dino.patch_embed.proj.bias, stride=14).flatten(2).transpose(1, 2)
        pos = interpolate_pos_embed(dino.pos_embed, 3, 2, num_prefix_positions=0)
        tokens = torch.cat([dino.cls_token, dino.reg_token, patches + pos], dim=1)
        for block in dino.blocks:
            tokens = block(tokens)
    assert grid.shape == (1, 384, 3, 2)
    torch.testing.assert_close(grid, tokens[:, 5:].transpose(1, 2).reshape(1, 384, 3, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-5, rtol=1e-5)


def test_release_register_and_swiglu_keys_convert_to_timm(tmp_path) -> None:
    timm_state = DinoV2Backbone(SMALL_DINO_REG, pretrained=False).dino.state_dict()
    release = {k: v.clone() for k, v in timm_state.items() if k not in ("reg_token", "pos_embed", "cls_token")}
    release["register_tokens"] = torch.randn(1, 4, 384)
    release["pos_embed"] = torch.randn(1, 1 + 37 * 37, 384)
    release["cls_token"] = torch.randn(1, 1, 384)
    converted = release_to_timm_keys(release, no_embed_class=True)
    torch.testing.assert_close(converted["cls_token"], release["cls_token"] + release["pos_embed"][:, :1])
    torch.testing.assert_close(converted["pos_embed"], release["pos_embed"][:, 1:])
    assert torch.equal(converted["reg_token"], release["register_tokens"])
    path = tmp_path / "reg.pth"
    torch.save(release, path)
    loaded = DinoV2Backbone(SMALL_DINO_REG, pretrained=False, weights_path=path)  # strict
    torch.testing.assert_close(loaded.dino.reg_token, release["register_tokens"])
    # ViT-G's SwiGLU names of the release
    renamed = release_to_timm_keys({"blocks.0.mlp.w12.weight": torch.zeros(1), "blocks.0.mlp.w3.bias": torch.ones(1)}, False)
    assert set(renamed) == {"blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias"}


@pytest.mark.parametrize(
    "model_name, channels", [("vit_large_patch14_dinov2", 1024), ("vit_giant_patch14_dinov2", 1536), ("vit_base_patch14_reg4_dinov2", 768)]
)
def test_dinov2_large_models_build_with_their_width(model_name: str, channels: int) -> None:
    """L and G are built with 2 blocks here (their full depth is hundreds of millions of parameters)."""
    create = timm.create_model
    with mock.patch.object(timm, "create_model", lambda name, *a, **k: create(name, *a, depth=2, **k)):
        backbone = DinoV2Backbone(model_name, pretrained=False, num_trainable_blocks=1, return_cls_token=True)
    grid, cls = backbone(torch.randn(1, 3, 28, 14))
    assert backbone.out_channels == channels and grid.shape == (1, channels, 2, 1) and cls.shape == (1, channels)


# -------------------------------------------------------------------------------------------- timm


def test_timm_cnn_stage_channels_stride_and_normalisation() -> None:
    backbone = TimmBackbone("convnext_atto", pretrained=False, feature_index=-2, num_trainable_blocks=1)
    assert (backbone.out_channels, backbone.stride, backbone.patch_size) == (160, 16, None)
    assert backbone.mean == tuple(timm.get_pretrained_cfg("convnext_atto").mean)
    out = backbone(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 160, 4, 6)
    trainable = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"stages_2"}  # the chosen stage; the later one is not even built
    assert not any("stages_3" in n for n, _ in backbone.named_parameters())


def test_timm_cnn_trainable_levels_and_frozen_batchnorm() -> None:
    backbone = TimmBackbone("resnet18", pretrained=False, num_trainable_blocks=2)
    trainable = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    backbone.train()
    assert not backbone.model.bn1.training and backbone.model.layer4[0].bn1.training
    everything = TimmBackbone("resnet18", pretrained=False, num_trainable_blocks=-1)
    assert all(p.requires_grad for p in everything.parameters())
    with pytest.raises(ValueError, match=r"num_trainable_blocks=6 is out of range for resnet18.*use 0\.\.5"):
        TimmBackbone("resnet18", pretrained=False, num_trainable_blocks=6)


def test_timm_vit_token_grid_and_class_token() -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone("vit_tiny_patch16_224", pretrained=False, num_trainable_blocks=2, return_cls_token=True).eval()
    assert (backbone.out_channels, backbone.stride, backbone.patch_size) == (192, 16, 16)
    assert backbone.mean == (0.5, 0.5, 0.5)
    vit = backbone.model.model
    x = torch.randn(2, 3, 48, 64)  # not the pretraining size: dynamic position embeddings
    with torch.no_grad():
        grid, cls = backbone(x)
        tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        for block in vit.blocks:
            tokens = block(tokens)
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grid, tokens[:, 1:].transpose(1, 2).reshape(2, 192, 3, 4), atol=1e-5, rtol=1e-5)
    trainable = {n.split(".")[3] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"10", "11"}  # model.model.blocks.N
    with pytest.raises(ValueError, match="image size 50 is not a multiple of the patch size 16 of vit_tiny_patch16_224; use 64 or 48"):
        backbone(torch.randn(1, 3, 50, 64))
    # what SALAD reads from any timm ViT
    from vprlab.models.aggregators import SALAD

    salad = SALAD(192, num_clusters=4, cluster_dim=8, token_dim=8, hidden_dim=16).eval()
    with torch.no_grad():
        assert salad(backbone(x)).shape == (2, 4 * 8 + 8)


def test_timm_errors(monkeypatch, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown timm model_name='convnext_enormous'.*timm.list_models\('\*convnext\*'\)"):
        TimmBackbone("convnext_enormous", pretrained=False)
    with pytest.raises(ValueError, match=r"return_cls_token=true needs a ViT with a class token.*not a token \(ViT\) model"):
        TimmBackbone("resnet18", pretrained=False, return_cls_token=True)
    with pytest.raises(ValueError, match=r"backbone.eval_image_size: image size 100 is not a multiple of the patch size 16"):
        TimmBackbone("vit_tiny_patch16_224", pretrained=False, eval_image_size=100)
    with pytest.raises(FileNotFoundError, match=r"backbone.weights_path=.*does not exist"):
        TimmBackbone("resnet18", weights_path=tmp_path / "missing.safetensors")

    def no_network(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)
    # The hub "answers" the quick check and has nothing cached: the download itself fails.
    monkeypatch.setattr("vprlab.models.backbones._weights.hub_unreachable", lambda: None)
    monkeypatch.setattr("vprlab.models.backbones._weights.cached_timm_weights", lambda name: None)
    with pytest.raises(RuntimeError, match=r"backbone\.pretrained=false.*backbone\.weights_path=/path/to/resnet18"):
        TimmBackbone("resnet18", pretrained=True)
    monkeypatch.setattr("vprlab.models.backbones._weights.hub_unreachable", lambda: "huggingface.co:443 unreachable")
    with pytest.raises(RuntimeError, match=r"no network: huggingface.co:443 unreachable.*/path/to/resnet18.safetensors"):
        TimmBackbone("resnet18", pretrained=True)


def test_timm_weights_path_loads_a_local_file(tmp_path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    backbone = TimmBackbone("resnet18", pretrained=True, weights_path=tmp_path / "model.safetensors")
    torch.testing.assert_close(backbone.model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    torch.testing.assert_close(backbone.model.conv1.weight, source.conv1.weight)
