"""The released QAA models (Hugging Face xjh19972/QAA-<dim>, model.safetensors): a random state dict
with exactly the keys and shapes the original code gives (tests/pretrained/release_layouts), written
as safetensors, loads strictly by name and gives the descriptor of a step-by-step computation written
from VPR-methods-evaluation's vpr_models/qaa.py with plain torch ops on the raw release tensors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from release_reference import _attention, _layer_norm, forbid_network
from safetensors.torch import save_file
from test_published_dinov2_vgg import DINO_INPUT, TOL, random_release, ref_dinov2

import vprlab
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import qaa as qaa_family
from vprlab.utils.errors import DownloadError
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD
from vprlab.utils.weights import read_state_dict

LAYOUTS = Path(__file__).parent / "release_layouts"
DIMS = (1024, 2048, 4096, 8192)


def read_release_layout(name: str) -> dict[str, tuple[int, ...]]:
    """key -> shape of ``release_layouts/<name>.tsv`` (``#`` lines are its provenance header)."""
    layout = {}
    for line in (LAYOUTS / f"{name}.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


def hub_config(dim: int, **agg: object) -> dict:
    """A config.json as PyTorchModelHubMixin writes it for QAA(model_config_dict), with the settings of
    QAA's training configs (keys VPR-methods-evaluation does not read included)."""
    return {"model_config_dict": {
        "backbone_arch": "dinov2_vitb14",
        "backbone_config": {"num_trainable_blocks": 2, "return_token": True, "norm_layer": True, "domain_prompt": "none"},
        "agg_arch": "QAA",
        "agg_config": {"num_channels": 768, "num_clusters": dim // 128, "cluster_dim": 128, "token_dim": 0,
                       "num_queries": 256, "dropout": 0.3, **agg},
    }}


def release_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """Random release tensors; learned queries drawn at unit scale, as the original initialises them."""
    raw = random_release(read_release_layout(name), seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    for key in [k for k in raw if k.endswith("queries")]:
        raw[key] = torch.randn(raw[key].shape, generator=generator)
    return raw


# ------------------------------------------------------------------ vpr_models/qaa.py, step by step


def ref_queries(sd: dict[str, torch.Tensor], p: str, heads: int) -> torch.Tensor:
    """QuerySelfAttn: q + self-attention(q), then norm_q -> [1, Q, D]."""
    q = sd[p + ".queries"]
    q = q + _attention(q, q, q, sd, p + ".self_attn", heads)[0]
    return _layer_norm(q, sd, p + ".norm_q")


def ref_qaa(x: torch.Tensor, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    f, _ = ref_dinov2(x, raw, "backbone.model.")  # every block, final norm (norm_layer=True)
    batch = f.shape[0]
    codebook = ref_queries(raw, "aggregator.queries_feature", 16)[0]  # [Q, L]
    score_queries = ref_queries(raw, "aggregator.queries_score", 16).expand(batch, -1, -1)
    local = f.flatten(2).permute(0, 2, 1)  # [B, N, 768]
    out = _attention(score_queries, local, local, raw, "aggregator.score.cross_attn", 16)[0]
    out = _layer_norm(out, raw, "aggregator.score.norm_out")
    out = out @ raw["aggregator.score.conv.weight"][:, :, 0].T + raw["aggregator.score.conv.bias"]  # [B, Q, M]
    p = out.permute(0, 2, 1)  # [B, M, Q]; out_norm=False: norm2_out not applied; no Sinkhorn
    m, cluster_dim = p.shape[1], codebook.shape[1]
    vlad = torch.zeros(batch, cluster_dim, m)
    for b in range(batch):
        vlad[b] = codebook.T @ p[b].T  # sum over the queries of f[l, q] * p[m, q]
    vlad = vlad / vlad.norm(dim=1, keepdim=True)
    flat = vlad.reshape(batch, -1)  # index l * M + m
    return flat / flat.norm(dim=1, keepdim=True)


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("dim", DIMS)
def test_layout_is_the_models_in_release_names(dim: int) -> None:
    """Every entry's model, exported to the release's names, has exactly the listed keys and shapes."""
    spec = published_model(f"qaa_dinov2_{dim}")
    with torch.device("meta"):
        state = spec.build_model().state_dict()
    exported = qaa_family.export_qaa(state, spec)
    layout = read_release_layout(spec.name)
    assert len(layout) == 200
    assert {k: tuple(v.shape) for k, v in exported.items()} == layout
    assert layout["aggregator.score.conv.weight"] == (dim // 128, 768, 1)


@pytest.mark.parametrize("dim", [8192, pytest.param(1024, marks=pytest.mark.slow)])
def test_safetensors_release_loads_strictly_and_matches_the_original(dim: int, tmp_path) -> None:
    name = f"qaa_dinov2_{dim}"
    raw = release_state(name, seed=dim)
    path = tmp_path / "model.safetensors"
    save_file(raw, str(path))
    (tmp_path / "config.json").write_text(json.dumps(hub_config(dim)))  # as in the Hugging Face repository
    assert sorted(read_state_dict(path)) == sorted(read_release_layout(name))
    model, transform = vprlab.load_pretrained(name, weights=path)
    assert not model.training and model.descriptor_dim == dim
    assert torch.equal(model.aggregator.score.proj.weight, raw["aggregator.score.conv.weight"])
    assert torch.equal(model.backbone.dino.mask_token, raw["backbone.model.mask_token"])
    x = torch.randn(*DINO_INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        expected = ref_qaa(x, raw)
    assert out.shape == (2, dim)
    torch.testing.assert_close(out, expected, **TOL)
    # the comparison is sensitive: a small change of one score parameter moves the reference
    moved = dict(raw)
    moved["aggregator.score.conv.bias"] = raw["aggregator.score.conv.bias"] + 0.5
    with torch.no_grad():
        assert (ref_qaa(x, moved) - out).abs().max() > 1e-3
    assert transform(Image.new("RGB", (90, 70))).shape == (3, 322, 322)
    # a config.json that describes another architecture stops the load
    (tmp_path / "config.json").write_text(json.dumps(hub_config(dim, score_nheads=8)))
    with pytest.raises(ValueError, match=r"agg_config\.score_nheads=8 \(vprlab builds 16\)"):
        vprlab.load_pretrained(name, weights=path)


def test_config_json_next_to_the_weights_is_checked(tmp_path) -> None:
    """The settings the weights cannot show are compared with config.json when it is there, with
    VPR-methods-evaluation's defaults for the keys it leaves out (norm_layer: False)."""
    spec = published_model("qaa_dinov2_2048")
    weights = tmp_path / "model.safetensors"
    qaa_family.check_qaa_config(weights, spec)  # no config.json (a download by URL): nothing to check
    (tmp_path / "config.json").write_text(json.dumps(hub_config(2048)))
    qaa_family.check_qaa_config(weights, spec)
    other = hub_config(2048, feature_nheads=4, score_norm="sinkhorn")
    del other["model_config_dict"]["backbone_config"]["norm_layer"]
    (tmp_path / "config.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"config\.json: the released QAA-2048 configuration differs .*: backbone_config\.norm_layer=False "
                       r"\(vprlab builds True\); agg_config\.feature_nheads=4 \(vprlab builds 16\); agg_config\.score_norm='sinkhorn'"):
        qaa_family.check_qaa_config(weights, spec)
    (tmp_path / "config.json").write_text(json.dumps(hub_config(1024)))  # the 1024-d repository's file
    with pytest.raises(ValueError, match=r"agg_config\.num_clusters=8 \(vprlab builds 16\)"):
        qaa_family.check_qaa_config(weights, spec)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON config"):
        qaa_family.check_qaa_config(weights, spec)


def test_wrong_file_is_refused_naming_the_keys() -> None:
    raw = release_state("qaa_dinov2_2048", seed=3)
    spec = published_model("qaa_dinov2_8192")
    # the 2048-d file given for the 8192-d name: the misshapen keys are named
    with pytest.raises(ValueError, match=r"shape mismatches: aggregator\.score\.proj\.weight \(16, 768, 1\) \(expected \(64, 768, 1\)\)"):
        qaa_family.convert_qaa(raw, spec)
    del raw["aggregator.queries_feature.norm_q.bias"]
    raw["aggregator.token_features.0.weight"] = torch.zeros(512, 768)  # a config with token_dim > 0
    with pytest.raises(ValueError, match=r"unexpected keys: aggregator\.token_features\.0\.weight"):
        qaa_family.convert_qaa(raw, spec)
    raw["backbone.norm.weight"] = torch.zeros(768)  # not under backbone.model.
    with pytest.raises(ValueError, match=r"keys that no mapping knows: backbone\.norm\.weight"):
        qaa_family.convert_qaa(raw, spec)
    del raw["aggregator.token_features.0.weight"], raw["backbone.norm.weight"]
    with pytest.raises(ValueError, match=r"missing keys: aggregator\.feature_queries\.norm\.bias"):
        qaa_family.convert_qaa(raw, published_model("qaa_dinov2_2048"))


def test_preprocessing_is_the_originals() -> None:
    """QAA's evaluation code (GenericDataloader test_transform): 322x322 bilinear resize of the PIL image,
    then ImageNet normalisation; VPR-methods-evaluation: parser.py's --image_size 322 322 for qaa (its input
    transform resizes the normalised tensor, antialiased), then dino_v2_resize, which keeps 322x322. (The VME
    protocol used to be the native size rounded to multiples of 14, which ignored --image_size: the
    side-by-side run against VME's code, experiments/check_published_against_originals.py, differed by 5.7e-2.)"""
    spec = published_model("qaa_dinov2_4096")
    assert spec.preprocessing.describe() == "322x322 PIL bilinear"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    normed = (tensor - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    expected = F.interpolate(normed[None], size=(322, 322), mode="bilinear", align_corners=False, antialias=True)[0]
    for dim in DIMS:
        vme = published_model(f"qaa_dinov2_{dim}").eval_preprocessing("vpr-methods-evaluation")
        torch.testing.assert_close(vme.transform()(image), expected, atol=1e-5, rtol=1e-5)
    assert spec.container == "safetensors" and spec.file_name == "model.safetensors"
    assert {published_model(f"qaa_dinov2_{d}").local_path().parent.name for d in DIMS} == {f"qaa-{d}" for d in DIMS}


def test_offline_download_names_the_url_and_the_place(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    with pytest.raises(DownloadError) as info:
        vprlab.load_pretrained("qaa_dinov2_2048")
    message = str(info.value)
    assert "https://huggingface.co/xjh19972/QAA-2048/resolve/main/model.safetensors" in message
    assert str(tmp_path / "hub" / "qaa-2048" / "model.safetensors") in message
    assert calls == ["torch.hub.download_url_to_file"]  # one attempt


def test_hub_entry_as_vpr_methods_evaluation_calls_it(tmp_path) -> None:
    from conftest import REPO

    random_model = torch.hub.load(str(REPO), "qaa", source="local", descriptors_dimension=1024, pretrained=False)
    assert random_model.descriptor_dim == 1024 and not random_model.training
    assert random_model.eval_preprocessing.describe() == "322x322 PIL bilinear"
    with pytest.raises(ValueError, match=r"no QAA model with .*dim=512.*\(.DINOv2 ViT-B/14., 1024\)"):
        torch.hub.load(str(REPO), "qaa", source="local", descriptors_dimension=512, pretrained=False)
