"""The released CricaVPR model (github.com/Lu-Feng/CricaVPR): a random state dict with exactly the keys
and shapes of CricaVPR.pth (release_layouts/cricavpr_dinov2_10752.tsv, read off the original code),
saved in the release's container, loads strictly and gives the descriptors of an independent
step-by-step computation written from the original network.py / block.py with plain torch ops on the
raw release tensors, including the cross-image encoder's dependence on the batch."""

from __future__ import annotations

import ast
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, compose_config
from PIL import Image
from release_reference import forbid_network
from test_pretrained_evaluate import tiny_benchmark  # noqa: F401 (a fixture)
from test_published_dinov2_vgg import TOL, random_release, ref_dinov2

from vprlab.commands.evaluate import run_evaluation
from vprlab.evaluation.results import read_results
from vprlab.models.spec import mixes_batch
from vprlab.pretrained import load_pretrained
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import cricavpr as family
from vprlab.pretrained.load import eval_preprocessing
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD
from vprlab.utils.weights import read_state_dict

LAYOUTS = Path(__file__).resolve().parent / "release_layouts"
NAME = "cricavpr_dinov2_10752"
URL = "https://github.com/Lu-Feng/CricaVPR/releases/download/v1.0/CricaVPR.pth"


def read_layout(name: str) -> dict[str, tuple[int, ...]]:
    """``key<TAB>shape`` lines of release_layouts/<name>, comments skipped."""
    layout = {}
    for line in (LAYOUTS / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


def random_file_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """random_release's values, with BatchNorm statistics and GeM's p that a trained file could hold."""
    state = random_release(layout, seed)
    generator = torch.Generator().manual_seed(seed + 100)
    for key in state:
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(layout[key], generator=generator)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("aggregation.1.p"):
            state[key] = torch.tensor([2.6])
    return state


def save_release(path: Path, raw: dict[str, torch.Tensor]) -> None:
    """The container train.py writes (util.save_checkpoint): the DataParallel state dict under
    'model_state_dict' beside the training counters (the optimizer state and the numpy recalls left out)."""
    torch.save({"epoch_num": 7, "model_state_dict": raw, "best_r5": 93.4, "not_improved_num": 0}, path)


# ------------------------------------------------------------------ the original, step by step


def ref_encoder(tokens: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int = 16) -> torch.Tensor:
    """nn.TransformerEncoder (2 post-norm layers, GELU) with batch_first=False fed [B, T, C]: the
    sequence is the B images, separately for each of the T token positions."""
    x = tokens
    batch, num, dim = x.shape
    head_dim = dim // heads
    for i in range(2):
        e = f"{p}layers.{i}."
        q, k, v = F.linear(x, sd[e + "self_attn.in_proj_weight"], sd[e + "self_attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, num, heads, head_dim) for t in (q, k, v))
        scores = torch.einsum("itnd,jtnd->tnij", q, k) / math.sqrt(head_dim)  # image i attends to image j
        attended = torch.einsum("tnij,jtnd->itnd", scores.softmax(dim=-1), v).reshape(batch, num, dim)
        x = x + F.linear(attended, sd[e + "self_attn.out_proj.weight"], sd[e + "self_attn.out_proj.bias"])
        x = F.layer_norm(x, (dim,), sd[e + "norm1.weight"], sd[e + "norm1.bias"], eps=1e-5)
        ff = F.linear(F.gelu(F.linear(x, sd[e + "linear1.weight"], sd[e + "linear1.bias"])), sd[e + "linear2.weight"], sd[e + "linear2.bias"])
        x = F.layer_norm(x + ff, (dim,), sd[e + "norm2.weight"], sd[e + "norm2.bias"], eps=1e-5)
    return x


def ref_adapter(sd: dict[str, torch.Tensor]):
    """MulConvAdapter(768, 384, 192, 24, 96, 24, 96) of block.py, times 0.2 (eval-mode BatchNorm, eps 1e-3)."""

    def basic_conv(x: torch.Tensor, p: str) -> torch.Tensor:
        w = sd[p + "conv.weight"]
        x = F.conv2d(x, w, sd[p + "conv.bias"], padding=w.shape[-1] // 2)
        x = F.batch_norm(x, sd[p + "bn.running_mean"], sd[p + "bn.running_var"], sd[p + "bn.weight"], sd[p + "bn.bias"], eps=1e-3)
        return F.relu(x)

    def adapter(h: torch.Tensor, block: str, grid: tuple[int, int]) -> torch.Tensor:
        a = block + "adapter."
        x0 = F.relu(F.linear(h, sd[a + "D_fc1.weight"], sd[a + "D_fc1.bias"]))
        batch, _, dim = x0.shape
        side = int(math.sqrt(x0.shape[1] - 1))  # the original assumes a square grid
        assert (side, side) == grid
        xs = x0[:, 1:, :].reshape(batch, side, side, dim).permute(0, 3, 1, 2)
        b1 = basic_conv(xs, a + "branch1.")
        b2 = basic_conv(basic_conv(xs, a + "branch2.0."), a + "branch2.1.")
        b3 = basic_conv(basic_conv(xs, a + "branch3.0."), a + "branch3.1.")
        out = torch.cat([b1, b2, b3], dim=1).reshape(batch, dim, side * side).permute(0, 2, 1)
        out = torch.cat([x0[:, 0:1, :], out], dim=1) + x0
        return 0.2 * F.linear(out, sd[a + "D_fc2.weight"], sd[a + "D_fc2.bias"])

    return adapter


def ref_cricavpr(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """CricaVPRNet.forward at 224x224 (a 16x16 grid) on the release tensors (without 'module.')."""
    patches, cls = ref_dinov2(x, sd, "backbone.", adapter=ref_adapter(sd))
    batch, dim = cls.shape
    f = patches / patches.norm(dim=1, keepdim=True).clamp(min=1e-12)
    p = sd["aggregation.1.p"]

    def gem(r: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(r.clamp(min=1e-6).pow(p), (r.shape[-2], r.shape[-1])).pow(1.0 / p)[:, :, 0, 0]

    regions = [gem(f[:, :, 0:8, 0:8]), gem(f[:, :, 0:8, 8:]), gem(f[:, :, 8:, 0:8]), gem(f[:, :, 8:, 8:])]
    regions += [gem(f[:, :, r0:r1, c0:c1]) for r0, r1 in ((0, 5), (5, 11), (11, 16)) for c0, c1 in ((0, 5), (5, 11), (11, 16))]
    tokens = torch.stack([cls, *regions], dim=1)  # [B, 14, 768]
    out = ref_encoder(tokens, sd, "encoder.").reshape(batch, 14 * dim)
    return out / out.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    layout = read_layout(f"{NAME}.tsv")
    raw = random_file_state(layout, seed=5)
    path = tmp_path_factory.mktemp("cricavpr") / "CricaVPR.pth"
    save_release(path, raw)
    return path, raw


def test_release_file_loads_strictly_and_matches_the_original(release) -> None:
    path, raw = release
    layout = read_layout(f"{NAME}.tsv")
    assert len(layout) == 668 and all(k.startswith("module.") for k in layout)
    stored = read_state_dict(path)  # 'model_state_dict' unwrapped
    assert list(stored) == list(layout) and all(tuple(stored[k].shape) == s for k, s in layout.items())
    model, transform = load_pretrained(NAME, weights=path)
    assert model.descriptor_dim == 10752 and mixes_batch(model) and not model.training
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    assert torch.equal(model.backbone.dino.blocks[4].adapter.branch3x3[1].conv.weight, sd["backbone.blocks.4.adapter.branch2.1.conv.weight"])
    assert torch.equal(model.aggregator.encoder.layers[1].linear2.weight, sd["encoder.layers.1.linear2.weight"])
    # 224x224 (CricaVPR's size: the 16x16 grid its region slices are written for), two images that the
    # cross-image encoder mixes (tests/models/test_cross_image_aggregators.py: one image alone differs)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, expected = model(x), ref_cricavpr(x, sd)
    torch.testing.assert_close(out, expected, **TOL)
    # the export is the inverse of the conversion (release key names, without DataParallel's prefix)
    exported = family.export_cricavpr(model.state_dict(), published_model(NAME))
    assert list(exported) == list(sd) and all(torch.equal(exported[k], sd[k]) for k in sd)


def test_mapping_names_missing_misshapen_and_unknown_keys(release) -> None:
    sd = {k.removeprefix("module."): v for k, v in release[1].items()}
    broken = dict(sd)
    del broken["backbone.blocks.2.adapter.branch3.0.bn.running_var"]
    with pytest.raises(ValueError, match=r"missing keys: backbone\.dino\.blocks\.2\.adapter\.branch5x5\.0\.bn\.running_var"):
        family.convert_cricavpr(broken)
    broken = dict(sd)
    broken["encoder.layers.0.linear1.weight"] = torch.zeros(1024, 768)
    with pytest.raises(ValueError, match=r"shape mismatches: aggregator\.encoder\.layers\.0\.linear1\.weight \(1024, 768\) \(expected \(2048, 768\)\)"):
        family.convert_cricavpr(broken)
    broken = dict(sd)
    broken["aggregation.0.p"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"1 keys that no mapping knows: aggregation\.0\.p"):
        family.convert_cricavpr(broken)


def test_preprocessing_is_the_originals_and_vme_s() -> None:
    """eval.py: ToTensor, Normalize, torchvision tensor resize to 224x224 (bilinear, no antialiasing in
    the pinned torchvision 0.15); VPR-methods-evaluation: the same, antialiased (ResizingWrapper(224))."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    normed = (tensor - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    for protocol, antialias in ((None, False), ("vpr-methods-evaluation", True)):
        prep = eval_preprocessing(NAME, protocol)
        expected = F.interpolate(normed[None], size=(224, 224), mode="bilinear", align_corners=False, antialias=antialias)[0]
        torch.testing.assert_close(prep.transform()(image), expected, atol=1e-5, rtol=1e-5)
    assert eval_preprocessing(NAME).describe() == "224x224 tensor after normalisation bilinear"
    assert "depend on the other images of the batch" in published_model(NAME).note


def test_offline_error_names_the_url_and_the_path(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        load_pretrained(NAME)
    assert time.perf_counter() - start < 5 and calls == ["torch.hub.download_url_to_file"]  # one attempt
    assert URL in str(info.value) and str(tmp_path / "hub" / "checkpoints" / "CricaVPR.pth") in str(info.value)


def test_hub_entry_as_vme_calls_it(release, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    model = torch.hub.load(str(REPO), "cricavpr", source="local", weights=str(release[0]))
    exported = family.export_cricavpr(model.state_dict(), published_model(NAME))
    assert all(torch.equal(exported[k.removeprefix("module.")], v) for k, v in release[1].items())
    assert model.eval_preprocessing == published_model(NAME).preprocessing and calls == [] and not model.training


@pytest.mark.slow
def test_evaluate_py_records_the_batch_size_and_keys_the_cache_on_it(release, tiny_benchmark, tmp_path, monkeypatch) -> None:  # noqa: F811 (tiny_benchmark: a fixture)
    """evaluate.py pretrained=cricavpr_dinov2_10752: the row records eval_batch_size; a rerun with the
    same batch size reads the cache, another batch size extracts again (13 images of ViT-B at 224: slow)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    rows = {}
    for run, batch_size in (("a", 4), ("b", 4), ("c", 3)):
        cfg = compose_config("evaluate", [
            f"paths.output_dir={tmp_path / run}", "num_workers=0", f"batch_size={batch_size}", "device=cpu",
            f"pretrained={NAME}", f"pretrained.path={release[0]}", "benchmark=[pitts30k_test]",
            f"benchmark.pitts30k_test.root={tiny_benchmark}", "benchmark.pitts30k_test.expected_num_db=null",
            "benchmark.pitts30k_test.expected_num_queries=null", "cache=true", f"cache_dir={tmp_path / 'cache'}",
        ])
        run_evaluation(cfg)
        (rows[run],) = read_results(tmp_path / run)
    assert calls == [] and [rows[r]["eval_batch_size"] for r in "abc"] == [4, 4, 3]
    assert rows["b"]["image_size"] == "224x224" and rows["b"]["from_cache"] and not rows["c"]["from_cache"]
