"""Test helpers shared by tests/models and tests/pretrained: the released checkpoint layouts, random
state dicts in them, and independent forward passes written from the released parameter names with
plain torch ops (what the original BoQ / DINOv2 code computes), to compare our modules against."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import torch
import torch.nn.functional as F

# key<TAB>shape listings of the released BoQ checkpoints (resnet50_16384.pth, dinov2_12288.pth),
# copied from reference/boq_released_checkpoints.
LAYOUTS = Path(__file__).parent / "models" / "data"


# Listings derived by reading an original repository's code (files that cannot be downloaded here);
# each starts with ``#`` lines saying from which commit and file.
RELEASE_LAYOUTS = Path(__file__).parent / "pretrained" / "release_layouts"


def read_layout(name: str, folder: Path = LAYOUTS) -> dict[str, tuple[int, ...]]:
    """key -> shape from a ``key<TAB>shape`` file listing a released checkpoint, in checkpoint order
    (``#`` lines are comments)."""
    layout = {}
    for line in (folder / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


def random_state_dict(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the layout's keys and shapes, scaled so a forward pass stays finite."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 1 + 0.1 * torch.rand(shape, generator=generator)
        elif key.endswith(("running_mean", "bias")) or key.endswith("gamma"):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # norm weights
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith("weight"):  # fan-in scaling
            state[key] = torch.randn(shape, generator=generator) / torch.tensor(shape[1:]).prod().sqrt()
        else:  # queries, tokens, position embeddings
            state[key] = torch.randn(shape, generator=generator)
    return state


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed (``aggregator.`` -> BoQ's own names)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------- BoQ

EPS = 1e-5  # LayerNorm default of nn.LayerNorm and nn.TransformerEncoderLayer


def _layer_norm(x: torch.Tensor, sd: dict, prefix: str, eps: float = EPS) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps)


def _attention(query, key, value, sd: dict, prefix: str, heads: int):
    """Multi-head attention by hand: returns (output [B, Lq, D], head-averaged weights [B, Lq, Lk])."""
    batch, len_q, dim = query.shape
    w_q, w_k, w_v = sd[prefix + ".in_proj_weight"].chunk(3)
    b_q, b_k, b_v = sd[prefix + ".in_proj_bias"].chunk(3)

    def split(t):  # [B, L, D] -> [B, heads, L, D/heads]
        return t.reshape(batch, t.shape[1], heads, dim // heads).transpose(1, 2)

    q = split(query @ w_q.T + b_q)
    k = split(key @ w_k.T + b_k)
    v = split(value @ w_v.T + b_v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, len_q, dim)
    out = out @ sd[prefix + ".out_proj.weight"].T + sd[prefix + ".out_proj.bias"]
    return out, weights.mean(dim=1)


def _encoder_layer(x, sd: dict, prefix: str, heads: int):
    """Post-norm transformer encoder layer with ReLU, dropout 0."""
    x = _layer_norm(x + _attention(x, x, x, sd, prefix + ".self_attn", heads)[0], sd, prefix + ".norm1")
    hidden = torch.relu(x @ sd[prefix + ".linear1.weight"].T + sd[prefix + ".linear1.bias"])
    ff = hidden @ sd[prefix + ".linear2.weight"].T + sd[prefix + ".linear2.bias"]
    return _layer_norm(x + ff, sd, prefix + ".norm2")


def reference_boq(x: torch.Tensor, sd: dict, num_layers: int, heads: int):
    """The BoQ forward of the reference README, step by step; ``sd`` uses BoQ's own key names."""
    feats = F.conv2d(x, sd["proj_c.weight"], sd["proj_c.bias"], padding=1)
    batch, dim = feats.shape[:2]
    tokens = feats.reshape(batch, dim, -1).permute(0, 2, 1)
    tokens = _layer_norm(tokens, sd, "norm_input")
    outs, attns = [], []
    for i in range(num_layers):
        p = f"boqs.{i}"
        tokens = _encoder_layer(tokens, sd, p + ".encoder", heads)
        q = sd[p + ".queries"].repeat(batch, 1, 1)
        q = _layer_norm(q + _attention(q, q, q, sd, p + ".self_attn", heads)[0], sd, p + ".norm_q")
        out, attn = _attention(q, tokens, tokens, sd, p + ".cross_attn", heads)
        outs.append(_layer_norm(out, sd, p + ".norm_out"))
        attns.append(attn)
    cat = torch.cat(outs, dim=1)  # [B, L*Q, D]
    rows = cat.permute(0, 2, 1) @ sd["fc.weight"].T + sd["fc.bias"]  # [B, D, row_dim]
    desc = rows.reshape(batch, -1)
    return desc / desc.norm(dim=1, keepdim=True), attns


# ----------------------------------------------------------------------------------------- DINOv2

DINOV2_PATCH = 14
DINOV2_LN_EPS = 1e-6  # the DINOv2 release builds its LayerNorms with eps 1e-6


def reference_dinov2_patch_tokens(x: torch.Tensor, sd: dict, head_dim: int = 64) -> torch.Tensor:
    """Patch tokens [B, C, H/14, W/14] of the released DINOv2 ViT, from its parameter names (``sd``
    without the ``backbone.dino.`` prefix): patch conv, class token, position embeddings resized as the
    release does (bicubic, no antialias, scale factor (grid + 0.1) / 37, class token untouched),
    pre-norm blocks with LayerScale, and NO final norm; the class token is dropped."""
    batch, _, height, width = x.shape
    grid_h, grid_w = height // DINOV2_PATCH, width // DINOV2_PATCH
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=DINOV2_PATCH)
    dim = tokens.shape[1]
    tokens = tokens.flatten(2).transpose(1, 2)  # [B, N, C], patches row by row
    tokens = torch.cat((sd["cls_token"].expand(batch, 1, dim), tokens), dim=1)
    pos = sd["pos_embed"]
    side = int(math.isqrt(pos.shape[1] - 1))
    grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side), mode="bicubic", antialias=False)
    assert grid.shape[-2:] == (grid_h, grid_w)
    tokens = tokens + torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)), dim=1)

    heads = dim // head_dim
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."
        y = _layer_norm(tokens, sd, b + "norm1", DINOV2_LN_EPS)
        qkv = y @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]
        q, k, v = qkv.reshape(batch, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # each [B, heads, N, hd]
        attn = torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(batch, -1, dim)
        y = y @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        tokens = tokens + sd[b + "ls1.gamma"] * y
        y = _layer_norm(tokens, sd, b + "norm2", DINOV2_LN_EPS)
        y = F.gelu(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        y = y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
        tokens = tokens + sd[b + "ls2.gamma"] * y
    patches = tokens[:, 1:]  # the final `norm` is stored in the checkpoint but not applied
    return patches.transpose(1, 2).reshape(batch, dim, grid_h, grid_w)


# ----------------------------------------------------------------------------------------- ResNet

# backbone.net.N of the release -> the torchvision ResNet attribute it holds.
RELEASE_RESNET_MODULES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def reference_resnet_features(x: torch.Tensor, sd: dict, model_name: str = "resnet50") -> torch.Tensor:
    """torchvision's ResNet up to the last stage in ``sd`` (``backbone.net.N`` names, prefix removed),
    in eval mode: what the original BoQ ResNet computes."""
    import torchvision

    resnet = getattr(torchvision.models, model_name)(weights=None)
    mapped = {}
    for key, value in sd.items():
        index, rest = key.split(".", 1)
        mapped[f"{RELEASE_RESNET_MODULES[index]}.{rest}"] = value
    missing, unexpected = resnet.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("fc.", "layer4.")) for k in missing), missing
    resnet.eval()
    out = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if not any(k.startswith(name + ".") for k in mapped):
            break
        out = getattr(resnet, name)(out)
    return out


# ----------------------------------------------------------------------------------------- files and network

_RELEASE_FILES: dict[str, Path] = {}


def release_checkpoint(tmp_path_factory, name: str) -> Path:
    """A random-valued ``<name>.pth`` in the released layout (``resnet50_16384`` / ``dinov2_12288``),
    written once per test session and shared by every module that asks."""
    if name not in _RELEASE_FILES:
        path = tmp_path_factory.mktemp("release") / f"{name}.pth"
        torch.save(random_state_dict(read_layout(f"{name}.tsv")), path)
        _RELEASE_FILES[name] = path
    return _RELEASE_FILES[name]


def forbid_network(monkeypatch) -> list[str]:
    """Make every way of reaching the network raise, and record the attempts (the returned list)."""
    import socket
    import urllib.request

    import timm.models._builder
    import torchvision.models._api

    calls: list[str] = []

    def refuse(what: str):
        def fail(*args, **kwargs):
            calls.append(what)
            raise OSError(f"network access in a test: {what}")

        return fail

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download_url_to_file"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("torch.hub.load_state_dict_from_url"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urllib.request.urlopen"))
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse("timm load_pretrained"))
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", refuse("torchvision weights"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    return calls
