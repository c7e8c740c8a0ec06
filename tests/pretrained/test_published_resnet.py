"""Published ResNet models (CosPlace / EigenPlaces, MixVPR, Conv-AP): a random state dict with exactly
the keys and shapes of the released file (reference/published_checkpoints/*.tsv), saved in the
released container, loads strictly by name and gives the descriptor of an independent computation
written from the README's facts with torchvision's ResNet and plain torch ops on the raw release
tensors (not through vprlab's modules)."""

from __future__ import annotations

import ast
import functools
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import SHARED
from PIL import Image
from release_reference import forbid_network, random_state_dict

from vprlab.pretrained import (
    PUBLISHED_MODELS,
    eval_preprocessing,
    load_pretrained,
    published_model,
    read_published_state,
)

REFERENCE = SHARED / "reference" / "published_checkpoints"


def tsv_layout(name: str) -> dict[str, tuple[int, ...]]:
    if not REFERENCE.is_dir():
        pytest.skip(f"needs {REFERENCE} (the released files' key listings)")
    layout = {}
    for line in (REFERENCE / f"{name}.tsv").read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


@functools.cache
def _random_release(name: str) -> dict[str, torch.Tensor]:
    state = random_state_dict(tsv_layout(name))
    if "aggregation.1.p" in state:  # GeM's p: a plausible exponent
        state["aggregation.1.p"] = torch.tensor([3.0])
    return state


def release_file(tmp_path: Path, name: str, dtype: torch.dtype = torch.float32) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random state dict in the TSV's layout, written as the release's bare torch.save'd state dict."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _random_release(name).items()}
    path = tmp_path / published_model(name).file_name
    torch.save(state, path)
    return path, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# ------------------------------------------------------------------------ independent computations

# CosPlace's backbone is nn.Sequential(conv1, bn1, relu, maxpool, layer1..layer4): index -> torchvision name.
_COSPLACE_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def torchvision_resnet(raw: dict[str, torch.Tensor], prefix: str, rename, model_name: str = "resnet50"):
    """torchvision's ResNet (eval mode) holding the raw release tensors under ``prefix``."""
    resnet = getattr(torchvision.models, model_name)(weights=None)
    mapped = {rename(k[len(prefix):]): v for k, v in raw.items() if k.startswith(prefix)}
    missing, unexpected = resnet.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.startswith(("fc.", "layer4.")) for k in missing), (missing, unexpected)
    return resnet.eval()


def resnet_features(resnet, x: torch.Tensor, last: str) -> torch.Tensor:
    out = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    for name in ("layer1", "layer2", "layer3", "layer4"):
        out = getattr(resnet, name)(out)
        if name == last:
            return out
    raise AssertionError(last)


def unit(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True)


def reference_cosplace(x: torch.Tensor, raw: dict, model_name: str = "resnet50") -> torch.Tensor:
    """README: ResNet with layer4, L2 per position, GeM (clamp 1e-6, learned p), Linear, L2."""
    resnet = torchvision_resnet(raw, "backbone.", lambda k: f"{_COSPLACE_RESNET[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}", model_name)
    f = unit(resnet_features(resnet, x, "layer4"))
    p = raw["aggregation.1.p"]
    pooled = f.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return unit(pooled @ raw["aggregation.3.weight"].T + raw["aggregation.3.bias"])


def _gsv_rename(key: str) -> str:
    return key  # backbone.model.<torchvision name>: the names already are torchvision's


def reference_mixvpr(x: torch.Tensor, raw: dict, depth: int = 4) -> torch.Tensor:
    """README: ResNet50 to layer3, rows of 400 positions through 4 mixers, channel_proj, row_proj, flatten c*R+r, L2."""
    resnet = torchvision_resnet(raw, "backbone.model.", _gsv_rename)
    t = resnet_features(resnet, x, "layer3").flatten(2)  # [B, 1024, 400]
    for i in range(depth):
        w = lambda n: raw[f"aggregator.mix.{i}.mix.{n}"]  # noqa: E731
        h = F.layer_norm(t, (t.shape[-1],), w("0.weight"), w("0.bias"), 1e-5)
        t = t + torch.relu(h @ w("1.weight").T + w("1.bias")) @ w("3.weight").T + w("3.bias")
    t = t.transpose(1, 2) @ raw["aggregator.channel_proj.weight"].T + raw["aggregator.channel_proj.bias"]  # [B, 400, C]
    t = t.transpose(1, 2) @ raw["aggregator.row_proj.weight"].T + raw["aggregator.row_proj.bias"]  # [B, C, R]
    return unit(t.reshape(t.shape[0], -1))


def reference_convap(x: torch.Tensor, raw: dict) -> torch.Tensor:
    """README: ResNet50 to layer4, 1x1 conv with bias, adaptive average pooling to 2x2, flatten c*4+i*2+j, L2."""
    resnet = torchvision_resnet(raw, "backbone.model.", _gsv_rename)
    f = F.conv2d(resnet_features(resnet, x, "layer4"), raw["aggregator.channel_pool.weight"], raw["aggregator.channel_pool.bias"])
    pooled = F.adaptive_avg_pool2d(f, (2, 2))
    return unit(pooled.reshape(pooled.shape[0], -1))


# name -> (reference, input shape): small inputs where the architecture allows; MixVPR needs 320x320.
CASES = {
    "cosplace_resnet50_2048": (reference_cosplace, (2, 3, 64, 96)),
    "eigenplaces_resnet50_2048": (reference_cosplace, (2, 3, 64, 64)),
    "mixvpr_resnet50_4096": (reference_mixvpr, (1, 3, 320, 320)),
    "convap_resnet50_4096": (reference_convap, (2, 3, 64, 64)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_layout_loads_strictly_and_matches_the_step_by_step_computation(name, tmp_path) -> None:
    reference, shape = CASES[name]
    path, raw = release_file(tmp_path, name)
    model, transform = load_pretrained(name, weights=path)
    assert not model.training and model.descriptor_dim == published_model(name).descriptor_dim
    assert repr(transform) == repr(published_model(name).preprocessing.transform())
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, expected = model(x), reference(x, raw)
    assert ours.shape == (shape[0], published_model(name).descriptor_dim)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # Every released tensor is in the model, unchanged (the mapping loses and invents nothing).
    assert sum(v.numel() for v in model.state_dict().values()) == sum(v.numel() for v in raw.values())


def test_float16_file_loads_and_is_cast(tmp_path) -> None:
    path, raw = release_file(tmp_path, "convap_resnet50_4096", torch.float16)
    model, transform = load_pretrained("convap_resnet50_4096", weights=path, protocol="vpr-methods-evaluation")
    assert "Normalize" in repr(transform).split("Resize")[0]  # that protocol resizes after normalising
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_convap(x, raw), atol=1e-5, rtol=1e-5)


def test_wrong_files_name_the_keys(tmp_path) -> None:
    name = "cosplace_resnet50_2048"
    _, raw = release_file(tmp_path, name)
    bad = tmp_path / "bad.pth"

    misshapen = {**raw, "aggregation.3.weight": torch.zeros(512, 2048)}
    torch.save(misshapen, bad)
    with pytest.raises(ValueError, match=r"does not match the released cosplace_resnet50_2048 .*1 shape mismatches: aggregator\.fc\.weight \(512, 2048\) \(expected \(2048, 2048\)\) \(in the file's key names: 1 shape mismatches: aggregation\.3\.weight"):
        load_pretrained(name, weights=bad)
    torch.save({k: v for k, v in raw.items() if k != "aggregation.1.p"}, bad)
    with pytest.raises(ValueError, match=r"1 missing keys: aggregator\.p \(in the file's key names: 1 missing keys: aggregation\.1\.p\)"):
        load_pretrained(name, weights=bad)
    torch.save({**raw, "backbone.fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match=rf"weights file '{bad}' is not cosplace_resnet50_2048's file ResNet50_2048_cosplace\.pth: CosPlace ResNet50 release .*: 1 keys that no mapping knows: backbone\.fc\.weight"):
        load_pretrained(name, weights=bad)
    # A MixVPR file given for Conv-AP: its keys are named.
    mix, _ = release_file(tmp_path, "mixvpr_resnet50_4096")
    with pytest.raises(ValueError, match=r"Conv-AP ResNet50 release .*: \d+ keys that no mapping knows: aggregator\.mix\.0\.mix\.0\.weight"):
        load_pretrained("convap_resnet50_4096", weights=mix)


def _as_if_saved_on_a_gpu(path: Path, out: Path) -> None:
    """Rewrite a torch.save zip so that every storage says it was saved on ``cuda:0`` (what a file
    saved from a GPU holds: without map_location it cannot load on a machine without CUDA)."""
    import zipfile

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info, data)


def test_gpu_saved_and_prefixed_files_load(tmp_path) -> None:
    """A file saved from a GPU (MixVPR / Conv-AP Google Drive files may be) loads on the CPU; a
    DataParallel-style ``module.`` prefix is dropped."""
    path, raw = release_file(tmp_path, "convap_resnet50_4096")
    prefixed = tmp_path / "prefixed.ckpt"
    torch.save({f"module.{k}": v for k, v in raw.items()}, prefixed)
    gpu_saved = tmp_path / "gpu.ckpt"
    _as_if_saved_on_a_gpu(prefixed, gpu_saved)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu_saved, weights_only=True)  # what a loader without map_location meets
    state = read_published_state("convap_resnet50_4096", gpu_saved)
    assert list(state) == list(read_published_state("convap_resnet50_4096", path))
    assert all(v.device.type == "cpu" for v in state.values())
    assert torch.equal(state["aggregator.channel_pool.weight"], raw["aggregator.channel_pool.weight"])


def test_other_cosplace_backbones_map_from_torchvision_names(tmp_path) -> None:
    """ResNet18 CosPlace (no TSV): a file written from torchvision's resnet18 in CosPlace's Sequential
    naming (fc dropped) plus aggregation.{1.p, 3.*} loads and matches the step-by-step computation."""
    resnet = torchvision.models.resnet18(weights=None)
    back = {v: k for k, v in _COSPLACE_RESNET.items()}
    raw = {f"backbone.{back[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    raw.update({"aggregation.1.p": torch.tensor([2.5]), "aggregation.3.weight": torch.randn(32, 512) / 20, "aggregation.3.bias": torch.randn(32) / 10})
    path = tmp_path / "ResNet18_32_cosplace.pth"
    torch.save(raw, path)
    model, transform = load_pretrained("cosplace_resnet18_32", weights=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_cosplace(x, raw, "resnet18"), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- preprocessing


def test_each_method_prepares_images_its_own_way() -> None:
    import torchvision.transforms.functional as TF

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    convap = eval_preprocessing("convap_resnet50_4096").transform()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = TF.normalize(TF.to_tensor(image.resize((320, 320), Image.BILINEAR)), mean, std)  # PIL stage, bilinear
    torch.testing.assert_close(convap(image), expected)
    # VPR-methods-evaluation's variant: the normalised tensor is resized (bilinear, antialiased).
    vme = eval_preprocessing("convap_resnet50_4096", "vpr-methods-evaluation").transform()
    expected_vme = TF.resize(TF.normalize(TF.to_tensor(image), mean, std), [320, 320], antialias=True)
    torch.testing.assert_close(vme(image), expected_vme)
    # CosPlace: native size, only ToTensor + normalisation.
    cosplace = eval_preprocessing("cosplace_resnet50_2048").transform()
    torch.testing.assert_close(cosplace(image), TF.normalize(TF.to_tensor(image), mean, std))
    assert published_model("cosplace_resnet50_2048").preprocessing.describe() == "native size"
    assert eval_preprocessing("mixvpr_resnet50_4096").describe() == "320x320 PIL bilinear"
    # BoQ: tensor-stage bicubic antialiased, as its own transform.
    assert eval_preprocessing("boq_dinov2_12288").describe() == "322x322 tensor bicubic antialiased"
    with pytest.raises(ValueError, match="unknown eval protocol 'nope'"):
        eval_preprocessing("cosplace_resnet50_2048", "nope")


def test_round_to_multiple_of_14() -> None:
    from vprlab.data.transforms import EvalPreprocessing

    transform = EvalPreprocessing(None, "bilinear", stage="normalized", multiple_of=14).transform()
    image = Image.fromarray(np.zeros((100, 130, 3), dtype=np.uint8))
    assert transform(image).shape == (3, 98, 126)  # round(100/14)*14, round(130/14)*14
    assert transform(Image.fromarray(np.zeros((98, 126, 3), dtype=np.uint8))).shape == (3, 98, 126)


# ------------------------------------------------------------------------------- files and network


def test_offline_error_names_url_and_path_at_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        load_pretrained("eigenplaces_resnet50_2048")
    assert time.perf_counter() - start < 5  # one attempt, no retries
    message = str(info.value)
    assert "https://github.com/gmberton/EigenPlaces/releases/download/v1.0/ResNet50_2048_eigenplaces.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "ResNet50_2048_eigenplaces.pth") in message
    assert calls == ["torch.hub.download_url_to_file"]


def test_google_drive_files_say_where_to_get_them(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"cannot be downloaded by URL; get it from Google Drive file id 1vuz3PvnR7vxnDDLQrdHJaOA04SQrtk5L"):
        load_pretrained("mixvpr_resnet50_4096")
    with pytest.raises(FileNotFoundError, match=rf"copy it to {tmp_path / 'hub' / 'checkpoints'}/resnet50_ConvAP_2048_2x2\.ckpt"):
        load_pretrained("convap_resnet50_8192")
    assert calls == []
    # Put where the message says, it loads without network.
    path, _ = release_file(tmp_path, "convap_resnet50_4096")
    target = tmp_path / "hub" / "checkpoints" / path.name
    target.parent.mkdir(parents=True)
    path.rename(target)
    model, _ = load_pretrained("convap_resnet50_4096")
    assert model.descriptor_dim == 4096 and calls == []


def test_download_once_into_the_hub_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    source, _ = release_file(tmp_path, "cosplace_resnet50_2048")
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append(url)
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    load_pretrained("cosplace_resnet50_2048")
    load_pretrained("cosplace_resnet50_2048")
    assert downloads == [published_model("cosplace_resnet50_2048").url]
    assert (tmp_path / "hub" / "checkpoints" / "ResNet50_2048_cosplace.pth").is_file()


def test_registry_covers_every_released_pair() -> None:
    names = set(PUBLISHED_MODELS)
    cosplace = {f"cosplace_{b}_{d}" for b, ds in {"vgg16": (64, 128, 256, 512), "resnet18": (32, 64, 128, 256, 512)}.items() for d in ds}
    cosplace |= {f"cosplace_resnet{n}_{d}" for n in (50, 101, 152) for d in (32, 64, 128, 256, 512, 1024, 2048)}
    eigen = {"eigenplaces_vgg16_512", "eigenplaces_resnet18_256", "eigenplaces_resnet18_512"}
    eigen |= {f"eigenplaces_resnet{n}_{d}" for n in (50, 101) for d in (128, 256, 512, 1024, 2048)}
    others = {"mixvpr_resnet50_4096", "mixvpr_resnet50_512", "mixvpr_resnet50_128", "convap_resnet50_512", "convap_resnet50_2048",
              "convap_resnet50_4096", "convap_resnet50_8192", "salad_dinov2_8448", "megaloc_dinov2_8448", "megaloc_dinov2_8448_legacy",
              "netvlad_vgg16_pitts30k", "netvlad_vgg16_pitts30k_32768", "boq_resnet50_16384", "boq_dinov2_12288"}
    others |= {"cliquemining_dinov2_8448", "salad_indoor_dinov2_8448", "salad_indoor_v1_dinov2_8448",
               "eigenplaces_indoor_resnet50_2048", "eigenplaces_indoor_v1_resnet50_2048"}  # SALAD's and EigenPlaces' other releases
    others |= {"dinomix_dinov2_4096", "apgem_resnet101_2048", "sfrs_vgg16_4096"}  # VPR-methods-evaluation's DINO-Mix, AP-GeM, SFRS
    others |= {"cricavpr_dinov2_10752", "supervlad_dinov2_3072", "supervlad_crossimage_dinov2_3072"}  # Lu-Feng's
    others |= {f"anyloc_{d}_dinov2g_49152" for d in ("urban", "indoor", "aerial", "structured", "unstructured", "global")}
    others |= {f"qaa_dinov2_{d}" for d in (1024, 2048, 4096, 8192)} | {"edtformer_dinov2_4096"}
    assert names == cosplace | eigen | others
    assert len(cosplace) == 30
    assert "may not exist" in published_model("eigenplaces_resnet101_1024").note
    for name, spec in PUBLISHED_MODELS.items():
        dim = spec.descriptor_dim
        assert name.endswith(str(dim)) or name.endswith("_legacy") or name == "netvlad_vgg16_pitts30k"
        assert (spec.url is None) == (spec.manual_download is not None)


@pytest.mark.parametrize("name", ["cosplace_resnet101_512", "mixvpr_resnet50_128", "convap_resnet50_8192", "eigenplaces_resnet18_256"])
def test_variants_build_with_the_stated_dimension(name) -> None:
    model = published_model(name).build_model().eval()
    size = 320 if name.startswith("mixvpr") else 64
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, published_model(name).descriptor_dim)
