"""hubconf.get_trained_boq and vprlab.load_pretrained: offline with local weights, one download into
the torch hub cache otherwise, never the backbone's pretraining weights."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from PIL import Image
from release_reference import forbid_network, release_checkpoint
from torchvision.transforms import InterpolationMode

from vprlab.pretrained import RELEASED_MODELS, HubBoQModel, hub_model, load_pretrained
from vprlab.pretrained.cli import main

RELEASE_URL = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/{}"


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network, and an empty torch hub dir (no cached release file to fall back on)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    yield calls
    assert calls == [], f"the network was used: {calls}"


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    return release_checkpoint(tmp_path_factory, "resnet50_16384")


def _check_descriptors(descriptors: torch.Tensor, dim: int) -> None:
    assert descriptors.shape == (2, dim)
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)


def test_hubconf_local_with_weights_is_offline(offline, resnet_file) -> None:
    model = torch.hub.load(str(REPO), "get_trained_boq", source="local", backbone_name="resnet50", output_dim=16384, weights=str(resnet_file))
    assert isinstance(model, HubBoQModel) and not model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        descriptors, attentions = model(x)  # the original hub model's output: (descriptors, attention maps)
        reference, _ = load_pretrained("boq_resnet50_16384", weights=resnet_file)
        torch.testing.assert_close(descriptors, reference(x), atol=1e-6, rtol=1e-5)  # same weights; kernels may round differently
    _check_descriptors(descriptors, 16384)
    assert [a.shape for a in attentions] == [(2, 64, 16)] * 2


def test_dinov2_release_through_hub_and_load_pretrained(offline, tmp_path_factory) -> None:
    path = release_checkpoint(tmp_path_factory, "dinov2_12288")
    hub = torch.hub.load(str(REPO), "get_trained_boq", source="local", backbone_name="dinov2", output_dim=12288, weights=path)
    model, transform = load_pretrained("boq_dinov2_12288", weights=path)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        descriptors = model(x)
        torch.testing.assert_close(hub(x)[0], descriptors, atol=1e-6, rtol=1e-5)  # same weights; kernels may round differently
    _check_descriptors(descriptors, 12288)
    assert transform(Image.new("RGB", (90, 70))).shape == (3, 322, 322)
    by_path, _ = load_pretrained(path)  # the architecture read off the file
    assert by_path.backbone.eval_image_size == (322, 322)


def test_eval_transform_is_the_published_one(resnet_file) -> None:
    model, transform = load_pretrained("resnet50_16384", weights=resnet_file)
    assert not model.training
    to_tensor, resize, normalize = transform.transforms
    assert type(to_tensor).__name__ == "ToTensor"  # tensor first, then an antialiased resize
    assert tuple(resize.size) == (384, 384) and resize.interpolation == InterpolationMode.BICUBIC and resize.antialias
    assert tuple(normalize.mean) == (0.485, 0.456, 0.406) and tuple(normalize.std) == (0.229, 0.224, 0.225)
    image = Image.new("RGB", (120, 80), (200, 10, 30))
    assert transform(image).shape == (3, 384, 384)
    _, small = load_pretrained("boq_resnet50_16384", weights=resnet_file, image_size=[224, 160])
    assert small(image).shape == (3, 224, 160)


def test_release_is_downloaded_once_into_the_hub_cache(monkeypatch, tmp_path, resnet_file, capsys) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append(url)
        shutil.copyfile(resnet_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = hub_model("resnet50", 16384)
    assert downloads == [RELEASE_URL.format("resnet50_16384.pth")]
    assert (tmp_path / "hub" / "checkpoints" / "resnet50_16384.pth").is_file()
    second, _ = load_pretrained("boq_resnet50_16384")  # from the cache, no second download
    assert main(["download", "boq_resnet50_16384"]) == 0  # the CLI prints the cached file
    assert capsys.readouterr().out.strip() == str(tmp_path / "hub" / "checkpoints" / "resnet50_16384.pth")
    assert len(downloads) == 1 and calls == []
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_failed_download_says_how_to_work_offline(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    with pytest.raises(RuntimeError) as info:
        torch.hub.load(str(REPO), "get_trained_boq", source="local", backbone_name="dinov2", output_dim=12288)
    message = str(info.value)
    assert RELEASE_URL.format("dinov2_12288.pth") in message
    assert "weights=/path/dinov2_12288.pth" in message and "pretrained.path=/path/dinov2_12288.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "dinov2_12288.pth") in message
    assert calls == ["torch.hub.download_url_to_file"]  # the release file only, never backbone weights


def test_hub_arguments(offline, resnet_file) -> None:
    untrained = hub_model("dinov2", 12288, pretrained=False)  # the architecture, nothing downloaded
    assert untrained.descriptor_dim == 12288 and not untrained.training
    assert hub_model("resnet50", "16384", pretrained=False).descriptor_dim == 16384
    with pytest.raises(ValueError, match=r"backbone_name='vgg16'; the released models have \['dinov2', 'resnet50'\]"):
        hub_model("vgg16", 16384)
    with pytest.raises(ValueError, match=r"output_dim=4096 for backbone_name='resnet50'; released: \[16384\]"):
        hub_model("resnet50", 4096)
    with pytest.raises(ValueError, match="output_dim='big' must be an integer"):
        hub_model("resnet50", "big")
    with pytest.raises(ValueError, match=r"holds a resnet50 \+ BoQ.*call get_trained_boq\(backbone_name='resnet50', output_dim=16384"):
        hub_model("dinov2", 12288, weights=resnet_file)


def test_released_models_point_to_the_v1_release() -> None:
    assert {m.name: m.url for m in RELEASED_MODELS.values()} == {
        "boq_resnet50_16384": RELEASE_URL.format("resnet50_16384.pth"),
        "boq_dinov2_12288": RELEASE_URL.format("dinov2_12288.pth"),
    }


def test_import_vprlab_stays_light() -> None:
    code = (
        "import sys, vprlab\n"
        "assert 'torch' not in sys.modules, 'import vprlab imported torch'\n"
        "assert callable(vprlab.load_pretrained) and 'vprlab.pretrained' in sys.modules\n"
        "assert 'hydra' not in sys.modules, 'the pretrained path needs no Hydra'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
