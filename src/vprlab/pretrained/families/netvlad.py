"""NetVLAD (Arandjelovic et al., CVPR 2016), the MATLAB release ``Pitts30K_struct.mat``: VGGBackbone
(conv5_3, no final ReLU, MatConvNet input with the file's mean pixel) + NetVLAD (64 clusters,
bias-free assignment, MATLAB flatten order, whitening to 4096 as its ``pca`` layer), built from the
zoo. :func:`read_netvlad_mat` reads the file (scipy, nothing unpickled); the entry's
``options["whitening"]`` (else its ``descriptor_dim``: 4096 whitened, 32768 not) picks the model.
The MATLAB file is not written back (no export)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprlab.models.backbones.vgg import NUM_KEPT_LAYERS, STAGE_CONVS
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    NATIVE,
    Configs,
    check_against_model,
    vgg16_cfg,
)
from vprlab.pretrained.keymaps import list_keys
from vprlab.pretrained.registry import PublishedModel, register
from vprlab.utils.errors import ConfigError, MissingFileError

_HERE = f"{FAMILIES_MODULE}.netvlad"
NETVLAD_WHITENED_DIM = 4096
NETVLAD_FULL_DIM = 64 * 512
# Positions in the MATLAB file's net.layers (0-based, as scipy returns them; hloc reads the same ones).
NETVLAD_LAYER = 30
WHITENING_LAYER = 33
MEAN_PIXEL_KEY = "meta.normalization.averageImage"


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
    backbone = vgg16_cfg([255.0 * m for m in (0.485, 0.456, 0.406)], [480, 640])
    aggregator = {
        "_target_": f"{AGGREGATORS}.netvlad.NetVLAD", "num_clusters": 64, "normalize_input": True, "vladv2": False,
        "pca_dim": NETVLAD_WHITENED_DIM if netvlad_whitened(entry) else None, "flatten_order": "channel_major",
    }
    return backbone, aggregator


def build_netvlad(entry: Any = None) -> VPRModel:
    return build_model(*configs_netvlad(entry))



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
        raise ConfigError(f"{what}: {len(unused)} arrays that no mapping knows: {list_keys(unused)}")
    return check_against_model(state, build_netvlad, entry, what)


register(*(PublishedModel(
    name=name, method="NetVLAD", paper="Arandjelovic et al., CVPR 2016", backbone="VGG16", descriptor_dim=dim,
    file_name="VGG16-NetVLAD-Pitts30K.mat", url="https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat",
    container="matlab", preprocessing=NATIVE, build=f"{_HERE}:build_netvlad", configs=f"{_HERE}:configs_netvlad",
    convert=f"{_HERE}:convert_netvlad", read=f"{_HERE}:read_netvlad_mat",
    options={"whitening": dim == 4096}, cache_dir="netvlad", repo="Relja/netvlad",
    protocols={"vpr-methods-evaluation": NATIVE},
    note="whitened (PCA) 4096-d" if dim == 4096 else "without whitening",
) for name, dim in (("netvlad_vgg16_pitts30k", 4096), ("netvlad_vgg16_pitts30k_32768", 32768))))
