"""SFRS (sfrs_vgg16_4096): a random state dict with exactly the keys and shapes OpenIBL's
``vgg16_netvlad`` gives (release_layouts/sfrs_vgg16_4096.tsv) converts, loads strictly and gives the
descriptor of an independent step-by-step computation written from yxgeee/OpenIBL's code with torch
primitives on the raw release tensors, on OpenIBL's own input normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from published_layouts import check_offline_message, random_release_tensors, read_release_layout

from vprlab import load_pretrained
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import sfrs as sfrs_family
from vprlab.pretrained.load import load_published_state
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD

NAME = "sfrs_vgg16_4096"
TOL = dict(atol=1e-5, rtol=1e-5)
OPENIBL_MEAN = [0.48501960784313836, 0.4579568627450961, 0.4076039215686255]  # ibl/utils/data/__init__.py
OPENIBL_STD = [0.00392156862745098] * 3
CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16().features indices, conv1_1 .. conv5_3
POOL_AFTER = (2, 7, 14, 21)  # a 2x2 max-pool follows conv1_2, conv2_2, conv3_3, conv4_3; features[:-2] drops ReLU + pool after conv5_3


def ref_sfrs(images01: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """OpenIBL's EmbedNetPCA(vgg16, NetVLAD) on images in [0, 1]: its Normalize, VGG16 features[:-2],
    NetVLAD (input L2, 1x1 conv soft-assignment, residuals to centroids, intra-norm, flatten K x C, L2),
    pca_layer (1x1 conv on [N, 32768, 1, 1]), L2."""
    x = (images01 - torch.tensor(OPENIBL_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENIBL_STD).view(1, 3, 1, 1)
    for index in CONVS:
        x = F.conv2d(x, sd[f"base_model.base.{index}.weight"], sd[f"base_model.base.{index}.bias"], padding=1)
        if index != 28:
            x = F.relu(x)
        if index in POOL_AFTER:
            x = F.max_pool2d(x, 2, 2)
    n, c = x.shape[:2]
    x = F.normalize(x, p=2, dim=1)
    soft = F.softmax(F.conv2d(x, sd["net_vlad.conv.weight"]).view(n, 64, -1), dim=1)  # [N, K, HW]
    flat = x.view(n, c, -1)
    residual = flat.unsqueeze(1) - sd["net_vlad.centroids"].view(1, 64, c, 1)  # [N, K, C, HW]
    vlad = (residual * soft.unsqueeze(2)).sum(dim=-1)  # [N, K, C]
    vlad = F.normalize(F.normalize(vlad, p=2, dim=2).view(n, -1), p=2, dim=1)
    out = F.conv2d(vlad.view(n, -1, 1, 1), sd["pca_layer.weight"], sd["pca_layer.bias"]).view(n, -1)
    return F.normalize(out, p=2, dim=-1)


@pytest.fixture(scope="module")
def raw() -> dict[str, torch.Tensor]:
    raw = random_release_tensors(read_release_layout(NAME), seed=21)
    # a trained-like NetVLAD (assignment alpha * c / |c|, OpenIBL's _init_params), so that the soft
    # assignment is selective and two images get different descriptors
    centres = F.normalize(torch.randn(64, 512, generator=torch.Generator().manual_seed(5)), dim=1)
    raw["net_vlad.centroids"] = 0.3 * centres
    raw["net_vlad.conv.weight"] = 30.0 * centres[:, :, None, None]
    for index in CONVS:  # He scaling keeps the image's signal through 13 ReLU convolutions (else the biases dominate)
        raw[f"base_model.base.{index}.weight"] *= 2**0.5
        raw[f"base_model.base.{index}.bias"] *= 0.01
    raw["pca_layer.bias"] *= 0.01  # of the size of the projected values (~1/sqrt(32768)), not above them
    return raw


def _imagenet_normalised(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(3))


def test_release_tensors_load_strictly_and_match_openibl_s_forward(raw) -> None:
    """The mapping and strict load the file goes through (no 540 MB file written: see the slow test)."""
    entry = published_model(NAME)
    model = entry.build_model().eval()
    load_published_state(model, sfrs_family.convert_sfrs(raw, entry), entry, "random SFRS release tensors")
    images01 = _images()
    with torch.no_grad():
        out = model(_imagenet_normalised(images01))
    assert out.shape == (2, 4096)
    torch.testing.assert_close(out, ref_sfrs(images01, raw), **TOL)
    assert (out[0] - out[1]).abs().max() > 1e-3


@pytest.mark.slow  # writes the 540 MB release file
def test_release_file_loads_through_load_pretrained(raw, tmp_path) -> None:
    path = tmp_path / "vgg16_netvlad.pth"
    torch.save(raw, path)
    model, transform = load_pretrained(NAME, weights=path)
    images01 = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(_imagenet_normalised(images01)), ref_sfrs(images01, raw), **TOL)
    assert [type(t).__name__ for t in transform.transforms] == ["Resize", "ToTensor", "Normalize"]


def test_missing_extra_and_misshapen_keys_are_named(raw) -> None:
    entry = published_model(NAME)
    broken = {k: v for k, v in raw.items() if k not in ("pca_layer.weight", "base_model.base.5.bias")}
    broken["net_vlad.centroids"] = torch.zeros(32, 512)
    broken["base_model.base.30.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        sfrs_family.convert_sfrs(broken, entry)
    message = str(info.value)
    assert "2 missing keys: backbone.net.5.bias, aggregator.pca.weight" in message
    assert "unexpected keys: backbone.net.30.weight" in message
    assert "aggregator.centroids (32, 512) (expected (64, 512))" in message
    with pytest.raises(ValueError, match=r"net_vlad\.alpha"):  # a key no rule maps
        sfrs_family.convert_sfrs({**raw, "net_vlad.alpha": torch.tensor(1.0)}, entry)


def test_preprocessing_is_openibl_s_and_vme_s() -> None:
    entry = published_model(NAME)
    assert entry.eval_preprocessing().describe() == "480x640 PIL bilinear"
    assert entry.eval_preprocessing("vpr-methods-evaluation").describe() == "native size"
    # OpenIBL's Normalize(mean, std=1/255) is the backbone's mean-pixel input on the ImageNet-normalised tensor
    model = entry.build_model()
    images01 = _images()
    expected = (images01 - torch.tensor(OPENIBL_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENIBL_STD).view(1, 3, 1, 1)
    model.backbone.pixel_mean.copy_(torch.tensor(sfrs_family.PIXEL_MEAN))
    torch.testing.assert_close(model.backbone.matconvnet_input(_imagenet_normalised(images01)), expected, atol=1e-4, rtol=0)


def test_export_is_the_inverse_of_convert(raw) -> None:
    back = sfrs_family.export_sfrs(sfrs_family.convert_sfrs(raw))
    assert list(back) == list(raw)
    assert all(torch.equal(back[k], raw[k]) for k in raw)


def test_offline_names_the_url_and_the_path(monkeypatch, tmp_path) -> None:
    entry = published_model(NAME)
    check_offline_message(monkeypatch, tmp_path, NAME, (entry.url, str(tmp_path / "hub" / "checkpoints" / "vgg16_netvlad.pth")))


def test_hub_entry_is_called_as_openibl_s() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    model = torch.hub.load(str(repo), "vgg16_netvlad", source="local")  # OpenIBL's default: pretrained=False, nothing read
    assert model.aggregator.descriptor_dim == 4096 and model.eval_preprocessing.describe() == "480x640 PIL bilinear"
    assert torch.equal(model.backbone.pixel_mean, torch.tensor(sfrs_family.PIXEL_MEAN, dtype=torch.float32))
