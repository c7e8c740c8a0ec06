"""The released EDTformer model (EDTformer.pth, GitHub release v1.0.0: a torch file whose
``model_state_dict`` is the state dict of DataParallel(VPRNet)): a random state dict with exactly the
keys and shapes the original code gives (tests/pretrained/release_layouts), in that container, loads
strictly by name and gives the descriptor of a step-by-step computation written from the original
network.py / SACA.py / vision_transformer.py / LadderAdapter.py with plain torch ops."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from release_reference import _attention, _layer_norm, forbid_network
from test_published_dinov2_vgg import DINO_INPUT, TOL, ref_dinov2
from test_published_qaa import read_release_layout, release_state

import vprlab
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import edtformer as edtformer_family
from vprlab.utils.errors import DownloadError
from vprlab.utils.weights import UnsafeFileError

NAME = "edtformer_dinov2_4096"
URL = "https://github.com/Tong-Jin01/EDTformer/releases/download/v1.0.0/EDTformer.pth"


def ref_edtformer(x: torch.Tensor, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """VPRNet.forward on the release tensors (DataParallel's ``module.`` prefix)."""
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    patches, cls = ref_dinov2(x, sd, "backbone.", adapters="backbone.adapters.")  # side stream, final norm
    batch = x.shape[0]
    tokens = torch.cat([cls[:, None], patches.flatten(2).transpose(1, 2)], dim=1)  # x_norm_clstoken, patch tokens
    memory = tokens @ sd["fc.weight"].T + sd["fc.bias"]
    q = sd["queries"].expand(batch, -1, -1)
    for i in range(2):  # SA_CA, post-norm, dropout off in eval
        p = f"decoder.layers.{i}"
        q = _layer_norm(q + _attention(q, q, q, sd, p + ".self_attn", 16)[0], sd, p + ".norm1")
        q = _layer_norm(q + _attention(q, memory, memory, sd, p + ".multihead_attn", 16)[0], sd, p + ".norm2")
    q = q @ sd["channel_proj.weight"].T + sd["channel_proj.bias"]  # [B, 64, 256]
    out = q.permute(0, 2, 1) @ sd["row_proj.weight"].T + sd["row_proj.bias"]  # [B, 256, 16]
    out = out.flatten(1)
    return out / out.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def raw() -> dict[str, torch.Tensor]:
    return release_state(NAME, seed=7)


def test_layout_is_the_models_in_release_names() -> None:
    spec = published_model(NAME)
    with torch.device("meta"):
        state = spec.build_model().state_dict()
    exported = edtformer_family.export_edtformer(state, spec)
    layout = read_release_layout(NAME)
    assert len(layout) == 254
    assert {f"module.{k}": tuple(v.shape) for k, v in exported.items()} == layout


def test_release_container_loads_strictly_and_matches_the_original(raw, tmp_path) -> None:
    path = tmp_path / "EDTformer.pth"
    # the training code's checkpoint: model_state_dict (DataParallel keys) beside plain values
    torch.save({"epoch_num": 9, "model_state_dict": raw, "best_r5": 95.1, "not_improved_num": 0}, path)
    model, transform = vprlab.load_pretrained(NAME, weights=path)
    assert not model.training and model.descriptor_dim == 4096
    assert torch.equal(model.backbone.adapters[3].up.weight, raw["module.backbone.adapters.3.D_fc2.weight"])
    assert torch.equal(model.aggregator.layers[1].multihead_attn.in_proj_weight, raw["module.decoder.layers.1.multihead_attn.in_proj_weight"])
    x = torch.randn(*DINO_INPUT, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = model(x)
        expected = ref_edtformer(x, raw)
    assert out.shape == (2, 4096)
    torch.testing.assert_close(out, expected, **TOL)
    # the adapters matter: without them (the plain DINOv2 stream) the reference is far off
    with torch.no_grad():
        zero = {k: (torch.zeros_like(v) if ".D_fc2." in k else v) for k, v in raw.items()}
        assert (ref_edtformer(x, zero) - out).abs().max() > 1e-3
    assert transform(Image.new("RGB", (90, 70))).shape == (3, 322, 322)


def test_wrong_keys_are_named(raw) -> None:
    spec = published_model(NAME)
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    broken = dict(state)
    del broken["backbone.adapters.11.D_fc1.bias"]
    with pytest.raises(ValueError, match=r"missing keys: backbone\.adapters\.11\.down\.bias"):
        edtformer_family.convert_edtformer(broken, spec)
    broken = {**state, "row_proj.weight": torch.zeros(32, 64)}
    with pytest.raises(ValueError, match=r"shape mismatches: aggregator\.row_proj\.weight \(32, 64\) \(expected \(16, 64\)\)"):
        edtformer_family.convert_edtformer(broken, spec)
    broken = {**state, "decoder.norm.weight": torch.zeros(768)}
    with pytest.raises(ValueError, match=r"keys that no mapping knows: decoder\.norm\.weight"):
        edtformer_family.convert_edtformer(broken, spec)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path) -> None:
    """If the release also holds objects other than tensors, plain values and numpy arrays (train.py's
    ``recalls`` are admitted), e.g. an argparse Namespace, it is not unpickled."""
    import argparse

    path = tmp_path / "EDTformer.pth"
    torch.save({"model_state_dict": {"module.queries": torch.zeros(1, 64, 768)}, "args": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(UnsafeFileError, match="allow_unsafe_pickle=true"):
        vprlab.load_pretrained(NAME, weights=path)


def test_preprocessing_and_offline_download(monkeypatch, tmp_path) -> None:
    """eval.py: ToTensor, ImageNet Normalize, then resize to 322x322 on the normalised tensor (bilinear,
    torchvision 0.15: no antialiasing); VPR-methods-evaluation: its dino_v2_resize."""
    spec = published_model(NAME)
    assert spec.preprocessing.describe() == "322x322 tensor after normalisation bilinear"
    assert spec.eval_preprocessing("vpr-methods-evaluation").describe() == "native size, sides rounded to multiples of 14"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    with pytest.raises(DownloadError) as info:
        vprlab.load_pretrained(NAME)
    assert URL in str(info.value) and str(tmp_path / "hub" / "checkpoints" / "EDTformer.pth") in str(info.value)
    assert calls == ["torch.hub.download_url_to_file"]


def test_hub_entry_as_vpr_methods_evaluation_calls_it() -> None:
    from conftest import REPO

    model = torch.hub.load(str(REPO), "EDTformer", source="local", pretrained=False)
    assert model.descriptor_dim == 4096 and not model.training
    assert model.eval_preprocessing.describe() == "322x322 tensor after normalisation bilinear"


@pytest.mark.parametrize("name", [NAME, "qaa_dinov2_2048"])
def test_fine_tuning_configs_build_the_published_architecture(name, tmp_path) -> None:
    """train.py pretrained=<name>: the zoo configs pass the config checks and build the released
    architecture; EDTformer trains its adapters (not the blocks) and its aggregator, as its train.py does."""
    from conftest import compose_config

    from vprlab.config.checks import validate_aggregator_needs, validate_model_sizes
    from vprlab.models.vpr_model import build_model
    from vprlab.pretrained.finetune import apply_published_architecture

    cfg = apply_published_architecture(compose_config("train", [f"pretrained={name}", f"paths.output_dir={tmp_path}"]))
    validate_aggregator_needs(cfg)
    validate_model_sizes(cfg)
    with torch.device("meta"):
        ours = build_model(cfg.backbone, cfg.aggregator)
        release = published_model(name).build_model()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in release.state_dict().items()]
    trained = {k.split(".")[1] for k, p in ours.named_parameters() if p.requires_grad and k.startswith("backbone.")}
    assert trained == ({"adapters"} if name == NAME else {"dino"})
