"""DINO-Mix (dinomix_dinov2_4096): a random state dict with exactly the keys and shapes the original
code gives (release_layouts/dinomix_dinov2_4096.tsv), saved as the release's Lightning checkpoint,
loads strictly and gives the descriptor of an independent step-by-step computation written from
GaoShuang98/DINO-Mix's code with torch primitives on the raw release tensors."""

from __future__ import annotations

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from published_layouts import check_offline_message, random_release_tensors, read_release_layout

from vprlab import load_pretrained
from vprlab.models.backbones.dinov2 import DinoV2Backbone
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import dinomix as dinomix_family

NAME = "dinomix_dinov2_4096"
TOL = dict(atol=1e-5, rtol=1e-5)


def ref_dinomix(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """DINO-Mix from the release tensors: DINOv2 hub ViT-B/14 ``forward_features`` with its ``norm``
    replaced by an identity (all 12 blocks; position embeddings resized bicubically by the scale
    factor (16 + 0.1) / 37), the patch tokens viewed as [B, 16, 16, 768] and permuted to a map, then
    MixVPR: 2 x (x + fc2(relu(fc1(LayerNorm(x))))) over the 256 positions, channel_proj, row_proj, L2."""
    p, batch = "backbone.dino_model.", x.shape[0]
    tokens = F.conv2d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=14)
    side = tokens.shape[-1]
    tokens = torch.cat([sd[p + "cls_token"].expand(batch, 1, 768), tokens.flatten(2).transpose(1, 2)], dim=1)
    grid = sd[p + "pos_embed"][:, 1:].reshape(1, 37, 37, 768).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((side + 0.1) / 37, (side + 0.1) / 37), mode="bicubic", antialias=False)
    tokens = tokens + torch.cat([sd[p + "pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    for i in range(12):
        b = f"{p}blocks.{i}."
        h = F.layer_norm(tokens, (768,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).reshape(batch, -1, 3, 12, 64).permute(2, 0, 3, 1, 4)
        attended = ((q @ k.transpose(-2, -1)) / 8.0).softmax(dim=-1) @ v  # [B, heads, N, 64]
        attended = attended.transpose(1, 2).reshape(batch, -1, 768)
        tokens = tokens + sd[b + "ls1.gamma"] * F.linear(attended, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(tokens, (768,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
        tokens = tokens + sd[b + "ls2.gamma"] * F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    fmap = tokens[:, 1:].reshape(batch, side, side, 768).permute(0, 3, 1, 2)  # no final norm, no class token
    a = "aggregator."
    y = fmap.flatten(2)  # [B, 768, 256]
    for i in range(2):
        m = f"{a}mix.{i}.mix."
        h = F.layer_norm(y, (256,), sd[m + "0.weight"], sd[m + "0.bias"], eps=1e-5)
        y = y + F.linear(F.relu(F.linear(h, sd[m + "1.weight"], sd[m + "1.bias"])), sd[m + "3.weight"], sd[m + "3.bias"])
    y = F.linear(y.permute(0, 2, 1), sd[a + "channel_proj.weight"], sd[a + "channel_proj.bias"])  # [B, 256, 1024]
    y = F.linear(y.permute(0, 2, 1), sd[a + "row_proj.weight"], sd[a + "row_proj.bias"])  # [B, 1024, 4]
    return F.normalize(y.flatten(1), p=2, dim=-1)


@pytest.fixture(scope="module")
def raw() -> dict[str, torch.Tensor]:
    return random_release_tensors(read_release_layout(NAME), seed=11)


@pytest.fixture(scope="module")
def release_file(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("dinomix") / "dinov2_vitb14_mix.ckpt"
    torch.save(_lightning_checkpoint(raw), path)
    return path


def _lightning_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """The container of a PyTorch Lightning 1.x ``ModelCheckpoint`` file (DINO_Mix.py trains with
    Lightning, MultiStepLR and save_hyperparameters)."""
    return {
        "epoch": 9, "global_step": 12345, "pytorch-lightning_version": "1.9.0",
        "state_dict": collections.OrderedDict(state), "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 9}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(92.03), "monitor": "pitts30k_val/R1"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.005, "momentum": 0.9, "params": [0, 1]}]}],
        "lr_schedulers": [{"milestones": collections.Counter({5: 1, 10: 1}), "gamma": 0.3, "last_epoch": 9}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"backbone_arch": "dinov2_vitb14", "layer1": 7, "agg_arch": "DinoMixVPR",
                             "agg_config": dict(dinomix_family.AGG_CONFIG, in_channels=768), "milestones": [5, 10, 15, 25, 45]},
    }


def test_release_checkpoint_loads_strictly_and_matches_the_original_forward(raw, release_file) -> None:
    model, transform = load_pretrained(NAME, weights=release_file)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4096)
    torch.testing.assert_close(out, ref_dinomix(x, raw), **TOL)
    assert (out[0] - out[1]).abs().max() > 1e-3
    # DINO-Mix has no final norm (the model holds none); with one, the descriptor would differ
    assert not any(k.startswith("backbone.dino.norm.") for k in model.state_dict())
    with torch.no_grad():
        fmap = model.backbone(x)
        normed = F.layer_norm(fmap.flatten(2).transpose(1, 2), (768,)).transpose(1, 2).reshape_as(fmap)
        assert not torch.allclose(model.aggregator(normed), out, atol=1e-3)
    resize = transform.transforms[0]  # DINO-Mix's valid_transform: PIL resize first, then ToTensor, Normalize
    assert type(resize).__name__ == "Resize" and tuple(resize.size) == (224, 224) and resize.interpolation.value == "bilinear"


def test_missing_extra_and_misshapen_keys_are_named(raw, tmp_path) -> None:
    broken = dict(raw)
    del broken["backbone.dino_model.blocks.3.ls1.gamma"]
    broken["backbone.dino_model.norm.weight"] = torch.ones(768)  # the hub model's norm, which DINO-Mix removed
    broken["aggregator.row_proj.weight"] = torch.zeros(2, 256)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": broken}, path)
    with pytest.raises(ValueError) as info:
        load_pretrained(NAME, weights=path)
    message = str(info.value)
    assert "backbone.dino.blocks.3.ls1.gamma" in message
    assert "backbone.dino.norm.weight" in message
    assert "aggregator.row_proj.weight (2, 256) (expected (4, 256))" in message


def test_preprocessing_is_dino_mix_s_and_vme_s() -> None:
    entry = published_model(NAME)
    assert entry.eval_preprocessing().describe() == "224x224 PIL bilinear"
    vme = entry.eval_preprocessing("vpr-methods-evaluation")
    assert vme.describe() == "224x224 tensor after normalisation bilinear antialiased"
    steps = [type(t).__name__ for t in vme.transform().transforms]
    assert steps == ["ToTensor", "Normalize", "Resize"]


def test_export_is_the_inverse_of_convert(raw) -> None:
    state = dinomix_family.convert_dinomix(raw)
    back = dinomix_family.export_dinomix(state)
    assert list(back) == list(raw)
    assert all(torch.equal(back[k], raw[k]) for k in raw)


def test_backbone_without_final_norm_option() -> None:
    backbone = DinoV2Backbone("vit_small_patch14_dinov2", pretrained=False, keep_final_norm=False, eval_image_size=None)
    assert isinstance(backbone.dino.norm, torch.nn.Identity)
    assert not any(k.startswith("dino.norm.") for k in backbone.state_dict())
    with pytest.raises(ValueError, match="apply_final_norm=True needs the final norm"):
        DinoV2Backbone("vit_small_patch14_dinov2", pretrained=False, keep_final_norm=False, apply_final_norm=True)


def test_offline_names_the_url_and_the_path(monkeypatch, tmp_path) -> None:
    entry = published_model(NAME)
    check_offline_message(monkeypatch, tmp_path, NAME, (entry.url, str(tmp_path / "hub" / "checkpoints" / "dinov2_vitb14_mix.ckpt")))


def test_descriptor_size_is_the_agg_config_s() -> None:
    config = dinomix_family.AGG_CONFIG
    assert config["out_channels"] * config["out_rows"] == published_model(NAME).descriptor_dim == 4096
    assert math.isqrt(config["in_h"] * config["in_w"]) * 14 == 224


def test_hub_entry_is_called_as_dino_mix_s(raw, release_file) -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    model = torch.hub.load(str(repo), "dino_mix", source="local", weights=str(release_file))
    state = model.state_dict()
    assert torch.equal(state["backbone.dino.blocks.11.ls2.gamma"], raw["backbone.dino_model.blocks.11.ls2.gamma"])
    assert model.eval_preprocessing.describe() == "224x224 PIL bilinear"
    vme = torch.hub.load(str(repo), "get_trained_model", source="local", method="dinomix", pretrained=False,
                         protocol="vpr-methods-evaluation")
    assert vme.eval_preprocessing.describe() == "224x224 tensor after normalisation bilinear antialiased"
