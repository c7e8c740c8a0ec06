"""Released SALAD, MegaLoc, NetVLAD and CosPlace/EigenPlaces VGG16 models, built from the zoo's own
components (registry entries in :mod:`vprlab.pretrained.catalog`).

What each release holds and computes is written down in
``shared/reference/published_checkpoints/README.md``; here each family has

- ``configs_<family>(entry)``: the (backbone, aggregator) zoo configs of the published architecture
  (what ``train.py pretrained=<name>`` fine-tunes), and ``build_<family>(entry)``, the model they
  build, with random weights (nothing is downloaded);
- ``convert_<family>(raw, entry)``: the release's tensors (as read from its file) -> a state dict
  with exactly the model's own keys, in its order, through an explicit key mapping; a key the
  mapping does not know, a key the model lacks or has in another shape is named in a ValueError;
- ``export_<family>(state, entry)``: the inverse mapping, our keys -> the release's, in the release's
  order (SALAD, MegaLoc, CosPlace VGG16; NetVLAD's MATLAB file is not written);
- for NetVLAD, :func:`read_netvlad_mat`, the reader of the MATLAB file (scipy, nothing unpickled).

NetVLAD reads ``entry.options["whitening"]`` (else ``entry.descriptor_dim``: 4096 whitened, 32768
not), CosPlace VGG16 ``entry.options["fc_dim"]``; SALAD and MegaLoc have one size.

How the releases map onto the zoo:

- SALAD (``dino_salad.ckpt``): DinoV2Backbone (timm ViT-B/14, whose parameter names are the DINOv2
  hub model's; final norm on every token, class token returned, the release's position-embedding
  interpolation) + SALAD(cluster_dim 128). ``backbone.model.X`` -> ``backbone.dino.X`` (the unused
  ``mask_token`` kept, as the backbone holds it), ``aggregator.X`` unchanged.
- MegaLoc (``model.safetensors``; the earlier ``megaloc.torch``): the same backbone without a mask
  token, rounding input sizes to multiples of 14 inside the forward pass, + SALAD(cluster_dim 256,
  out_dim 8448). ``backbone.X`` (or ``backbone.model.X`` in the earlier file, whose ``mask_token``
  is dropped) -> ``backbone.dino.X``, ``aggregator.agg.X`` -> ``aggregator.X``,
  ``aggregator.linear.X`` -> ``aggregator.projection.X``.
- NetVLAD (``Pitts30K_struct.mat``): VGGBackbone (conv5_3, no final ReLU, MatConvNet input with
  the file's mean pixel) + NetVLAD(64 clusters, bias-free assignment, MATLAB flatten order,
  whitening to 4096 as its ``pca`` layer).
- CosPlace / EigenPlaces VGG16 (``VGG16_<dim>_cosplace.pth``): VGGBackbone + CosPlace(out_dim).
  ``backbone.N.X`` -> ``backbone.net.N.X`` (torchvision's feature indices on both sides),
  ``aggregation.1.p`` -> ``aggregator.p``, ``aggregation.3.X`` -> ``aggregator.fc.X``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprlab.models.backbones.vgg import NUM_KEPT_LAYERS, STAGE_CONVS
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.layouts import _list, describe_differences
from vprlab.utils.errors import ConfigError, MissingFileError

NETVLAD_WHITENED_DIM = 4096
NETVLAD_FULL_DIM = 64 * 512
# Positions in the MATLAB file's net.layers (0-based, as scipy returns them; hloc reads the same ones).
NETVLAD_LAYER = 30
WHITENING_LAYER = 33
MEAN_PIXEL_KEY = "meta.normalization.averageImage"

_DINOV2 = "vprlab.models.backbones.dinov2.DinoV2Backbone"
_VGG = "vprlab.models.backbones.vgg.VGGBackbone"
_AGGREGATORS = "vprlab.models.aggregators"

Configs = tuple[dict[str, Any], dict[str, Any]]


# ------------------------------------------------------------------------------------------ models


def _dinov2_cfg(eval_image_size: Any, megaloc: bool) -> dict[str, Any]:
    """DINOv2 ViT-B/14 as SALAD trains it: last 4 blocks and the final norm train, 224x224 images."""
    return {
        "_target_": _DINOV2, "model_name": "vit_base_patch14_dinov2", "pretrained": False, "weights_path": None,
        "num_trainable_blocks": 4, "train_image_size": [224, 224], "eval_image_size": eval_image_size,
        "return_cls_token": True, "apply_final_norm": True,
        "round_to_patch_multiple": megaloc, "keep_mask_token": not megaloc,
    }


def _salad_cfg(cluster_dim: int, out_dim: int | None) -> dict[str, Any]:
    return {
        "_target_": f"{_AGGREGATORS}.salad.SALAD", "num_clusters": 64, "cluster_dim": cluster_dim, "token_dim": 256,
        "hidden_dim": 512, "dropout": 0.3, "sinkhorn_iters": 3, "out_dim": out_dim,
    }


def configs_salad(entry: Any = None) -> Configs:
    """SALAD's release: DINOv2 ViT-B/14 (evaluated at 322x322) + SALAD(64 x 128 + 256 = 8448)."""
    return _dinov2_cfg([322, 322], megaloc=False), _salad_cfg(128, None)


def build_salad(entry: Any = None) -> VPRModel:
    return build_model(*configs_salad(entry))


def configs_megaloc(entry: Any = None) -> Configs:
    """MegaLoc's release: DINOv2 ViT-B/14 without mask token, any input size (rounded to multiples of
    14 inside), + SALAD(64 x 256 + 256 = 16640) projected to 8448 by a Linear."""
    return _dinov2_cfg(None, megaloc=True), _salad_cfg(256, 8448)


def build_megaloc(entry: Any = None) -> VPRModel:
    return build_model(*configs_megaloc(entry))


def netvlad_whitened(entry: Any = None) -> bool:
    """Whether ``entry`` is the whitened 4096-d NetVLAD (``options["whitening"]``, else its
    ``descriptor_dim``; True without an entry) or the 32768-d one."""
    options = getattr(entry, "options", None) or {}
    if "whitening" in options:
        return bool(options["whitening"])
    dim = getattr(entry, "descriptor_dim", None)
    if dim is None:
        return True
    if int(dim) not in (NETVLAD_WHITENED_DIM, NETVLAD_FULL_DIM):
        raise ConfigError(
            f"NetVLAD VGG16 releases are {NETVLAD_WHITENED_DIM}-d (whitened) or {NETVLAD_FULL_DIM}-d, not {dim}"
        )
    return int(dim) == NETVLAD_WHITENED_DIM


def configs_netvlad(entry: Any = None) -> Configs:
    """The released VGG16 NetVLAD: VGG16 to conv5_3 with the MatConvNet input (the mean pixel starts
    at ImageNet's x 255 until the file's is loaded) + NetVLAD (64 clusters, MATLAB order), whitened to
    4096 by a Linear unless ``netvlad_whitened(entry)`` is False (32768-d)."""
    backbone = {
        "_target_": _VGG, "model_name": "vgg16", "pretrained": False, "weights_path": None, "num_trainable_blocks": 1,
        "pixel_mean": [255.0 * m for m in (0.485, 0.456, 0.406)], "train_image_size": [480, 640], "eval_image_size": None,
    }
    aggregator = {
        "_target_": f"{_AGGREGATORS}.netvlad.NetVLAD", "num_clusters": 64, "normalize_input": True, "vladv2": False,
        "pca_dim": NETVLAD_WHITENED_DIM if netvlad_whitened(entry) else None, "flatten_order": "channel_major",
    }
    return backbone, aggregator


def build_netvlad(entry: Any = None) -> VPRModel:
    return build_model(*configs_netvlad(entry))


def configs_cosplace_vgg16(entry: Any) -> Configs:
    """CosPlace / EigenPlaces VGG16: VGG16 to conv5_3 (ImageNet input; conv5 trains, 512x512 training
    images, native-size evaluation) + CosPlace (per-position L2, GeM, Linear 512 -> fc_dim, L2)."""
    backbone = {
        "_target_": _VGG, "model_name": "vgg16", "pretrained": False, "weights_path": None, "num_trainable_blocks": 1,
        "pixel_mean": None, "train_image_size": [512, 512], "eval_image_size": None,
    }
    return backbone, {"_target_": f"{_AGGREGATORS}.cosplace.CosPlace", "out_dim": int(entry.options["fc_dim"])}


def build_cosplace_vgg16(entry: Any) -> VPRModel:
    return build_model(*configs_cosplace_vgg16(entry))


# ----------------------------------------------------------------------------------- key mappings

# (pattern, replacement or None to drop), tried in order; the first that matches decides.
Rules = tuple[tuple[str, str | None], ...]
SALAD_RULES: Rules = ((r"^backbone\.model\.", "backbone.dino."), (r"^aggregator\.", "aggregator."))
MEGALOC_RULES: Rules = (
    (r"^backbone\.(?!model\.)", "backbone.dino."),
    (r"^aggregator\.agg\.", "aggregator."),
    (r"^aggregator\.linear\.", "aggregator.projection."),
)
MEGALOC_LEGACY_RULES: Rules = (
    (r"^backbone\.model\.mask_token$", None),  # DINOv2's masked-image token, unused by MegaLoc
    (r"^backbone\.model\.", "backbone.dino."),
    (r"^aggregator\.agg\.", "aggregator."),
    (r"^aggregator\.linear\.", "aggregator.projection."),
)




def check_against_model(
    state: Mapping[str, torch.Tensor], build: Callable[[Any], VPRModel], entry: Any, what: str
) -> dict[str, torch.Tensor]:
    """``state`` in the model's key order, or a ValueError naming every key of the model that
    ``state`` lacks, every key it has in excess and every shape that differs. The model is built on
    the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        expected = build(entry).state_dict()
    differences = describe_differences(expected, state)
    if differences:
        raise ConfigError(f"{what} does not match the model: {differences}")
    return {k: state[k] for k in expected}


def map_keys(raw: Mapping[str, torch.Tensor], rules: Rules, what: str) -> dict[str, torch.Tensor]:
    """Rename every key of ``raw`` by the first rule whose pattern matches (a None replacement drops
    the key); a key no rule matches is an error that names it."""
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in raw.items():
        for pattern, replacement in rules:
            if re.match(pattern, key):
                if replacement is not None:
                    out[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ConfigError(f"{what}: {len(unmapped)} keys that no mapping knows: {_list(unmapped)}")
    return out


def convert_salad(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """``dino_salad.ckpt`` (188 keys) -> the state dict of :func:`build_salad`."""
    what = "SALAD release (dino_salad.ckpt layout: backbone.model.*, aggregator.*)"
    state = map_keys(raw, SALAD_RULES, what)
    return check_against_model(state, build_salad, entry, what)


def _export(state: Mapping[str, torch.Tensor], rules: Rules, entry: Any) -> dict[str, torch.Tensor]:
    return map_keys(state, rules, f"vprlab {getattr(entry, 'method', '')} {getattr(entry, 'backbone', '')} state dict".replace("  ", " "))


def export_salad(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> ``dino_salad.ckpt``'s (the inverse of :func:`convert_salad`), in the release's order
    (``mask_token`` right after ``pos_embed``, as the DINOv2 hub model holds it)."""
    out = _export(state, ((r"^backbone\.dino\.", "backbone.model."), (r"^aggregator\.", "aggregator.")), entry)
    first = ["backbone.model.cls_token", "backbone.model.pos_embed", "backbone.model.mask_token"]
    return {**{k: out[k] for k in first if k in out}, **{k: v for k, v in out.items() if k not in first}}


def export_megaloc(state: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """Our keys -> ``model.safetensors``'s (``backbone.*``, ``aggregator.agg.*``, ``aggregator.linear.*``;
    the inverse of :func:`convert_megaloc`), sorted by name as safetensors stores them."""
    out = _export(state, (
        (r"^backbone\.dino\.", "backbone."),
        (r"^aggregator\.projection\.", "aggregator.linear."),
        (r"^aggregator\.", "aggregator.agg."),
    ), entry)
    return dict(sorted(out.items()))


def megaloc_layout(raw: Mapping[str, torch.Tensor]) -> str:
    """``"safetensors"`` (``backbone.*``, the file since January 2026) or ``"legacy"``
    (``backbone.model.*`` with ``mask_token``, ``megaloc.torch``)."""
    if any(k.startswith("backbone.model.") for k in raw):
        return "legacy"
    return "safetensors"


def convert_megaloc(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """MegaLoc's ``model.safetensors`` (189 keys) or the earlier ``megaloc.torch`` (190 keys, the
    layout is detected) -> the state dict of :func:`build_megaloc`."""
    if megaloc_layout(raw) == "legacy":
        what = "MegaLoc release (megaloc.torch layout: backbone.model.*, aggregator.agg.*, aggregator.linear.*)"
        state = map_keys(raw, MEGALOC_LEGACY_RULES, what)
    else:
        what = "MegaLoc release (model.safetensors layout: backbone.*, aggregator.agg.*, aggregator.linear.*)"
        state = map_keys(raw, MEGALOC_RULES, what)
    return check_against_model(state, build_megaloc, entry, what)


# ------------------------------------------------------------------------------------------ NetVLAD


def _mat_cell(value: Any) -> list[Any]:
    """A MATLAB cell array as scipy returns it with ``squeeze_me=True``: an object array (several
    items), the single item itself (a 1x1 cell), or an empty array."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.reshape(-1))
    if isinstance(value, np.ndarray) and value.size == 0:
        return []
    return [value]


def _tensor(value: Any, where: str) -> torch.Tensor:
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"{where} is not a numeric array (dtype {array.dtype})")
    return torch.from_numpy(np.ascontiguousarray(array.astype(np.float32 if array.dtype != np.float64 else np.float64)))


def read_netvlad_mat(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a NetVLAD MATLAB release (``Pitts30K_struct.mat``), read with
    ``scipy.io.loadmat(struct_as_record=False, squeeze_me=True)`` (no code is executed, nothing is
    unpickled).

    Keys: ``layers.{i}.weights.{j}`` for the j-th array of the i-th entry of ``net.layers`` (0-based,
    as MATLAB's cell order; layers without weights give none), and ``meta.normalization.averageImage``
    (the mean pixel, 3 values; a whole mean image gives its first pixel, as hloc reads it). Arrays
    keep MATLAB's axis order ([k, k, in, out] kernels); :func:`convert_netvlad` rearranges them.
    """
    import scipy.io

    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"NetVLAD weights file {str(path)!r} does not exist")
    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise ConfigError(f"{str(path)!r} is a MATLAB v7.3 (HDF5) file; save it with -v7 (scipy reads up to v7)") from err
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file means the same thing to the user
        raise ConfigError(f"{str(path)!r} could not be read as a MATLAB file ({type(err).__name__}: {err})") from err
    net = mat.get("net")
    if net is None or not hasattr(net, "layers"):
        raise ConfigError(f"{str(path)!r} holds no 'net' struct with 'layers' (found {sorted(k for k in mat if not k.startswith('__'))})")
    raw: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(_mat_cell(net.layers)):
        for j, array in enumerate(_mat_cell(getattr(layer, "weights", None) if layer is not None else None)):
            if not isinstance(array, (np.ndarray, np.generic, float, int)) or np.asarray(array).dtype.kind not in "fiu":
                continue  # not a numeric array (a struct, a string, a nested cell): nothing to load
            raw[f"layers.{i}.weights.{j}"] = _tensor(array, f"{path.name}: net.layers{{{i + 1}}}.weights{{{j + 1}}}")
    try:
        average = np.asarray(net.meta.normalization.averageImage)
    except AttributeError as err:
        raise ConfigError(f"{str(path)!r} has no net.meta.normalization.averageImage (the mean pixel)") from err
    if average.ndim >= 2:  # a mean image [H, W, 3]: its first pixel, as the released loaders read it
        average = average.reshape(-1, average.shape[-1])[0]
    raw[MEAN_PIXEL_KEY] = _tensor(average.reshape(-1), f"{path.name}: net.meta.normalization.averageImage")
    return raw


def _take(raw: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...], what: str, used: set[str]) -> torch.Tensor:
    """``raw[key]``, checked against ``shape`` once unit axes are dropped (scipy's ``squeeze_me``
    already drops them; a reader that keeps them gives the same tensor here)."""
    if key not in raw:
        raise ConfigError(f"{what}: missing {key} (expected shape {shape})")
    value = raw[key]
    if value.dim() > len(shape):
        value = value.reshape([n for n in value.shape if n != 1] or [1])
    if tuple(value.shape) != shape:
        raise ConfigError(f"{what}: {key} has shape {tuple(value.shape)}, expected {shape}")
    used.add(key)
    return value


def convert_netvlad(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """The tensors of :func:`read_netvlad_mat` -> the state dict of :func:`build_netvlad`.

    ``net.layers`` entries 0..28 pair position by position with VGG16's first 29 feature layers; at
    each convolution, ``weights`` = {kernel [k, k, in, out] -> [out, in, k, k], bias [out]}. Entry 30
    is NetVLAD: {assignment weights [512, 64] -> bias-free 1x1 conv [64, 512, 1, 1], centres
    [512, 64] stored negated -> [64, 512]}. Entry 33 is the whitening: {[1, 1, 32768, 4096] (read
    as [32768, 4096]) -> Linear weight [4096, 32768], bias [4096]} (only for the 4096-d model). An array the mapping does
    not know in one of these entries (or in a ReLU / pooling entry among the first 29) is an error
    that names it; the other entries (normalisation layers) are not read, as by the released loaders.
    """
    what = "NetVLAD release (MATLAB net.layers)"
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    conv_positions = [i for stage in STAGE_CONVS for i in stage]
    for n, position in enumerate(conv_positions):
        cin, cout = channels[n], channels[n + 1]
        kernel = _take(raw, f"layers.{position}.weights.0", (3, 3, cin, cout), what, used)
        bias = _take(raw, f"layers.{position}.weights.1", (cout,), what, used)
        state[f"backbone.net.{position}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
        state[f"backbone.net.{position}.bias"] = bias.reshape(-1).clone()
    mean_pixel = _take(raw, MEAN_PIXEL_KEY, (3,), what, used)
    state["backbone.pixel_mean"] = mean_pixel.clone()
    assignment = _take(raw, f"layers.{NETVLAD_LAYER}.weights.0", (512, 64), what, used)
    centres = _take(raw, f"layers.{NETVLAD_LAYER}.weights.1", (512, 64), what, used)
    state["aggregator.centroids"] = (-centres).t().contiguous()
    state["aggregator.conv.weight"] = assignment.t().contiguous()[:, :, None, None]
    if netvlad_whitened(entry):
        weight = _take(raw, f"layers.{WHITENING_LAYER}.weights.0", (NETVLAD_FULL_DIM, NETVLAD_WHITENED_DIM), what, used)
        bias = _take(raw, f"layers.{WHITENING_LAYER}.weights.1", (NETVLAD_WHITENED_DIM,), what, used)
        state["aggregator.pca.weight"] = weight.t().contiguous()
        state["aggregator.pca.bias"] = bias.reshape(-1).clone()
    else:
        used.update(k for k in raw if k.startswith(f"layers.{WHITENING_LAYER}."))  # present, not used at 32768-d
    state["aggregator.initialised"] = torch.tensor(True)
    read_layers = {*range(NUM_KEPT_LAYERS), NETVLAD_LAYER, WHITENING_LAYER}
    unused = [k for k in raw if k not in used and k.startswith("layers.") and int(k.split(".")[1]) in read_layers]
    if unused:
        raise ConfigError(f"{what}: {len(unused)} arrays that no mapping knows: {_list(unused)}")
    return check_against_model(state, build_netvlad, entry, what)


# ------------------------------------------------------------------------------ CosPlace VGG16

COSPLACE_VGG16_RULES: Rules = (
    (r"^backbone\.(?=\d+\.(weight|bias)$)", "backbone.net."),
    (r"^aggregation\.1\.p$", "aggregator.p"),
    (r"^aggregation\.3\.(?=(weight|bias)$)", "aggregator.fc."),
)


def convert_cosplace_vgg16(raw: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """``VGG16_<dim>_cosplace.pth`` / ``VGG16_512_eigenplaces.pth`` -> the state dict of
    :func:`build_cosplace_vgg16`."""
    what = f"{getattr(entry, 'method', 'CosPlace')} VGG16 release (backbone.N.*, aggregation.1.p, aggregation.3.*)"
    state = map_keys(raw, COSPLACE_VGG16_RULES, what)
    return check_against_model(state, build_cosplace_vgg16, entry, what)


def export_cosplace_vgg16(state: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """Our keys -> the CosPlace / EigenPlaces VGG16 release's (the inverse of :func:`convert_cosplace_vgg16`)."""
    return _export(state, (
        (r"^backbone\.net\.(?=\d+\.(weight|bias)$)", "backbone."),
        (r"^aggregator\.p$", "aggregation.1.p"),
        (r"^aggregator\.fc\.(?=(weight|bias)$)", "aggregation.3."),
    ), entry)
