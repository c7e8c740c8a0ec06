"""AnyLoc-VLAD-DINOv2 (six domain vocabularies): the release layout (DINOv2 ViT-G/14 state dict + one
[32, 1536] centre tensor per domain) converts onto the ViT-G model built on the meta device (no
memory), and the same code path with a tiny ViT (3 blocks, width 64, the facet taken from block 1)
loads two random files in the release containers strictly through ``load_pretrained`` and gives the
descriptor of an independent step-by-step computation (plain torch ops on the raw release tensors,
written from AnyLoc/DINO's dinov2_extractor.py and utilities.py VLAD.generate)."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as tvf
from PIL import Image
from test_published_dinov2_vgg import random_release  # the same random values for a release layout

import vprlab
from vprlab.pretrained import registry
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.download import release_file
from vprlab.pretrained.families import anyloc as anyloc_family
from vprlab.pretrained.families._common import VME_DINO
from vprlab.pretrained.hub import hub_anyloc
from vprlab.utils.errors import ConfigError, DownloadError
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD

LAYOUTS = Path(__file__).parent / "release_layouts"
NAME = "anyloc_urban_dinov2g_49152"
VOCAB = "dinov2_vitg14_l31_value_c32_urban_c_centers.pt"
DINO_FILE = "dinov2_vitg14_pretrain.pth"
TOL = dict(atol=1e-5, rtol=1e-5)
# The tiny ViT: ViT-G's layout with width 64 (4 heads), SwiGLU hidden 176 (DINOv2's rule: (int(4*64*2/3)+7)//8*8),
# 3 blocks, the facet read from block 1.
TINY = {"depth": 3, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 352 / 64}
TINY_SHAPES = {1536: 64, 4608: 192, 8192: 352, 4096: 176}
TINY_LAYER = 1


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (LAYOUTS / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


def tiny_layout() -> dict[str, tuple[int, ...]]:
    """The ViT-G release layout with 3 blocks and every width scaled down (same keys otherwise, same order)."""
    out = {}
    for key, shape in read_tsv("dinov2_vitg14_pretrain.tsv").items():
        if key.startswith("blocks.") and int(key.split(".")[1]) >= TINY["depth"]:
            continue
        out[key] = tuple(TINY_SHAPES.get(s, s) for s in shape)
    return out


# ------------------------------------------------------------------ AnyLoc's computation, step by step


def ref_value_facet(x: torch.Tensor, sd: dict[str, torch.Tensor], layer: int, heads: int, third: int = 2) -> torch.Tensor:
    """DINOv2 (release tensors) run to block ``layer``; the ``third`` (0 query, 1 key, 2 value) of that
    block's qkv output for the patch tokens (class token dropped), each L2-normalised: [B, N, C]."""
    batch, _, height, width = x.shape
    gh, gw = height // 14, width // 14
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    dim = tokens.shape[-1]
    tokens = torch.cat([sd["cls_token"].expand(batch, 1, dim), tokens], dim=1)
    pos = sd["pos_embed"]
    grid = pos[:, 1:].reshape(1, 37, 37, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((gh + 0.1) / 37, (gw + 0.1) / 37), mode="bicubic", antialias=False)
    tokens = tokens + torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    for i in range(layer + 1):
        b = f"blocks.{i}."
        h = F.layer_norm(tokens, (dim,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])  # what the hook on attn.qkv sees
        if i == layer:
            facet = qkv[:, 1:, third * dim : (third + 1) * dim]
            return facet / facet.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        q, k, v = qkv.reshape(batch, -1, 3, heads, dim // heads).unbind(2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dim // heads)
        attended = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v).reshape(batch, -1, dim)
        tokens = tokens + sd[b + "ls1.gamma"] * F.linear(attended, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(tokens, (dim,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        x1, x2 = F.linear(h, sd[b + "mlp.w12.weight"], sd[b + "mlp.w12.bias"]).chunk(2, dim=-1)
        tokens = tokens + sd[b + "ls2.gamma"] * F.linear(F.silu(x1) * x2, sd[b + "mlp.w3.weight"], sd[b + "mlp.w3.bias"])
    raise AssertionError("unreachable")


def ref_vlad(descs: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """utilities.py VLAD.generate: hard assignment by cosine, residuals of the normalised descriptors to the
    raw centres summed per cluster (a loop, as the original), intra-normalised, flattened (c d), L2."""
    d1 = descs / descs.norm(dim=-1, keepdim=True)
    c1 = centres / centres.norm(dim=-1, keepdim=True)
    labels = (d1 @ c1.T).argmax(dim=-1)  # [B, N]
    out = torch.zeros(descs.shape[0], *centres.shape)
    for b in range(descs.shape[0]):
        for c in range(centres.shape[0]):
            out[b, c] = (d1[b, labels[b] == c] - centres[c]).sum(dim=0)
    out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    flat = out.reshape(descs.shape[0], -1)
    return flat / flat.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def tiny(monkeypatch, hub_dir):
    """The registered urban entry with the tiny ViT (the same family functions, files, preprocessing)."""
    spec = published_model(NAME)
    options = {**spec.options, "timm_overrides": TINY, "facet_layer": TINY_LAYER}
    monkeypatch.setitem(registry._PUBLISHED, NAME, dataclasses.replace(spec, options=options))
    return published_model(NAME)


@pytest.fixture
def tiny_files(tmp_path) -> tuple[Path, dict[str, torch.Tensor], torch.Tensor]:
    """(vocabulary path, DINOv2 state, centres): the two files in the release containers, side by side."""
    folder = tmp_path / "files"
    folder.mkdir()
    dino = random_release(tiny_layout(), seed=1)
    centres = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    torch.save(dino, folder / DINO_FILE)  # a bare state dict, as torch.hub's DINOv2 file
    torch.save(centres, folder / VOCAB)  # one tensor, as AnyLoc's hubconf reads it (torch.load -> c_centers)
    return folder / VOCAB, dino, centres


# ------------------------------------------------------------------ the real ViT-G layout, without memory


def test_release_layout_converts_onto_the_vitg_model_on_the_meta_device() -> None:
    spec = published_model(NAME)
    dino = read_tsv("dinov2_vitg14_pretrain.tsv")
    vocab = read_tsv("anyloc_urban_dinov2g_49152.tsv")
    assert len(dino) == 567 and sum(math.prod(s) for s in dino.values()) == 1_136_480_768
    assert vocab == {"c_centers": (32, 1536)}
    raw = {"c_centers": torch.empty(32, 1536, device="meta")}
    raw.update({f"dinov2.{k}": torch.empty(s, device="meta") for k, s in dino.items()})
    state = anyloc_family.convert_anyloc(raw, spec)
    with torch.device("meta"):
        model = spec.build_model()
    assert list(state) == list(model.state_dict())
    assert state["backbone.dino.blocks.39.mlp.fc1.weight"].shape == (8192, 1536)  # from mlp.w12
    assert state["aggregator.centroids"].shape == (32, 1536) and bool(state["aggregator.initialised"]) is True
    assert model.descriptor_dim == 49152 == spec.descriptor_dim
    assert (model.backbone.facet_layer, model.backbone.facet, len(model.backbone.dino.blocks)) == (31, "value", 40)
    assert model.aggregator.assignment == "hard" and model.aggregator.conv is None
    assert sum(p.numel() for p in model.parameters()) == 1_136_480_768 + 32 * 1536


def test_six_domains_with_their_files_and_urls() -> None:
    names = sorted(n for n in registry.PUBLISHED_MODELS if n.startswith("anyloc_"))
    assert names == sorted(f"anyloc_{d}_dinov2g_49152" for d in ("urban", "indoor", "aerial", "structured", "unstructured", "global"))
    for name in names:
        spec = published_model(name)
        domain = name.split("_")[1]
        assert spec.url == f"https://github.com/AnyLoc/DINO/releases/download/v1/dinov2_vitg14_l31_value_c32_{domain}_c_centers.pt"
        assert spec.local_path().parts[-3:] == ("checkpoints", "anyloc_files", spec.file_name)  # where AnyLoc's hub caches it
        [dino] = spec.extra_files
        assert dino.url == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth"
        assert dino.local_path().parts[-2:] == ("checkpoints", DINO_FILE)  # where torch.hub's DINOv2 keeps it
        assert spec.eval_preprocessing("vpr-methods-evaluation") == VME_DINO


# ------------------------------------------------------------------ step by step, tiny ViT, same code path


def test_tiny_files_load_strictly_and_match_anyloc_step_by_step(tiny, tiny_files) -> None:
    vocab_path, dino, centres = tiny_files
    model, transform = vprlab.load_pretrained(NAME, weights=vocab_path)
    assert model.descriptor_dim == 32 * 64
    assert torch.equal(model.aggregator.centroids, centres)
    assert torch.equal(model.backbone.dino.blocks[2].mlp.fc2.weight, dino["blocks.2.mlp.w3.weight"])
    x = torch.randn(2, 3, 14 * 7, 14 * 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)
    facet = ref_value_facet(x, dino, TINY_LAYER, heads=4)
    expected = ref_vlad(facet, centres)
    assert out.shape == (2, 2048)
    torch.testing.assert_close(out, expected, **TOL)
    labels = (facet @ F.normalize(centres, dim=1).T).argmax(-1)
    assert len(labels.unique()) > 8  # many clusters used: the comparison covers the assignment
    # The comparison tells the facet and the layer apart, and the raw (not normalised) centres in the residuals.
    for wrong in (ref_vlad(ref_value_facet(x, dino, TINY_LAYER, heads=4, third=1), centres),
                  ref_vlad(ref_value_facet(x, dino, TINY_LAYER + 1, heads=4), centres),
                  ref_vlad(facet, F.normalize(centres, dim=1))):
        assert (wrong - out).abs().max() > 1e-3
    # torch.hub's get_vlad_model, as VPR-methods-evaluation calls AnyLoc's: the same model and descriptor
    hub = hub_anyloc("Urban", backbone="DINOv2", weights=vocab_path, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(hub(x), out, atol=0, rtol=0)
    assert hub.eval_preprocessing == anyloc_family.ANYLOC_EVAL


def test_hub_refuses_what_was_not_released(tiny, tiny_files) -> None:
    vocab_path, _, _ = tiny_files
    with pytest.raises(ConfigError, match=r"domain=None.*'urban', 'indoor'"):
        hub_anyloc(None, weights=vocab_path)
    with pytest.raises(ConfigError, match=r"vit_layer=23.*vit_layer=31"):
        hub_anyloc("urban", vit_layer=23, weights=vocab_path)
    with pytest.raises(ConfigError, match="more than one AnyLoc model.*anyloc_urban_dinov2g_49152"):
        vprlab.pretrained.find_published("anyloc")


def test_differences_are_named(tiny, tiny_files) -> None:
    vocab_path, dino, centres = tiny_files
    folder = vocab_path.parent
    bad = dict(dino)
    del bad["blocks.0.attn.qkv.bias"]
    bad["blocks.0.extra"] = torch.zeros(3)
    torch.save(bad, folder / DINO_FILE)
    with pytest.raises(ConfigError, match=r"missing keys: backbone\.dino\.blocks\.0\.attn\.qkv\.bias.*unexpected keys: backbone\.dino\.blocks\.0\.extra"):
        vprlab.load_pretrained(NAME, weights=vocab_path)
    torch.save(dino, folder / DINO_FILE)
    torch.save(centres[:31], vocab_path)
    with pytest.raises(ConfigError, match=r"aggregator\.centroids \(31, 64\) \(expected \(32, 64\)\)"):
        vprlab.load_pretrained(NAME, weights=vocab_path)
    torch.save({"c_centers": centres}, vocab_path)  # a dict is not the release's container
    with pytest.raises(ConfigError, match="holds a dict, not an AnyLoc vocabulary"):
        vprlab.load_pretrained(NAME, weights=vocab_path)


def test_full_size_vocabulary_file_reads(tmp_path) -> None:
    path = tmp_path / VOCAB
    centres = torch.randn(32, 1536)
    torch.save(centres, path)
    raw = anyloc_family.read_vocabulary(path)
    assert list(raw) == ["c_centers"] and torch.equal(raw["c_centers"], centres)


# ------------------------------------------------------------------ preprocessing


def test_preprocessing_is_anylocs_eval_code() -> None:
    """dvgl_benchmark/datasets_ws.py BaseDataset (resize [480, 640] on the normalised tensor, torchvision
    0.14's tensor default: no antialiasing) then scripts/dino_v2_vlad.py's CenterCrop to multiples of 14."""
    spec = published_model(NAME)
    assert spec.preprocessing.describe() == "480x640 tensor after normalisation bilinear, centre-cropped to multiples of 14"
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (500, 700, 3), dtype=np.uint8))
    out = spec.preprocessing.transform()(image)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    x = tvf.resize(x, [480, 640], interpolation=tvf.InterpolationMode.BILINEAR, antialias=False)
    expected = x[:, 2:478, 5:635]  # torchvision CenterCrop: top = round((480 - 476) / 2), left = round((640 - 630) / 2)
    assert out.shape == (3, 476, 630)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ offline: one attempt, every file and its place


def test_offline_messages_name_both_files_and_places(hub_dir, tiny, tiny_files, monkeypatch) -> None:
    calls = []

    def no_network(url, dst, **kwargs):
        calls.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    spec = published_model(NAME)
    with pytest.raises(DownloadError) as err:
        release_file(NAME)
    text = str(err.value)
    assert calls == [spec.url]
    for needed in (spec.url, str(spec.local_path()), spec.extra_files[0].url, str(spec.extra_files[0].local_path()), "needs 2 files"):
        assert needed in text
    # The vocabulary given, the DINOv2 file neither beside it nor cached: one attempt for it, named with both places.
    vocab_path, _, _ = tiny_files
    (vocab_path.parent / DINO_FILE).unlink()
    calls.clear()
    with pytest.raises(DownloadError) as err:
        vprlab.load_pretrained(NAME, weights=vocab_path)
    text = str(err.value)
    assert calls == [spec.extra_files[0].url]
    assert str(vocab_path.parent / DINO_FILE) in text and str(hub_dir / "checkpoints" / DINO_FILE) in text
    assert spec.extra_files[0].url in text


def test_cached_files_are_found_without_weights(tiny, tiny_files, hub_dir, monkeypatch) -> None:
    vocab_path, _, centres = tiny_files
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    (hub_dir / "checkpoints" / "anyloc_files").mkdir(parents=True)
    vocab_path.rename(hub_dir / "checkpoints" / "anyloc_files" / VOCAB)
    (vocab_path.parent / DINO_FILE).rename(hub_dir / "checkpoints" / DINO_FILE)
    model, _ = vprlab.load_pretrained(NAME)
    assert torch.equal(model.aggregator.centroids, centres)
    from vprlab.pretrained.cli import model_rows

    row = next(r for r in model_rows() if r["name"] == NAME)
    assert row["local"] == "yes" and " + https://dl.fbaipublicfiles.com/dinov2/" in row["source"]


def test_models_download_names_both_files(tiny_files, hub_dir, monkeypatch, capsys) -> None:
    from vprlab.pretrained.cli import main

    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **k: (_ for _ in ()).throw(OSError("offline")))
    assert main(["download", NAME]) == 2
    err = capsys.readouterr().err
    assert "dinov2_vitg14_pretrain.pth" in err and str(hub_dir / "checkpoints" / "anyloc_files" / VOCAB) in err
    vocab_path, _, _ = tiny_files
    (hub_dir / "checkpoints" / "anyloc_files").mkdir(parents=True, exist_ok=True)
    vocab_path.rename(hub_dir / "checkpoints" / "anyloc_files" / VOCAB)
    assert main(["download", NAME]) == 2  # the vocabulary is there, the DINOv2 file is not: its error
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth" in capsys.readouterr().err
    (vocab_path.parent / DINO_FILE).rename(hub_dir / "checkpoints" / DINO_FILE)
    assert main(["download", NAME]) == 0
    assert capsys.readouterr().out.split() == [str(hub_dir / "checkpoints" / "anyloc_files" / VOCAB), str(hub_dir / "checkpoints" / DINO_FILE)]


def test_evaluate_py_runs_anyloc_from_its_two_files(tiny, tiny_files, tmp_path, monkeypatch) -> None:
    """evaluate.py pretrained=<anyloc> pretrained.path=<vocabulary>: the DINOv2 file is found next to it,
    nothing is downloaded, images go through AnyLoc's 480x640 + crop preprocessing (tiny ViT)."""
    from conftest import compose_config
    from release_reference import forbid_network

    from vprlab.commands.evaluate import run_evaluation
    from vprlab.evaluation.results import read_results

    calls = forbid_network(monkeypatch)
    vocab_path, _, _ = tiny_files
    bench = tmp_path / "bench"
    (bench / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        image = Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8))
        image.save(bench / "images" / f"db_{i}.png")
        image.save(bench / "images" / f"q_{i}.png")
    np.save(bench / "pitts30k_test_dbImages.npy", np.array([f"images/db_{i}.png" for i in range(2)]))
    np.save(bench / "pitts30k_test_qImages.npy", np.array([f"images/q_{i}.png" for i in range(2)]))
    gt = np.empty(2, dtype=object)
    for i in range(2):
        gt[i] = np.array([i])
    np.save(bench / "pitts30k_test_gt.npy", gt, allow_pickle=True)
    out = tmp_path / "out"
    cfg = compose_config("evaluate", [
        f"paths.output_dir={out}", "num_workers=0", "batch_size=2", "device=cpu", "benchmark=[pitts30k_test]",
        f"benchmark.pitts30k_test.root={bench}", "benchmark.pitts30k_test.expected_num_db=null",
        "benchmark.pitts30k_test.expected_num_queries=null", f"cache_dir={out / 'cache'}",
        f"pretrained={NAME}", f"pretrained.path={vocab_path}",
    ])
    metrics = run_evaluation(cfg)
    assert calls == [] and metrics["pitts30k_test"]["R@1"] == 100.0 and metrics["pitts30k_test"]["descriptor_dim"] == 2048
    (row,) = read_results(out)
    assert row["model"] == NAME and row["image_size"] == "480x640"
