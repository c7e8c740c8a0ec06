"""Indoor-VPR's fine-tuned EigenPlaces and SALAD: a random state dict with exactly the keys and shapes
its code implies (release_layouts/*.tsv: EigenPlaces' / SALAD's keys behind ``model.``), saved as
the release's bare state dict, loads strictly by name and gives the descriptor of an independent
computation on the raw release tensors: SALAD's from test_published_dinov2_vgg after the release
forward's own resize to multiples of 14 (torchvision's antialiased tensor resize, as
GeoLocalizationViT calls it), EigenPlaces' from test_published_resnet (torchvision + plain ops)."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as tvf
from conftest import REPO
from release_reference import RELEASE_LAYOUTS, forbid_network, random_state_dict, read_layout, sub_state
from test_published_dinov2_vgg import TOL, random_release, ref_salad_model
from test_published_resnet import reference_cosplace

from vprlab.pretrained import PUBLISHED_MODELS, eval_preprocessing, find_published, load_pretrained, published_model
from vprlab.pretrained.families import cosplace as cosplace_family
from vprlab.pretrained.families import salad as salad_family
from vprlab.pretrained.families._common import NATIVE, VME_DINO
from vprlab.pretrained.load import read_published_state
from vprlab.utils.errors import ConfigError

SALAD = "salad_indoor_dinov2_8448"
EIGEN = "eigenplaces_indoor_resnet50_2048"


def ref_indoor_salad(x: torch.Tensor, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """GeoLocalizationViT.forward: sides to round(side / 14) * 14 (antialiased bilinear), then SALAD."""
    height, width = x.shape[-2:]
    x = tvf.resize(x, [round(height / 14) * 14, round(width / 14) * 14], antialias=True)
    return ref_salad_model(x, sub_state(raw, "model."))


@pytest.fixture(scope="module")
def salad_release(tmp_path_factory):
    raw = random_release(read_layout(f"{SALAD}.tsv", RELEASE_LAYOUTS), seed=21)
    path = tmp_path_factory.mktemp("indoor") / published_model(SALAD).file_name
    torch.save(raw, path)
    return path, raw


@pytest.fixture(scope="module")
def eigen_release(tmp_path_factory):
    raw = random_state_dict(read_layout(f"{EIGEN}.tsv", RELEASE_LAYOUTS), seed=22)
    raw["model.aggregation.1.p"] = torch.tensor([3.0])  # GeM's p: a plausible exponent
    path = tmp_path_factory.mktemp("indoor") / published_model(EIGEN).file_name
    torch.save(raw, path)
    return path, raw


def test_salad_indoor_loads_strictly_and_resizes_like_its_forward(salad_release) -> None:
    path, raw = salad_release
    assert len(raw) == 188 and all(k.startswith("model.") for k in raw)
    model, transform = load_pretrained(SALAD, weights=path)
    assert not model.training and model.descriptor_dim == 8448
    assert torch.equal(model.backbone.dino.mask_token, raw["model.backbone.model.mask_token"])
    # 130 x 115 is no multiple of 14: the release's forward (and ours) resizes to 126 x 112 first.
    x = torch.randn(2, 3, 130, 115, generator=torch.Generator().manual_seed(23))
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, ref_indoor_salad(x, raw), **TOL)
        # That resize is antialiased: a plain bilinear one gives another descriptor.
        assert (ref_salad_model(tvf.resize(x, [126, 112], antialias=False), sub_state(raw, "model.")) - out).abs().max() > 1e-4
    assert out.shape == (2, 8448)
    # No evaluation code of its own: native size, sides rounded to multiples of 14 after normalisation,
    # which is also VPR-methods-evaluation's ResizingWrapper("dino_v2_resize").
    assert published_model(SALAD).preprocessing == VME_DINO == eval_preprocessing(SALAD, "vpr-methods-evaluation")
    assert repr(transform) == repr(VME_DINO.transform())


def test_eigenplaces_indoor_loads_strictly_and_matches_the_step_by_step_cosplace(eigen_release) -> None:
    path, raw = eigen_release
    assert len(raw) == 321 and raw["model.aggregation.3.weight"].shape == (2048, 2048)
    model, transform = load_pretrained(EIGEN, weights=path)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(24))
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference_cosplace(x, sub_state(raw, "model.")), **TOL)
    assert out.shape == (2, 2048)
    # EigenPlaces' own evaluation and VME's (no ResizingWrapper for eigenplaces-indoor): native size.
    assert published_model(EIGEN).preprocessing == NATIVE == eval_preprocessing(EIGEN, "vpr-methods-evaluation")
    assert repr(transform) == repr(NATIVE.transform())


def test_both_variations_are_registered_with_their_files() -> None:
    base = "https://github.com/Enrico-Chiavassa/Indoor-VPR/releases/download/v0.1.0/"
    files = {
        SALAD: "salad_Dinov2_8448_GB1_10_25.pth", "salad_indoor_v1_dinov2_8448": "salad_Dinov2_8448_HB1_GB1_2_5.pth",
        EIGEN: "eigenplaces_ResNet50_2048_GB1_BAI_5_10.pth", "eigenplaces_indoor_v1_resnet50_2048": "eigenplaces_ResNet50_2048_GB1_BAI_10_25_S.pth",
    }
    assert {n for n in PUBLISHED_MODELS if "indoor" in n and not n.startswith("anyloc_")} == set(files)  # AnyLoc: a vocabulary
    for name, file_name in files.items():
        spec = published_model(name)
        assert (spec.file_name, spec.url, spec.container) == (file_name, base + file_name, "torch")
        assert published_model(file_name.removesuffix(".pth")) is spec  # the release stem is an alias
        assert spec.options["release_prefix"] == "model." and spec.options["variation"] == int("_v1_" in name)


def test_wrong_files_are_named(salad_release, eigen_release, tmp_path) -> None:
    _, raw = salad_release
    plain = tmp_path / "dino_salad.ckpt"  # SALAD's own file, without Indoor-VPR's model. prefix
    torch.save(sub_state(raw, "model."), plain)
    with pytest.raises(ConfigError, match=r"is not salad_indoor_dinov2_8448's file salad_Dinov2_8448_GB1_10_25\.pth.*"
                       r"188 keys that no mapping knows: backbone\.model\.cls_token"):
        read_published_state(SALAD, plain)
    _, raw = eigen_release
    broken = {k: v for k, v in raw.items() if k != "model.backbone.7.2.bn3.running_var"}
    broken["model.aggregation.2.p"] = broken.pop("model.aggregation.1.p")
    with pytest.raises(ConfigError, match=r"1 keys that no mapping knows: model\.aggregation\.2\.p"):
        read_published_state(EIGEN, _saved(tmp_path, broken))
    del broken["model.aggregation.2.p"]
    with pytest.raises(ConfigError, match=r"2 missing keys: backbone\.net\.7\.2\.bn3\.running_var, aggregator\.p"):
        load_pretrained(EIGEN, weights=_saved(tmp_path, broken))


def _saved(folder, state) -> str:
    path = folder / "broken.pth"
    torch.save(state, path)
    return str(path)


def test_export_writes_the_release_keys_back(salad_release, eigen_release) -> None:
    for name, (_, raw), family in ((SALAD, salad_release, salad_family.export_salad), (EIGEN, eigen_release, cosplace_family.export_cosplace)):
        entry = published_model(name)
        converted = salad_family.convert_salad(raw, entry) if name == SALAD else cosplace_family.convert_cosplace(raw, entry)
        exported = family(converted, entry)
        assert list(exported) == list(raw) and all(exported[k] is raw[k] for k in raw)


def test_offline_one_attempt_names_url_and_path(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    with pytest.raises(RuntimeError) as info:
        load_pretrained(SALAD)
    message = str(info.value)
    assert published_model(SALAD).url in message
    assert str(tmp_path / "hub" / "checkpoints" / "salad_Dinov2_8448_GB1_10_25.pth") in message
    assert calls == ["torch.hub.download_url_to_file"]


def test_hub_entries_as_vpr_methods_evaluation_calls_them(salad_release, eigen_release, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    path, raw = eigen_release
    # VME: torch.hub.load("Enrico-Chiavassa/Indoor-VPR", "get_trained_model", backbone=..., fc_output_dim=...)
    eigen = torch.hub.load(str(REPO), "indoor_vpr", source="local", backbone="ResNet50", fc_output_dim=2048, weights=str(path))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(25))
    with torch.no_grad():
        torch.testing.assert_close(eigen(x), reference_cosplace(x, sub_state(raw, "model.")), **TOL)
    path, raw = salad_release
    # VME: ... "get_trained_model", method="salad", backbone="Dinov2", fc_output_dim=8448
    salad = torch.hub.load(str(REPO), "indoor_vpr", source="local", method="salad", backbone="Dinov2", fc_output_dim=8448,
                           weights=str(path))
    x = torch.randn(1, 3, 120, 150, generator=torch.Generator().manual_seed(26))
    with torch.no_grad():
        torch.testing.assert_close(salad(x), ref_indoor_salad(x, raw), **TOL)
    assert calls == []
    # The method names of VME's parser pick these files; the plain methods keep theirs.
    assert find_published("salad-indoor", "Dinov2", 8448).name == SALAD
    assert find_published("eigenplaces-indoor", "ResNet50", 2048, variation=1).name == "eigenplaces_indoor_v1_resnet50_2048"
    assert find_published("eigenplaces", "ResNet50", 2048).name == "eigenplaces_resnet50_2048"
    assert find_published("salad").name == "salad_dinov2_8448"
    with pytest.raises(ConfigError, match=r"no SALAD-indoor model with backbone='Dinov2', dim=8448, variation=2"):
        find_published("salad-indoor", "Dinov2", 8448, variation=2)


def test_zoo_configs_rebuild_the_released_networks() -> None:
    """``train.py pretrained=<name>`` fine-tunes from these configs: the same state-dict layout."""
    from vprlab.models.vpr_model import build_model
    from vprlab.pretrained.finetune import published_configs

    for name in (SALAD, EIGEN):
        backbone, aggregator = published_configs(name)
        with torch.device("meta"):
            from_configs, built = build_model(backbone, aggregator), published_model(name).build_model()
        assert [(k, v.shape) for k, v in from_configs.state_dict().items()] == [(k, v.shape) for k, v in built.state_dict().items()]
    backbone, _ = published_configs(SALAD)
    assert backbone["round_to_patch_multiple"] is True and backbone["keep_mask_token"] is True and backbone["eval_image_size"] is None
