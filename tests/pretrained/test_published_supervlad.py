"""The released SuperVLAD and SuperVLAD-CrossImage models (github.com/Lu-Feng/SuperVLAD): random state
dicts with exactly the keys and shapes of the Google Drive files (release_layouts/supervlad*.tsv, read
off the original code), saved in the container train.py writes, load strictly and give the descriptors
of an independent step-by-step computation written from the original network.py / supervlad_layer.py
with plain torch ops on the raw release tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from PIL import Image
from release_reference import forbid_network
from test_published_cricavpr import random_file_state, read_layout, ref_encoder, save_release
from test_published_dinov2_vgg import TOL, ref_dinov2

from vprlab.models.spec import mixes_batch
from vprlab.pretrained import load_pretrained
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import supervlad as family
from vprlab.pretrained.load import eval_preprocessing
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD

NAMES = {False: "supervlad_dinov2_3072", True: "supervlad_crossimage_dinov2_3072"}
DRIVE = {False: "1wRkUO4E8s5hNRNNIWcuA8RUvlGob3Tbf", True: "1yomnWGTJko6nf3F2Ju6RWsLhP2EG82tL"}


def ref_supervlad(x: torch.Tensor, sd: dict[str, torch.Tensor], cross_image: bool) -> torch.Tensor:
    """SuperVLADModel.forward (backbone 'dino'): final-normed patch tokens, SuperVLAD (4 clusters + 1 ghost,
    no centroids), then the cross-image encoder over the batch for SuperVLAD-CrossImage."""
    patches, _ = ref_dinov2(x, sd, "backbone.")
    batch, dim = patches.shape[:2]
    feats = F.normalize(patches, p=2, dim=1).reshape(batch, dim, -1)  # [B, D, N]
    soft = F.conv2d(F.normalize(patches, p=2, dim=1), sd["aggregation.conv.weight"]).reshape(batch, 5, -1).softmax(dim=1)
    vlad = torch.stack([(feats * soft[:, k:k + 1, :]).sum(dim=-1) for k in range(5)], dim=1)  # [B, 5, D]
    vlad = F.normalize(vlad[:, :-1, :], p=2, dim=2).reshape(batch, -1)  # ghost dropped, intra-normalised
    vlad = F.normalize(vlad, p=2, dim=1)
    if cross_image:
        vlad = ref_encoder(vlad.reshape(batch, -1, dim), sd, "encoder.").reshape(batch, -1)
    return F.normalize(vlad, p=2, dim=-1)


@pytest.mark.parametrize("cross_image", [False, True], ids=["supervlad", "crossimage"])
def test_release_file_loads_strictly_and_matches_the_original(cross_image, tmp_path, monkeypatch) -> None:
    name = NAMES[cross_image]
    layout = read_layout(f"{name}.tsv")
    assert len(layout) == (200 if cross_image else 176)
    raw = random_file_state(layout, seed=7 + cross_image)
    path = tmp_path / published_model(name).file_name
    save_release(path, raw)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    model, _ = load_pretrained(name, weights=path)
    assert model.descriptor_dim == 3072 and mixes_batch(model) == cross_image and calls == []
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    # a square 9x9 grid (the original reshapes the patch tokens to a square) and batches of 2 and 1
    x = torch.randn(2, 3, 126, 126, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out, alone = model(x), model(x[:1])
        torch.testing.assert_close(out, ref_supervlad(x, sd, cross_image), **TOL)
        torch.testing.assert_close(alone, ref_supervlad(x[:1], sd, cross_image), **TOL)
    assert ((out[:1] - alone).abs().max() > 1e-3) == cross_image  # only the encoder mixes the batch
    exported = family.export_supervlad(model.state_dict(), published_model(name))
    assert set(exported) == set(sd) and all(torch.equal(exported[k], sd[k]) for k in sd)


def test_mapping_names_missing_misshapen_and_unknown_keys() -> None:
    layout = read_layout("supervlad_crossimage_dinov2_3072.tsv")
    shapes = {k.removeprefix("module."): v for k, v in layout.items()}
    sd = {k: torch.zeros(s) for k, s in shapes.items()}
    cross = published_model(NAMES[True])
    with pytest.raises(ValueError, match=r"unexpected keys: aggregator\.encoder\.layers\.0"):
        family.convert_supervlad(sd, published_model(NAMES[False]))  # the cross-image file is not SuperVLAD's
    broken = dict(sd)
    broken["aggregation.conv.weight"] = torch.zeros(6, 768, 1, 1)  # 1-ClusterVLAD would have 3 rows
    with pytest.raises(ValueError, match=r"shape mismatches: aggregator\.assignment\.weight \(6, 768, 1, 1\) \(expected \(5, 768, 1, 1\)\)"):
        family.convert_supervlad(broken, cross)
    del broken["aggregation.conv.weight"]
    broken["aggregation.centroids"] = torch.zeros(4, 768)
    with pytest.raises(ValueError, match=r"1 keys that no mapping knows: aggregation\.centroids"):
        family.convert_supervlad(broken, cross)


def test_preprocessing_is_the_originals_and_vme_s() -> None:
    """eval.py / datasets_ws.py: ToTensor, Normalize, torchvision tensor resize to 322x322 (bilinear, no
    antialiasing in the pinned torchvision 0.15); VPR-methods-evaluation: --image_size 322 322 (antialiased
    Resize on the normalised tensor; the wrapper's rounding to multiples of 14 keeps 322)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    normed = (tensor - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    for name in NAMES.values():
        for protocol, antialias in ((None, False), ("vpr-methods-evaluation", True)):
            expected = F.interpolate(normed[None], size=(322, 322), mode="bilinear", align_corners=False, antialias=antialias)[0]
            torch.testing.assert_close(eval_preprocessing(name, protocol).transform()(image), expected, atol=1e-5, rtol=1e-5)
    assert "depend on the other images of the batch" in published_model(NAMES[True]).note
    assert published_model(NAMES[False]).note == ""


@pytest.mark.parametrize("cross_image", [False, True], ids=["supervlad", "crossimage"])
def test_google_drive_file_says_where_to_get_it(cross_image, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    spec = published_model(NAMES[cross_image])
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained(spec.name)
    message = str(info.value)
    assert f"Google Drive file id {DRIVE[cross_image]}" in message and calls == []
    assert str(tmp_path / "hub" / "checkpoints" / spec.file_name) in message


def test_hub_entry_as_vme_names_the_models() -> None:
    for model_name, cross_image in (("SuperVLAD", False), ("SuperVLAD-CrossImage", True)):
        model = torch.hub.load(str(REPO), "supervlad", source="local", model_name=model_name, pretrained=False)
        assert mixes_batch(model) == cross_image and model.descriptor_dim == 3072
    with pytest.raises(ValueError, match="model_name='1-ClusterVLAD'"):
        torch.hub.load(str(REPO), "supervlad", source="local", model_name="1-ClusterVLAD", pretrained=False)
