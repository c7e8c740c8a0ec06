"""The released SALAD, MegaLoc and NetVLAD models: a random state dict with exactly the published
keys and shapes (shared/reference/published_checkpoints), written in the real container, converted
and loaded strictly, gives the descriptor of an independent step-by-step computation written from
that README with torch primitives on the raw release tensors."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vprlab.models.backbones.dinov2 import nearest_patch_multiple
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import cosplace as cosplace_family
from vprlab.pretrained.families import megaloc as megaloc_family
from vprlab.pretrained.families import netvlad as netvlad_family
from vprlab.pretrained.families import salad as salad_family
from vprlab.pretrained.keymaps import map_keys
from vprlab.pretrained.load import load_published_state, read_published_state
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD
from vprlab.utils.weights import read_state_dict

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "published_checkpoints"
pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} (the published layouts) is absent")

TOL = dict(atol=1e-5, rtol=1e-5)
# 14*9 x 14*8: a non-square 9x8 grid (72 patches > SALAD's 64 clusters), so the position
# embeddings are interpolated and the height/width order matters.
DINO_INPUT = (2, 3, 14 * 9, 14 * 8)


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (REFERENCE / name).read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


def random_release(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with the layout's keys and shapes, scaled so that 12 ViT blocks stay finite and
    every step (position embeddings, LayerScale, the Sinkhorn scores) moves the result."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        randn = torch.randn(shape, generator=generator)
        if key.endswith(("pos_embed", "cls_token", "mask_token", "dust_bin")):
            state[key] = randn
        elif key.endswith("gamma"):
            state[key] = 0.3 * randn
        elif len(shape) == 1 and "norm" in key and key.endswith("weight"):
            state[key] = 1 + 0.1 * randn
        elif len(shape) == 1:
            state[key] = 0.1 * randn
        else:  # fan-in scaling
            state[key] = randn / math.sqrt(math.prod(shape[1:]))
    return state


# ------------------------------------------------------------------ the README, step by step


def ref_dinov2(
    x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, adapter=None, adapters: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv2 ViT-B/14 from the release tensors under prefix ``p``: (patch features [B, 768, gh, gw],
    class token [B, 768]), final norm applied to every token. ``adapter(normed tokens, block prefix, grid)``
    (CricaVPR) is added to the MLP's output inside the second LayerScale. ``adapters``: the prefix of
    EDTformer's parallel adapters (``<adapters><i>.D_fc1/D_fc2``): a side stream y, starting as the
    embedded tokens, becomes ``y + out_i + 0.5 * D_fc2(GELU(D_fc1(y + out_i)))`` after block i and is
    the output."""
    batch, _, height, width = x.shape
    gh, gw = height // 14, width // 14
    tokens = F.conv2d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=14)
    dim = tokens.shape[1]
    tokens = torch.cat([sd[p + "cls_token"].expand(batch, 1, dim), tokens.flatten(2).transpose(1, 2)], dim=1)
    pos = sd[p + "pos_embed"]
    if (gh, gw) != (37, 37):
        grid = pos[:, 1:].reshape(1, 37, 37, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((gh + 0.1) / 37, (gw + 0.1) / 37), mode="bicubic", antialias=False)
        pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    tokens = tokens + pos
    side = tokens
    for i in range(12):
        b = f"{p}blocks.{i}."
        h = F.layer_norm(tokens, (dim,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).reshape(batch, -1, 3, 12, 64)
        q, k, v = qkv.unbind(2)  # [B, N, heads, 64]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8.0
        attended = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v).reshape(batch, -1, dim)
        tokens = tokens + sd[b + "ls1.gamma"] * F.linear(attended, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(tokens, (dim,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        mlp = F.linear(F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])), sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        tokens = tokens + sd[b + "ls2.gamma"] * (mlp if adapter is None else mlp + adapter(h, b, (gh, gw)))
        if adapters is not None:
            a = f"{adapters}{i}."
            side = side + tokens
            hidden = F.gelu(F.linear(side, sd[a + "D_fc1.weight"], sd[a + "D_fc1.bias"]))
            side = side + 0.5 * F.linear(hidden, sd[a + "D_fc2.weight"], sd[a + "D_fc2.bias"])
    if adapters is not None:
        tokens = side
    tokens = F.layer_norm(tokens, (dim,), sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)
    patches = tokens[:, 1:].transpose(1, 2).reshape(batch, dim, gh, gw)
    return patches, tokens[:, 0]


def ref_salad(f: torch.Tensor, c: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """SALAD aggregation (README steps 1-6) from the release tensors under prefix ``p``."""
    g = F.linear(F.relu(F.linear(c, sd[p + "token_features.0.weight"], sd[p + "token_features.0.bias"])),
                 sd[p + "token_features.2.weight"], sd[p + "token_features.2.bias"])

    def head(name: str) -> torch.Tensor:
        h = F.relu(F.conv2d(f, sd[f"{p}{name}.0.weight"], sd[f"{p}{name}.0.bias"]))
        return F.conv2d(h, sd[f"{p}{name}.3.weight"], sd[f"{p}{name}.3.bias"]).flatten(2)

    features, scores = head("cluster_features"), head("score")  # [B, L, N], [B, 64, N]
    batch, m, n = scores.shape
    scores = torch.cat([scores, sd[p + "dust_bin"].expand(batch, 1, n)], dim=1)
    row_target = torch.full((m + 1,), -math.log(n + m))
    row_target[-1] = math.log(n - m) - math.log(n + m)
    col_target = torch.full((n,), -math.log(n + m))
    rows, cols = torch.zeros(batch, m + 1), torch.zeros(batch, n)
    for _ in range(3):
        rows = row_target - torch.logsumexp(scores + cols[:, None, :], dim=2)
        cols = col_target - torch.logsumexp(scores + rows[:, :, None], dim=1)
    plan = torch.exp(scores + rows[:, :, None] + cols[:, None, :] + math.log(n + m))[:, :m]
    v = torch.einsum("bln,bkn->blk", features, plan)
    v = v / v.norm(dim=1, keepdim=True)
    flat = v.reshape(batch, -1)  # index l * 64 + k
    out = torch.cat([g / g.norm(dim=1, keepdim=True), flat], dim=1)
    return out / out.norm(dim=1, keepdim=True)


def ref_salad_model(x: torch.Tensor, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    return ref_salad(*ref_dinov2(x, raw, "backbone.model."), raw, "aggregator.")


def ref_megaloc_model(x: torch.Tensor, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """MegaLoc: rounding resize (torchvision's tensor resize, as the original calls it), DINOv2, SALAD
    with L=256, the final Linear, L2 normalisation."""
    import torchvision.transforms.functional as tvf

    height, width = x.shape[-2:]
    if height % 14 or width % 14:
        x = tvf.resize(x, [round(height / 14) * 14, round(width / 14) * 14], antialias=True)
    agg = ref_salad(*ref_dinov2(x, raw, "backbone."), raw, "aggregator.agg.")
    out = F.linear(agg, raw["aggregator.linear.weight"], raw["aggregator.linear.bias"])
    return out / out.norm(dim=1, keepdim=True)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def salad_raw() -> dict[str, torch.Tensor]:
    return random_release(read_tsv("salad_dinov2_8448.tsv"), seed=1)


@pytest.fixture(scope="module")
def salad_model():
    return published_model("salad_dinov2_8448").build_model().eval()


@pytest.fixture(scope="module")
def megaloc_raw() -> dict[str, torch.Tensor]:
    return random_release(read_tsv("megaloc_dinov2_8448.tsv"), seed=2)


@pytest.fixture(scope="module")
def megaloc_model():
    return published_model("megaloc_dinov2_8448").build_model().eval()


# ------------------------------------------------------------------ SALAD


def test_salad_release_file_loads_strictly_and_matches_the_readme(salad_raw, salad_model, tmp_path) -> None:
    layout = read_tsv("salad_dinov2_8448.tsv")
    assert len(layout) == 188
    path = tmp_path / "dino_salad.ckpt"
    torch.save(salad_raw, path)  # the container: a bare state dict despite .ckpt
    raw = read_state_dict(path)
    assert list(raw) == list(layout) and all(tuple(raw[k].shape) == s for k, s in layout.items())
    state = read_published_state("salad_dinov2_8448", path)  # the container read, convert_salad applied
    assert list(state) == list(salad_model.state_dict())
    load_published_state(salad_model, state, published_model("salad_dinov2_8448"), "test file")
    # mask_token is kept (unused), the rest renamed backbone.model.* -> backbone.dino.*
    assert torch.equal(salad_model.backbone.dino.mask_token, raw["backbone.model.mask_token"])
    assert torch.equal(salad_model.backbone.dino.blocks[7].ls1.gamma, raw["backbone.model.blocks.7.ls1.gamma"])
    x = torch.randn(*DINO_INPUT, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = salad_model(x)
        expected = ref_salad_model(x, raw)
    assert out.shape == (2, 8448) and salad_model.descriptor_dim == 8448
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    # The comparison is sensitive to the orientation of the position-embedding grid at this size.
    transposed = dict(raw)
    pos = raw["backbone.model.pos_embed"]
    grid = pos[:, 1:].reshape(1, 37, 37, 768).transpose(1, 2).reshape(1, 37 * 37, 768)
    transposed["backbone.model.pos_embed"] = torch.cat([pos[:, :1], grid], dim=1)
    with torch.no_grad():
        assert (ref_salad_model(x, transposed) - out).abs().max() > 1e-3


def test_salad_float16_file_loads(salad_raw, salad_model, tmp_path) -> None:
    half = {k: v.half() for k, v in salad_raw.items()}
    path = tmp_path / "dino_salad_fp16.ckpt"
    torch.save(half, path)
    converted = salad_family.convert_salad(read_state_dict(path), published_model("salad_dinov2_8448"))
    assert converted["backbone.dino.pos_embed"].dtype == torch.float16
    salad_model.load_state_dict(converted, strict=True)  # the copy casts to float32
    assert salad_model.backbone.dino.pos_embed.dtype == torch.float32
    x = torch.randn(1, 3, 14 * 9, 14 * 10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(salad_model(x), ref_salad_model(x, {k: v.float() for k, v in half.items()}), **TOL)


def test_salad_mapping_names_missing_misshapen_and_unknown_keys(salad_raw) -> None:
    raw = dict(salad_raw)
    del raw["backbone.model.blocks.3.attn.qkv.bias"]
    with pytest.raises(ValueError, match=r"missing keys: backbone\.dino\.blocks\.3\.attn\.qkv\.bias"):
        salad_family.convert_salad(raw, None)
    raw = dict(salad_raw)
    raw["aggregator.cluster_features.3.weight"] = torch.zeros(256, 512, 1, 1)  # MegaLoc's width
    with pytest.raises(ValueError, match=r"shape mismatches: aggregator\.cluster_features\.3\.weight \(256, 512, 1, 1\) \(expected \(128, 512, 1, 1\)\)"):
        salad_family.convert_salad(raw, None)
    raw = dict(salad_raw)
    raw["model.backbone.norm.weight"] = torch.zeros(768)
    with pytest.raises(ValueError, match=r"1 keys that no mapping knows: model\.backbone\.norm\.weight"):
        salad_family.convert_salad(raw, None)
    raw = dict(salad_raw)
    raw["backbone.model.head.weight"] = torch.zeros(2, 768)
    with pytest.raises(ValueError, match=r"unexpected keys: backbone\.dino\.head\.weight"):
        salad_family.convert_salad(raw, None)


# ------------------------------------------------------------------ MegaLoc


def test_megaloc_safetensors_file_loads_and_matches_the_readme(megaloc_raw, megaloc_model, tmp_path) -> None:
    layout = read_tsv("megaloc_dinov2_8448.tsv")
    assert len(layout) == 189
    path = tmp_path / "model.safetensors"
    save_file(megaloc_raw, str(path))
    raw = read_state_dict(path)
    assert sorted(raw) == sorted(layout) and all(tuple(raw[k].shape) == s for k, s in layout.items())
    assert megaloc_family.megaloc_layout(raw) == "safetensors"
    state = read_published_state("megaloc_dinov2_8448", path)
    assert list(state) == list(megaloc_model.state_dict())
    load_published_state(megaloc_model, state, published_model("megaloc_dinov2_8448"), "test file")
    x = torch.randn(*DINO_INPUT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        current = megaloc_model(x)
        torch.testing.assert_close(current, ref_megaloc_model(x, raw), **TOL)
    assert current.shape == (2, 8448) and megaloc_model.descriptor_dim == 8448


@pytest.mark.slow  # writes two 915 MB files
def test_megaloc_legacy_file_gives_the_same_descriptors(megaloc_raw, megaloc_model, tmp_path) -> None:
    """The earlier megaloc.torch (backbone.model.* with a mask_token, dropped) and model.safetensors
    with the same values give identical descriptors, at a non-square size."""
    legacy_layout = read_tsv("megaloc_dinov2_8448.legacy_megaloc_torch.tsv")
    path = tmp_path / "model.safetensors"
    save_file(megaloc_raw, str(path))
    load_published_state(megaloc_model, read_published_state("megaloc_dinov2_8448", path), published_model("megaloc_dinov2_8448"), "test")
    x = torch.randn(*DINO_INPUT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        current = megaloc_model(x)
    legacy = {}
    for key in legacy_layout:
        plain = key.replace("backbone.model.", "backbone.", 1)
        legacy[key] = megaloc_raw[plain] if plain in megaloc_raw else torch.randn(legacy_layout[key])
    legacy_path = tmp_path / "megaloc.torch"
    torch.save(legacy, legacy_path)
    del legacy
    legacy_raw = read_state_dict(legacy_path)
    assert list(legacy_raw) == list(legacy_layout) and megaloc_family.megaloc_layout(legacy_raw) == "legacy"
    legacy_state = read_published_state("megaloc_dinov2_8448_legacy", legacy_path)
    assert "backbone.dino.mask_token" not in legacy_state and list(legacy_state) == list(megaloc_model.state_dict())
    megaloc_model.load_state_dict(legacy_state, strict=True)
    with torch.no_grad():
        assert torch.equal(megaloc_model(x), current)


def test_megaloc_rounds_sides_to_multiples_of_14_like_the_readme(megaloc_raw, megaloc_model) -> None:
    # Python's round: 147/14 = 10.5 -> 10 (to even), 133/14 = 9.5 -> 10, 115/14 = 8.2 -> 8.
    assert [nearest_patch_multiple(s) for s in (147, 133, 115, 21, 35, 49, 140)] == [140, 140, 112, 28, 28, 56, 140]
    megaloc_model.load_state_dict(megaloc_family.convert_megaloc(megaloc_raw, None), strict=True)
    x = torch.randn(1, 3, 147, 115, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = megaloc_model(x)
        torch.testing.assert_close(out, ref_megaloc_model(x, megaloc_raw), **TOL)
        resized = F.interpolate(x, size=(140, 112), mode="bilinear", align_corners=False, antialias=True)
        assert torch.equal(megaloc_model(resized), out)
    with pytest.raises(ValueError, match="image side 6 rounds to 0"):
        nearest_patch_multiple(6)


def test_megaloc_legacy_layout_maps_to_the_same_state(megaloc_raw) -> None:
    legacy_layout = read_tsv("megaloc_dinov2_8448.legacy_megaloc_torch.tsv")
    assert len(legacy_layout) == 190
    legacy = {k: megaloc_raw.get(k.replace("backbone.model.", "backbone.", 1), torch.zeros(legacy_layout[k])) for k in legacy_layout}
    assert megaloc_family.megaloc_layout(legacy) == "legacy" and megaloc_family.megaloc_layout(megaloc_raw) == "safetensors"
    from_legacy = megaloc_family.convert_megaloc(legacy, None)
    current = megaloc_family.convert_megaloc(megaloc_raw, None)
    assert list(from_legacy) == list(current) and all(from_legacy[k] is current[k] for k in current)
    assert "backbone.dino.mask_token" not in current
    del legacy["backbone.model.norm.bias"]
    with pytest.raises(ValueError, match=r"megaloc\.torch layout.*missing keys: backbone\.dino\.norm\.bias"):
        megaloc_family.convert_megaloc(legacy, None)


def test_megaloc_mapping_names_missing_and_misshapen_keys(megaloc_raw) -> None:
    raw = {k: v for k, v in megaloc_raw.items() if k != "aggregator.linear.bias"}
    with pytest.raises(ValueError, match=r"model\.safetensors layout.*missing keys: aggregator\.projection\.bias"):
        megaloc_family.convert_megaloc(raw, None)
    raw = dict(megaloc_raw)
    raw["backbone.pos_embed"] = torch.zeros(1, 1025, 768)
    with pytest.raises(ValueError, match=r"backbone\.dino\.pos_embed \(1, 1025, 768\) \(expected \(1, 1370, 768\)\)"):
        megaloc_family.convert_megaloc(raw, None)
    raw = {k: v for k, v in megaloc_raw.items() if not k.startswith("aggregator.linear")}
    raw["aggregator.fc.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"no mapping knows: aggregator\.fc\.weight"):
        megaloc_family.convert_megaloc(raw, None)


# ------------------------------------------------------------------ NetVLAD

# torchvision vgg16().features positions of the 13 convolutions, by stage.
VGG_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
VGG_WIDTHS = (64, 128, 256, 512, 512)


def _cell(*arrays) -> np.ndarray:
    cell = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        cell[i] = array
    return cell


def random_netvlad_mat(path: Path, average_image: np.ndarray, seed: int = 0, whitening: bool = True) -> None:
    """A NetVLAD MATLAB file as the README describes it: ``net.layers`` (a cell array of layer structs;
    convolutions with ``weights`` = {kernel [k, k, in, out], bias}), NetVLAD at 30, whitening at 33,
    and ``net.meta.normalization.averageImage``."""
    import scipy.io

    rng = np.random.default_rng(seed)
    layers = []
    conv_of = {pos: (stage, i) for stage, positions in enumerate(VGG_STAGES) for i, pos in enumerate(positions)}
    for position in range(29):
        if position in conv_of:
            stage, i = conv_of[position]
            cin = (3, *VGG_WIDTHS)[stage] if i == 0 else VGG_WIDTHS[stage]
            cout = VGG_WIDTHS[stage]
            kernel = (rng.standard_normal((3, 3, cin, cout)) * math.sqrt(2 / (9 * cin))).astype(np.float32)
            bias = (0.1 * rng.standard_normal(cout)).astype(np.float32)
            layers.append({"name": f"conv{position}", "type": "conv", "weights": _cell(kernel, bias)})
        elif position in (4, 9, 16, 23):
            layers.append({"name": f"pool{position}", "type": "pool", "weights": _cell()})
        else:
            layers.append({"name": f"relu{position}", "type": "relu"})
    layers.append({"name": "preL2", "type": "normalize"})  # 29
    assign = rng.standard_normal((512, 64)).astype(np.float32) * 3
    centres = (rng.standard_normal((512, 64)) / math.sqrt(512)).astype(np.float32)
    layers.append({"name": "vlad:core", "type": "custom", "weights": _cell(assign, centres)})  # 30
    layers += [{"name": "vlad:intranorm", "type": "custom"}, {"name": "postL2", "type": "custom"}]  # 31, 32
    if whitening:  # 537 MB
        weight = (rng.standard_normal((1, 1, 32768, 4096), dtype=np.float32) / math.sqrt(32768)).astype(np.float32)
        bias = (0.01 * rng.standard_normal(4096)).astype(np.float32)
        layers.append({"name": "WPCA", "type": "conv", "weights": _cell(weight, bias)})  # 33
    else:
        layers.append({"name": "WPCA", "type": "conv"})
    layers.append({"name": "finalL2", "type": "custom"})
    net = {"layers": _cell(*layers), "meta": {"normalization": {"averageImage": average_image}}}
    scipy.io.savemat(str(path), {"net": net})


def ref_vgg16(x: torch.Tensor, conv: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """VGG16 up to conv5_3 without its ReLU; ``conv[position]`` = (weight [out, in, 3, 3], bias)."""
    for stage, positions in enumerate(VGG_STAGES):
        for position in positions:
            x = F.conv2d(x, *conv[position], padding=1)
            if position != 28:  # no ReLU after conv5_3
                x = F.relu(x)
        if stage < 4:
            x = F.max_pool2d(x, 2, 2)
    return x


def ref_netvlad(images01: torch.Tensor, net, whiten: bool) -> torch.Tensor:
    """The README's NetVLAD from the MATLAB file's ``net`` (read with scipy), rearranged by hand."""
    average = np.asarray(net.meta.normalization.averageImage, dtype=np.float32)
    mean_pixel = torch.from_numpy(average.reshape(-1, 3)[0].copy())
    x = images01.clamp(0, 1) * 255 - mean_pixel.view(1, 3, 1, 1)
    conv = {}
    for position in (i for stage in VGG_STAGES for i in stage):
        kernel, bias = net.layers[position].weights
        conv[position] = (torch.from_numpy(kernel).permute(3, 2, 0, 1), torch.from_numpy(bias))
    x = ref_vgg16(x, conv)
    batch = x.shape[0]
    x = F.normalize(x.flatten(2), dim=1)  # [B, 512, N]
    assign_w, stored_centres = net.layers[30].weights
    assignment = torch.einsum("dk,bdn->bkn", torch.from_numpy(assign_w), x).softmax(dim=1)
    centres = -torch.from_numpy(stored_centres)  # [512, 64]
    vlad = torch.einsum("bkn,bdkn->bdk", assignment, x[:, :, None, :] - centres[None, :, :, None])
    vlad = F.normalize(vlad, dim=1).reshape(batch, -1)  # index d * 64 + k
    vlad = F.normalize(vlad, dim=1)
    if not whiten:
        return vlad
    weight, bias = net.layers[33].weights
    out = vlad @ torch.from_numpy(weight.reshape(32768, 4096)) + torch.from_numpy(bias)
    return F.normalize(out, dim=1)


def _netvlad_mat(folder: Path, whitening: bool):
    """(the file, its ``net`` as scipy reads it for the reference, its tensors as vprlab reads them)."""
    import scipy.io

    path = folder / "VGG16-NetVLAD-Pitts30K.mat"
    # A whole mean image (its first pixel is the mean pixel the released loaders read).
    average = np.broadcast_to(np.array([120.5, 115.25, 104.0], dtype=np.float32), (4, 5, 3)).copy()
    random_netvlad_mat(path, average, whitening=whitening)
    net = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)["net"]
    return path, net, netvlad_family.read_netvlad_mat(path)


@pytest.fixture(scope="module")
def netvlad_mat(tmp_path_factory):
    """A file without the whitening arrays (what the 32768-d model reads; 60 MB instead of 600)."""
    return _netvlad_mat(tmp_path_factory.mktemp("netvlad"), whitening=False)


@pytest.mark.parametrize("dim", [32768, pytest.param(4096, marks=pytest.mark.slow)])
def test_netvlad_mat_loads_and_matches_the_readme(netvlad_mat, tmp_path, dim) -> None:
    if dim == 4096:  # the whitening needs the full file
        netvlad_mat = _netvlad_mat(tmp_path, whitening=True)
    entry = published_model("netvlad_vgg16_pitts30k" if dim == 4096 else "netvlad_vgg16_pitts30k_32768")
    path, net, raw = netvlad_mat
    assert raw["layers.0.weights.0"].shape == (3, 3, 3, 64) and raw["layers.30.weights.1"].shape == (512, 64)
    torch.testing.assert_close(raw[netvlad_family.MEAN_PIXEL_KEY], torch.tensor([120.5, 115.25, 104.0]))
    model = entry.build_model().eval()
    state = netvlad_family.convert_netvlad(raw, entry)
    assert list(state) == list(model.state_dict())
    assert set(read_published_state(entry.name, path)) == set(state)  # the registry reads the .mat with read_netvlad_mat
    model.load_state_dict(state, strict=True)
    assert model.descriptor_dim == dim
    images01 = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(7))
    images01[0, :, :4, :4] = 1.0  # normalisation undone, then clamped to [0, 1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model((images01 - mean) / std)
    torch.testing.assert_close(out, ref_netvlad(images01, net, whiten=dim == 4096), **TOL)
    assert out.shape == (2, dim)


def test_netvlad_mapping_errors(netvlad_mat, tmp_path) -> None:
    raw = netvlad_mat[2]
    entry = published_model("netvlad_vgg16_pitts30k_32768")
    broken = {k: v for k, v in raw.items() if k != "layers.26.weights.0"}
    with pytest.raises(ValueError, match=r"missing layers\.26\.weights\.0 \(expected shape \(3, 3, 512, 512\)\)"):
        netvlad_family.convert_netvlad(broken, entry)
    broken = {**raw, "layers.30.weights.0": torch.zeros(256, 64)}
    with pytest.raises(ValueError, match=r"layers\.30\.weights\.0 has shape \(256, 64\), expected \(512, 64\)"):
        netvlad_family.convert_netvlad(broken, entry)
    whitened = published_model("netvlad_vgg16_pitts30k")
    with pytest.raises(ValueError, match=r"missing layers\.33\.weights\.0 \(expected shape \(32768, 4096\)\)"):
        netvlad_family.convert_netvlad(raw, whitened)  # this file has no whitening: only the 32768-d model loads from it
    broken = {**raw, "layers.3.weights.0": torch.zeros(3)}  # weights on a ReLU position
    with pytest.raises(ValueError, match=r"arrays that no mapping knows: layers\.3\.weights\.0"):
        netvlad_family.convert_netvlad(broken, entry)
    with pytest.raises(ValueError, match="4096-d .whitened. or 32768-d, not 512"):
        netvlad_family.build_netvlad(SimpleNamespace(descriptor_dim=512))
    assert not netvlad_family.netvlad_whitened(SimpleNamespace(descriptor_dim=32768))
    assert netvlad_family.netvlad_whitened(SimpleNamespace(descriptor_dim=512, options={"whitening": True}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        netvlad_family.read_netvlad_mat(tmp_path / "missing.mat")
    (tmp_path / "bad.mat").write_bytes(b"not a matlab file")
    with pytest.raises(ValueError, match=r"bad\.mat' could not be read as a MATLAB file"):
        netvlad_family.read_netvlad_mat(tmp_path / "bad.mat")


# ------------------------------------------------------------------ CosPlace / EigenPlaces VGG16


@pytest.mark.parametrize("name", ["cosplace_vgg16_64", "eigenplaces_vgg16_512"])
def test_cosplace_vgg16_release_loads_and_matches_the_readme(name, tmp_path) -> None:
    """Keys per the README: ``backbone.N.*`` at torchvision's feature indices (conv1_1 .. conv5_3),
    ``aggregation.1.p`` (GeM exponent, (1,)), ``aggregation.3.*`` (Linear 512 -> dim)."""
    entry = published_model(name)
    dim = entry.descriptor_dim
    generator = torch.Generator().manual_seed(8)
    raw, conv = {}, {}
    cin = 3
    for stage, positions in enumerate(VGG_STAGES):
        for position in positions:
            cout = VGG_WIDTHS[stage]
            weight = torch.randn(cout, cin, 3, 3, generator=generator) * math.sqrt(2 / (9 * cin))
            bias = 0.1 * torch.randn(cout, generator=generator)
            raw[f"backbone.{position}.weight"], raw[f"backbone.{position}.bias"] = weight, bias
            conv[position] = (weight, bias)
            cin = cout
    raw["aggregation.1.p"] = torch.tensor([2.5])
    raw["aggregation.3.weight"] = torch.randn(dim, 512, generator=generator) / math.sqrt(512)
    raw["aggregation.3.bias"] = 0.1 * torch.randn(dim, generator=generator)
    path = tmp_path / entry.file_name
    torch.save(raw, path)
    model = entry.build_model().eval()
    load_published_state(model, read_published_state(name, path), entry, "test file")
    x = torch.randn(2, 3, 64, 48, generator=generator)
    with torch.no_grad():
        out = model(x)
        features = F.normalize(ref_vgg16(x, conv), dim=1)  # each position over its 512 channels
        pooled = features.clamp(min=1e-6).pow(2.5).mean(dim=(2, 3)).pow(1 / 2.5)
        expected = F.normalize(F.linear(pooled, raw["aggregation.3.weight"], raw["aggregation.3.bias"]), dim=1)
    assert out.shape == (2, dim)
    torch.testing.assert_close(out, expected, **TOL)
    del raw["aggregation.1.p"]
    raw["aggregation.2.p"] = torch.tensor([3.0])
    with pytest.raises(ValueError, match=r"no mapping knows: aggregation\.2\.p"):
        cosplace_family.convert_cosplace_vgg16(raw, entry)


# ------------------------------------------------------------------ export and fine-tuning


def test_export_is_the_inverse_mapping_in_the_release_order(salad_raw, megaloc_raw) -> None:
    salad = salad_family.export_salad(salad_family.convert_salad(salad_raw, None))
    assert list(salad) == list(read_tsv("salad_dinov2_8448.tsv")) and all(salad[k] is salad_raw[k] for k in salad)
    megaloc = megaloc_family.export_megaloc(megaloc_family.convert_megaloc(megaloc_raw, None))
    assert list(megaloc) == list(read_tsv("megaloc_dinov2_8448.tsv"))  # sorted by name, as safetensors stores them
    assert all(megaloc[k] is megaloc_raw[k] for k in megaloc)
    entry = published_model("cosplace_vgg16_64")
    raw = {f"backbone.{i}.{p}": torch.zeros(1) for i in (0, 2, 28) for p in ("weight", "bias")}
    raw.update({"aggregation.1.p": torch.ones(1), "aggregation.3.weight": torch.zeros(1), "aggregation.3.bias": torch.zeros(1)})
    mapped = map_keys(raw, cosplace_family.COSPLACE_VGG16_RULES, "test")
    assert list(cosplace_family.export_cosplace_vgg16(mapped, entry)) == list(raw)
    with pytest.raises(ValueError, match=r"no mapping knows: aggregator\.extra"):
        cosplace_family.export_cosplace_vgg16({"aggregator.extra": torch.zeros(1)}, entry)


@pytest.mark.parametrize("name", ["salad_dinov2_8448", "megaloc_dinov2_8448", "netvlad_vgg16_pitts30k", "cosplace_vgg16_128"])
def test_zoo_configs_describe_the_published_architecture(name) -> None:
    """``train.py pretrained=<name>`` builds the model from these zoo configs: the same classes and
    state-dict layout as the model the released file loads into."""
    from vprlab.models.vpr_model import build_model
    from vprlab.pretrained.finetune import published_configs

    backbone, aggregator = published_configs(name)
    assert backbone["pretrained"] is False  # everything comes from the released file
    with torch.device("meta"):
        from_configs = build_model(backbone, aggregator)
        built = published_model(name).build_model()
    assert [(k, v.shape) for k, v in from_configs.state_dict().items()] == [(k, v.shape) for k, v in built.state_dict().items()]
    assert from_configs.descriptor_dim == published_model(name).descriptor_dim


def test_fine_tune_netvlad_from_the_mat_file(netvlad_mat, tiny_synthetic, tmp_path) -> None:
    """``train.py pretrained=netvlad_vgg16_pitts30k_32768 pretrained.path=<.mat>``: the zoo's VGG16 +
    NetVLAD start from the MATLAB file's weights (no k-means initialisation) and train."""
    from conftest import compose_config

    from vprlab.engine.checkpoint import load_checkpoint
    from vprlab.engine.trainer import train

    path, _, raw = netvlad_mat
    out = tmp_path / "run"
    cfg = compose_config("train", [
        "experiment=quickstart", f"paths.data_dir={tiny_synthetic.root.parent}", f"paths.output_dir={out}",
        "pretrained=netvlad_vgg16_pitts30k_32768", f"pretrained.path={path}", "dataset.image_size=[48,64]",
        "dataset.places_per_batch=8", "trainer.max_epochs=1", "trainer.eval_batch_size=16",
    ])
    result = train(cfg)
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["config"]["backbone"]["_target_"].endswith("VGGBackbone")
    assert ckpt["config"]["aggregator"]["flatten_order"] == "channel_major"
    state = ckpt["model"]
    # Frozen conv1_1 and the mean pixel are the file's; the trained assignment moved.
    assert torch.equal(state["backbone.net.0.weight"], raw["layers.0.weights.0"].permute(3, 2, 0, 1))
    assert torch.equal(state["backbone.pixel_mean"], raw[netvlad_family.MEAN_PIXEL_KEY])
    assert not torch.equal(state["aggregator.conv.weight"], raw["layers.30.weights.0"].t()[:, :, None, None])
    assert result["metrics"]["synthetic"]["descriptor_dim"] == 32768
