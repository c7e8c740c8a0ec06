"""ResNet and DINOv2 backbones: shapes, the release's position-embedding resize, freezing, weight files.
Never touches the network: pretrained downloads are made to fail on purpose."""

from __future__ import annotations

import urllib.error

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from vprlab.models.backbones import DinoV2Backbone, ResNetBackbone, check_image_size
from vprlab.models.backbones.dinov2 import interpolate_pos_embed

SMALL_DINO = "vit_small_patch14_dinov2"


# ----------------------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize(
    "name, crop, channels, stride",
    [("resnet18", True, 256, 16), ("resnet18", False, 512, 32), ("resnet50", True, 1024, 16)],
)
def test_resnet_output_shape(name: str, crop: bool, channels: int, stride: int) -> None:
    backbone = ResNetBackbone(name, pretrained=False, crop_last_block=crop).eval()
    assert (backbone.out_channels, backbone.stride) == (channels, stride)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, channels, 64 // stride, 96 // stride)
    assert len(backbone.net) == (7 if crop else 8)


def test_resnet50_default_freezing_follows_boq_recipe() -> None:
    backbone = ResNetBackbone("resnet50", pretrained=False)
    trainable = {name.split(".")[1] for name, p in backbone.named_parameters() if p.requires_grad}
    frozen = {name.split(".")[1] for name, p in backbone.named_parameters() if not p.requires_grad}
    assert trainable == {"6"}  # layer3 only
    assert frozen == {"0", "1", "4", "5"}  # conv1, bn1, layer1, layer2


@pytest.mark.parametrize("num_trainable, trainable", [(0, set()), (2, {"5", "6"}), (4, {"0", "1", "4", "5", "6"})])
def test_resnet_num_trainable_blocks(num_trainable: int, trainable: set[str]) -> None:
    backbone = ResNetBackbone("resnet18", pretrained=False, num_trainable_blocks=num_trainable)
    assert {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad} == trainable


def test_resnet_num_trainable_blocks_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"num_trainable_blocks=5 is out of range.*use 0\.\.4"):
        ResNetBackbone("resnet18", pretrained=False, num_trainable_blocks=5)
    with pytest.raises(ValueError, match="unknown ResNet model_name='resnet42'"):
        ResNetBackbone("resnet42", pretrained=False)


def test_resnet_frozen_batchnorm_keeps_running_stats_in_train_mode() -> None:
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", pretrained=False, num_trainable_blocks=1)
    assert backbone.training and not backbone.net[1].training  # frozen BN in eval mode from the start
    backbone.eval().train()
    frozen_bn, trained_bn = backbone.net[1], backbone.net[6][0].bn1  # stem bn, layer3 bn
    assert not frozen_bn.training and not backbone.net[5][0].bn1.training
    assert trained_bn.training
    frozen_before = frozen_bn.running_mean.clone()
    trained_before = trained_bn.running_mean.clone()
    backbone(torch.randn(2, 3, 32, 32) * 3 + 1)
    torch.testing.assert_close(frozen_bn.running_mean, frozen_before, atol=0, rtol=0)
    assert not torch.equal(trained_bn.running_mean, trained_before)
    backbone.eval()
    assert not trained_bn.training


def test_resnet_frozen_bn_train_mode_lets_frozen_statistics_drift_as_the_original_code() -> None:
    """backbone.frozen_bn=train: the frozen blocks' BatchNorm follows model.train() (the BoQ / MixVPR code,
    which only sets requires_grad=False): running statistics change after a step, weights do not."""
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", pretrained=False, num_trainable_blocks=1, frozen_bn="train")
    frozen_bn = backbone.net[1]
    assert backbone.training and frozen_bn.training and not frozen_bn.weight.requires_grad
    before = frozen_bn.running_mean.clone()
    weight = frozen_bn.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    backbone(torch.randn(2, 3, 32, 32) * 3 + 1).mean().backward()
    optimizer.step()
    assert not torch.equal(frozen_bn.running_mean, before)  # drifted
    torch.testing.assert_close(frozen_bn.weight, weight, atol=0, rtol=0)
    backbone.eval()
    assert not frozen_bn.training
    backbone.train()
    assert frozen_bn.training
    with pytest.raises(ValueError, match=r"backbone.frozen_bn='frozen': use eval .* or train"):
        ResNetBackbone("resnet18", pretrained=False, frozen_bn="frozen")


def test_resnet_weights_path_loads_torchvision_state_dict(tmp_path) -> None:
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = ResNetBackbone("resnet18", pretrained=True, weights_path=path)  # file wins, no download
    torch.testing.assert_close(backbone.net[0].weight, source.conv1.weight)
    torch.testing.assert_close(backbone.net[6][1].bn2.running_var, source.layer3[1].bn2.running_var)


def test_resnet_weights_path_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="backbone.weights_path=.*does not exist"):
        ResNetBackbone("resnet18", pretrained=False, weights_path=tmp_path / "missing.pth")
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="does not match a torchvision resnet34 state dict"):
        ResNetBackbone("resnet34", pretrained=False, weights_path=path)


def test_resnet_pretrained_offline_gives_clear_error(tmp_path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    # An empty hub dir so no cached file is found, and the download itself fails.
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match=r"backbone\.pretrained=false.*backbone\.weights_path=") as info:
        ResNetBackbone("resnet18", pretrained=True)
    assert "URLError" in str(info.value)


# ----------------------------------------------------------------------------------------- DINOv2


def test_check_image_size_message() -> None:
    check_image_size(322)
    check_image_size((224, 308))
    with pytest.raises(ValueError, match=r"^image size 320 is not a multiple of the DINOv2 patch size 14; use 322 or 308$"):
        check_image_size(320)
    with pytest.raises(ValueError, match="image size 300 is not a multiple"):
        check_image_size((322, 300))


def _release_resize(patch_pos: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """The release's recipe written out: bicubic, no antialias, scale factor (grid + 0.1) / 37."""
    dim = patch_pos.shape[-1]
    grid = patch_pos.reshape(1, 37, 37, dim).permute(0, 3, 1, 2)
    out = F.interpolate(grid, scale_factor=((grid_h + 0.1) / 37, (grid_w + 0.1) / 37), mode="bicubic", antialias=False)
    return out.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)


@pytest.mark.parametrize("grid_h, grid_w", [(23, 23), (16, 16), (5, 6)])
def test_pos_embed_interpolation_matches_release(grid_h: int, grid_w: int) -> None:
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = interpolate_pos_embed(pos, grid_h, grid_w)
    assert out.shape == (1, 1 + grid_h * grid_w, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1], atol=0, rtol=0)  # class token untouched
    torch.testing.assert_close(out[:, 1:], _release_resize(pos[:, 1:], grid_h, grid_w), atol=1e-6, rtol=0)
    # Resizing by target size (what timm does) samples elsewhere: the scale factor really matters.
    by_size = F.interpolate(pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2), size=(grid_h, grid_w), mode="bicubic")
    assert not torch.allclose(out[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, -1, 8), atol=1e-3)


def test_pos_embed_unchanged_at_native_grid() -> None:
    pos = torch.randn(1, 1 + 37 * 37, 4)
    assert interpolate_pos_embed(pos, 37, 37) is pos


@pytest.fixture(scope="module")
def small_dino() -> DinoV2Backbone:
    torch.manual_seed(0)
    backbone = DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=2).eval()
    with torch.no_grad():  # random, non-degenerate embeddings so position handling shows in the output
        backbone.dino.pos_embed.normal_(std=0.5)
        backbone.dino.cls_token.normal_(std=0.5)
    return backbone


def test_dinov2_forward_matches_manual_computation(small_dino: DinoV2Backbone) -> None:
    dino = small_dino.dino
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        out = small_dino(x)
        tokens = F.conv2d(x, dino.patch_embed.proj.weight, dino.patch_embed.proj.bias, stride=14)
        tokens = tokens.flatten(2).transpose(1, 2)  # [2, 12, 384], row-major patches
        tokens = torch.cat((dino.cls_token.expand(2, -1, -1), tokens), dim=1)
        pos = torch.cat((dino.pos_embed[:, :1], _release_resize(dino.pos_embed[:, 1:], 3, 4)), dim=1)
        tokens = tokens + pos
        for block in dino.blocks:
            tokens = block(tokens)
        expected = tokens[:, 1:].transpose(1, 2).reshape(2, 384, 3, 4)  # final norm NOT applied
    assert out.shape == (2, small_dino.out_channels, 3, 4)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_dinov2_rejects_bad_input_size(small_dino: DinoV2Backbone) -> None:
    with pytest.raises(ValueError, match="image size 320 is not a multiple of the DINOv2 patch size 14; use 322 or 308"):
        small_dino(torch.zeros(1, 3, 320, 320))


def test_dinov2_freezing(small_dino: DinoV2Backbone) -> None:
    trainable = {n for n, p in small_dino.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("dino.blocks.10.", "dino.blocks.11.")) for n in trainable)
    assert len(trainable) == len([n for n, _ in small_dino.named_parameters() if n.startswith(("dino.blocks.10.", "dino.blocks.11."))])
    for name in ("cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "norm.weight", "blocks.9.attn.qkv.weight"):
        assert not small_dino.dino.get_parameter(name).requires_grad, name
    with pytest.raises(ValueError, match=r"num_trainable_blocks=13 is out of range .*use 0\.\.12"):
        DinoV2Backbone(SMALL_DINO, pretrained=False, num_trainable_blocks=13)
    with pytest.raises(ValueError, match="unknown DINOv2 model_name"):
        DinoV2Backbone("dinov2_vitb14", pretrained=False)


def test_dinov2_weights_path(tmp_path, small_dino: DinoV2Backbone) -> None:
    timm_state = {k: v for k, v in small_dino.dino.state_dict().items() if k != "mask_token"}
    path = tmp_path / "vits.pth"
    torch.save(timm_state, path)  # timm layout: no mask_token
    loaded = DinoV2Backbone(SMALL_DINO, pretrained=True, weights_path=path)  # file wins, no download
    torch.testing.assert_close(loaded.dino.pos_embed, small_dino.dino.pos_embed)
    torch.testing.assert_close(loaded.dino.blocks[3].ls1.gamma, small_dino.dino.blocks[3].ls1.gamma)
    safetensors_path = tmp_path / "model.safetensors"
    save_file(timm_state, safetensors_path)
    loaded = DinoV2Backbone(SMALL_DINO, pretrained=False, weights_path=safetensors_path)
    torch.testing.assert_close(loaded.dino.norm.bias, small_dino.dino.norm.bias)
    # DINOv2-release layout (with mask_token) loads too, and extra keys are refused.
    torch.save({**timm_state, "mask_token": torch.ones(1, 384)}, path)
    assert torch.equal(DinoV2Backbone(SMALL_DINO, pretrained=False, weights_path=path).dino.mask_token, torch.ones(1, 384))
    torch.save({**timm_state, "head.weight": torch.zeros(2, 384)}, path)
    with pytest.raises(ValueError, match=r"unexpected keys \['head.weight'\]"):
        DinoV2Backbone(SMALL_DINO, pretrained=False, weights_path=path)


def test_dinov2_pretrained_offline_gives_clear_error(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    # timm.create_model(pretrained=True) fetches weights through load_pretrained; the quick
    # reachability check is told the hub answers, so the download itself is what fails here.
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)
    monkeypatch.setattr("vprlab.models.backbones._weights.hub_unreachable", lambda: None)
    monkeypatch.setattr("vprlab.models.backbones._weights.cached_timm_weights", lambda name: None)
    with pytest.raises(RuntimeError, match=r"backbone\.pretrained=false.*backbone\.weights_path=/path/to/") as info:
        DinoV2Backbone(SMALL_DINO, pretrained=True)
    assert "couldn't connect" in str(info.value)  # our stub raised it, not a real download attempt


@pytest.fixture
def offline(monkeypatch):
    """No network: every connection fails at once; nothing in the Hugging Face cache; the download
    itself must not even be tried. Returns the list of attempted connections."""
    import socket

    import huggingface_hub

    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("Network is unreachable")

    def download(*args, **kwargs):
        raise AssertionError("the download was tried although the hub is unreachable")

    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", download)
    return attempts


def test_dinov2_download_fails_at_once_offline_naming_the_model_and_weights_path(offline) -> None:
    with pytest.raises(RuntimeError, match=(
        r"could not download the pretrained weights of vit_small_patch14_reg4_dinov2 \(ConnectionError: no network: "
        r"huggingface.co:443 unreachable.*backbone\.weights_path=/path/to/dinov2_vits14_reg4_pretrain\.pth"
    )):
        DinoV2Backbone("vit_small_patch14_reg4_dinov2", pretrained=True)
    assert offline == [("huggingface.co", 443)]  # one connection attempt, no retries


def test_dinov2_download_with_hf_hub_offline_fails_without_any_connection(offline, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"no network: HF_HUB_OFFLINE is set.*backbone\.weights_path="):
        DinoV2Backbone(SMALL_DINO, pretrained=True)
    assert offline == []


def test_dinov2_weights_already_in_the_hub_cache_load_without_network(offline, monkeypatch, tmp_path) -> None:
    import huggingface_hub

    cached = tmp_path / "model.safetensors"
    asked, created = [], []
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name, **k: asked.append((repo, name)) or str(cached))
    real_create = timm.create_model

    def create(name, pretrained=False, pretrained_cfg_overlay=None, **kwargs):
        created.append((pretrained, pretrained_cfg_overlay))
        return real_create(name, pretrained=False, **kwargs)  # the file itself is timm's business

    monkeypatch.setattr(timm, "create_model", create)
    DinoV2Backbone(SMALL_DINO, pretrained=True)
    assert asked == [("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors")]
    assert created == [(True, {"file": str(cached)})] and offline == []


def test_the_hub_check_gives_up_on_a_hanging_name_lookup(monkeypatch) -> None:
    import socket
    import threading

    from vprlab.models.backbones._weights import hub_unreachable

    release = threading.Event()

    def hang(*args, **kwargs):  # a name lookup that takes its time
        release.wait(30)
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(socket, "create_connection", hang)
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert hub_unreachable(timeout=0.2) == "huggingface.co:443 did not answer within 0.2 s"
    finally:
        release.set()


def test_image_size_attributes() -> None:
    resnet = ResNetBackbone("resnet18", pretrained=False, train_image_size=[48, 64], eval_image_size=96)
    assert resnet.train_image_size == (48, 64) and resnet.eval_image_size == (96, 96)
    assert ResNetBackbone("resnet18", pretrained=False).eval_image_size == (384, 384)
    with pytest.raises(ValueError, match=r"train_image_size must be a positive int or \(height, width\), got \[48\]"):
        ResNetBackbone("resnet18", pretrained=False, train_image_size=[48])


def test_dinov2_checks_configured_image_sizes_before_building() -> None:
    with pytest.raises(ValueError, match="backbone.eval_image_size: image size 320 is not a multiple of the DINOv2 patch size 14"):
        DinoV2Backbone(SMALL_DINO, pretrained=False, eval_image_size=[322, 320])
