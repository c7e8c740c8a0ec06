"""AP-GeM (Revaud et al., "Learning with Average Precision: Training Image Retrieval with a Listwise
Loss", ICCV 2019; github.com/naver/deep-image-retrieval, "dirtorch"): ResNet-101 + GeM + FC + L2, then
the Landmarks-clean PCA whitening (power 0.25) + L2, as VPR-methods-evaluation (``vpr_models/apgem.py``,
after hloc) and dirtorch's ``test_dir.py`` defaults apply it. Built from the zoo's
:class:`~vprlab.models.backbones.resnet.ResNetBackbone` and ``GeM`` aggregator (``fc_dim``,
``whitening``).

What the original code computes (``dirtorch/nets/rmac_resnet.py`` ResNet_RMAC, ``nets/layers/pooling.py``
GeneralizedMeanPoolingP, ``utils/common.py`` whiten_features): torchvision-style ResNet-101 to layer4
(stride 32), GeM with a learned ``p`` (clamp 1e-6, ``adaptive_avg_pool2d``), ``fc`` (2048 -> 2048, bias),
L2; whitening ``(x - mean_) @ components_.T / explained_variance_ ** 0.25`` (``/`` only if the PCA was
fitted with ``whiten=True``; all components), L2. ``norm_features`` and ``center_bias`` are taken at
their defaults (off), as ``model_options`` is only in the file.

File ``Resnet-101-AP-GeM.pt`` (inside a zip on Google Drive): a torch pickle ``{"state_dict", "model_options",
"preprocess", "pca": {"Landmarks_clean": sklearn PCA, ...}, ...}``. :func:`read_apgem` reads it with
torch's weights-only unpickler, admitting only numpy arrays and the PCA's attribute dictionary (read
as data into a plain record; no sklearn code runs). Key map: ``conv1`` / ``bn1`` / ``layerK`` ->
``backbone.net.0`` / ``1`` / ``3+K`` (a ``module.`` prefix is dropped), ``adpool.p`` -> ``aggregator.p``,
``fc.*`` -> ``aggregator.fc.*``; the PCA becomes ``aggregator.whiten`` (weight = components_ /
explained_variance_^0.25, bias = -weight @ mean_)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    NATIVE,
    Configs,
    check_against_model,
    resnet_cfg,
)
from vprlab.pretrained.keymaps import map_keys
from vprlab.pretrained.registry import PublishedModel, register
from vprlab.utils.errors import ConfigError, MissingFileError
from vprlab.utils.weights import error_summary, numpy_safe_globals

_HERE = f"{FAMILIES_MODULE}.apgem"
WHITENING = "Landmarks_clean"  # VME's conf["whiten_name"], dirtorch test_dir.py's --whiten default
WHITEN_POWER = 0.25  # whitenp (VME and test_dir.py); whitenv None (all components), whitenm 1.0
PCA_PREFIX = f"pca.{WHITENING}."
PCA_ARRAYS = ("mean_", "components_", "explained_variance_")
_STATE_PREFIX = "state_dict."


class PickledPCA:
    """What :func:`read_apgem` makes of the release's pickled ``sklearn.decomposition.PCA``: its
    attribute dictionary as data (``state``); no sklearn code is imported or run."""

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, Mapping) else {}


def _safe_globals() -> list[Any]:
    """The only non-plain globals :func:`read_apgem` admits: numpy's arrays and scalars
    (:func:`~vprlab.utils.weights.numpy_safe_globals`) and sklearn's PCA, read as :class:`PickledPCA`."""
    allowed = numpy_safe_globals()
    for module in ("sklearn.decomposition.pca", "sklearn.decomposition._pca"):
        allowed.append((PickledPCA, f"{module}.PCA"))
    return allowed


def read_apgem(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of dirtorch's ``Resnet-101-AP-GeM.pt``: ``state_dict.<key>`` for every weight and
    ``pca.Landmarks_clean.{mean_, components_, explained_variance_, whiten}`` for the whitening.
    Read with ``torch.load(weights_only=True)`` and an allowlist of numpy arrays and the PCA record
    (:class:`PickledPCA`); any other class in the file is refused with its name."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"AP-GeM weights file {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a refused class, a damaged or foreign file: the user learns which
        raise ConfigError(
            f"{str(path)!r} could not be read as dirtorch's AP-GeM checkpoint ({error_summary(err)}); vprlab reads "
            "it without running code stored in it, admitting tensors, plain types, numpy arrays and the sklearn PCA "
            "of its whitening only"
        ) from err
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ConfigError(f"{str(path)!r} is not a dirtorch checkpoint (no 'state_dict' entry; found {found})")
    raw = {f"{_STATE_PREFIX}{k}": v for k, v in obj["state_dict"].items() if isinstance(v, torch.Tensor)}
    pcas = obj.get("pca")
    if not isinstance(pcas, Mapping) or not isinstance(pcas.get(WHITENING), PickledPCA):
        found = sorted(pcas) if isinstance(pcas, Mapping) else None
        raise ConfigError(f"{str(path)!r} holds no {WHITENING!r} PCA under 'pca' (found {found}); "
                          "AP-GeM's descriptor needs that whitening")
    state = pcas[WHITENING].state
    for name in PCA_ARRAYS:
        value = state.get(name)
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise ConfigError(f"{str(path)!r}: the {WHITENING} PCA has no float array {name!r}")
        raw[f"{PCA_PREFIX}{name}"] = torch.from_numpy(np.ascontiguousarray(value))
    raw[f"{PCA_PREFIX}whiten"] = torch.tensor(bool(state.get("whiten", False)))
    return raw


def configs_apgem(entry: Any = None) -> Configs:
    """ResNet-101 with layer4 (stride 32, native-size evaluation) + GeM (learned p) + FC 2048 + whitening."""
    backbone = resnet_cfg("resnet101", False, 2, None, None)
    return backbone, {"_target_": f"{AGGREGATORS}.gem.GeM", "fc_dim": 2048, "whitening": True}


def build_apgem(entry: Any = None) -> VPRModel:
    return build_model(*configs_apgem(entry))


def convert_apgem(raw: Mapping[str, torch.Tensor], entry: Any = None) -> dict[str, torch.Tensor]:
    """The tensors of :func:`read_apgem` -> the state dict of :func:`build_apgem`. A file saved by a
    PyTorch without BatchNorm's ``num_batches_tracked`` (before 0.4.1) loads with those counters at 0
    (they do not enter an evaluation)."""
    what = "AP-GeM release (dirtorch Resnet-101-AP-GeM.pt: state_dict conv1/bn1/layer1-4/adpool.p/fc, pca.Landmarks_clean)"
    weights = {k[len(_STATE_PREFIX):]: v for k, v in raw.items() if k.startswith(_STATE_PREFIX)}
    if weights and all(k.startswith("module.") for k in weights):  # saved from DataParallel (dirtorch strips it too)
        weights = {k[len("module."):]: v for k, v in weights.items()}
    state = map_keys(weights, (
        (r"conv1\.weight", "backbone.net.0.weight"),
        (r"bn1\.(.+)", r"backbone.net.1.\1"),
        *((rf"layer{k}\.(.+)", rf"backbone.net.{3 + k}.\1") for k in (1, 2, 3, 4)),
        (r"adpool\.p", "aggregator.p"),
        (r"fc\.(weight|bias)", r"aggregator.fc.\1"),
    ), what)
    if not any(k.endswith("num_batches_tracked") for k in state):
        for key in [k for k in state if k.endswith(".running_mean")]:
            state[key[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(0)
    missing = [f"{PCA_PREFIX}{name}" for name in (*PCA_ARRAYS, "whiten") if f"{PCA_PREFIX}{name}" not in raw]
    if missing:
        raise ConfigError(f"{what}: missing {missing}")
    mean = raw[f"{PCA_PREFIX}mean_"].double()
    components = raw[f"{PCA_PREFIX}components_"].double()
    variance = raw[f"{PCA_PREFIX}explained_variance_"].double()
    if components.dim() != 2 or mean.shape != components.shape[1:] or variance.shape != components.shape[:1]:
        raise ConfigError(f"{what}: PCA shapes mean_ {tuple(mean.shape)}, components_ {tuple(components.shape)}, "
                          f"explained_variance_ {tuple(variance.shape)} do not fit together")
    weight = components / variance.pow(WHITEN_POWER)[:, None] if bool(raw[f"{PCA_PREFIX}whiten"]) else components
    state["aggregator.whiten.weight"] = weight.float()
    state["aggregator.whiten.bias"] = (-(weight @ mean)).float()
    return check_against_model(state, build_apgem, entry, what)


register(PublishedModel(
    name="apgem_resnet101_2048", method="AP-GeM", paper="Revaud et al., ICCV 2019", backbone="ResNet101",
    descriptor_dim=2048, file_name="Resnet-101-AP-GeM.pt", url=None, container="torch",
    preprocessing=NATIVE, build=f"{_HERE}:build_apgem", convert=f"{_HERE}:convert_apgem", read=f"{_HERE}:read_apgem",
    configs=f"{_HERE}:configs_apgem", cache_dir="dirtorch", repo="naver/deep-image-retrieval",
    manual_download=("Google Drive file id 1UWJGDuHtzaQdFhSMojoYVQjmCXhIwVvy (https://drive.google.com/open?id="
                     "1UWJGDuHtzaQdFhSMojoYVQjmCXhIwVvy, the Resnet101-AP-GeM link of naver/deep-image-retrieval's "
                     "README), a zip holding Resnet-101-AP-GeM.pt"),
    protocols={"vpr-methods-evaluation": NATIVE},
    note="descriptor after the Landmarks-clean PCA whitening (power 0.25), as VPR-methods-evaluation and dirtorch evaluate it",
))
