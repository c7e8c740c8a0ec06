"""Loading published models and files exported from them: :func:`load_pretrained` (Python),
:func:`load_published` (``evaluate.py pretrained=...`` through :func:`vprlab.commands.models.load_model`), all through
one path (:func:`_load_named`: build, read the file into the model's keys through the family's
mapping, strict load). The download is :mod:`.download`, the torch.hub entries :mod:`.hub`,
``vprlab models export`` :mod:`.export`, its sidecar file :mod:`.sidecar`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.download import extra_files, release_file
from vprlab.pretrained.families.boq import infer_architecture, published_architecture
from vprlab.pretrained.keymaps import describe_differences, load_strict
from vprlab.pretrained.layouts import WRAPPER_PREFIXES, load_release_state_dict, to_release_layout
from vprlab.pretrained.registry import (
    PUBLISHED_MODELS,
    PublishedModel,
    is_published,
    published_model,
    resolve_callable,
)
from vprlab.pretrained.sidecar import read_export_sidecar, sidecar_path
from vprlab.utils.errors import ConfigError, MissingFileError
from vprlab.utils.weights import read_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "display_name", "eval_preprocessing", "load_pretrained", "load_published",
    "load_published_state", "read_export_sidecar", "read_published_state", "read_release_state", "release_file", "sidecar_path",
]

# Names that live in hub.py / export.py, still importable from here (imported on first use: they import this module).
_MOVED = {
    **dict.fromkeys(("HUB_MODELS", "find_published", "hub_model", "hub_published"), "vprlab.pretrained.hub"),
    **dict.fromkeys(("checkpoint_published_name", "export_published", "export_release"), "vprlab.pretrained.export"),
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _read_file(read: str | None, path: Path, allow_unsafe_pickle: bool) -> dict[str, torch.Tensor]:
    """One file's tensors: by the family's ``read`` function when it has one (NetVLAD's MATLAB file,
    AP-GeM's dirtorch pickle, AnyLoc's vocabulary) and the file is not a ``.safetensors`` one (e.g. an
    export), else as a state dict (safetensors by suffix, else torch); a ``module.``-like prefix shared
    by every key dropped."""
    if read is not None and path.suffix != ".safetensors":
        raw = resolve_callable(read)(path)
    else:
        raw = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    for prefix in WRAPPER_PREFIXES:
        if raw and all(k.startswith(prefix) for k in raw):
            raw = {k[len(prefix):]: v for k, v in raw.items()}
    return raw


def read_published_state(
    name: str, path: str | Path, *, allow_unsafe_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The weights of ``path`` (a file of the published model ``name``) under the model's own state-dict
    keys: read from its container (tensors only; GPU-saved tensors land on the CPU), a ``module.``
    prefix shared by every key dropped, the family's explicit key mapping applied, float16/bfloat16
    values cast to float32. A model of several files (AnyLoc) also reads its ``extra_files``: from the
    folder of ``path`` when there, else the torch hub cache, else downloaded once (:func:`extra_files`).
    A family's ``check_sidecar`` first checks the files kept next to it (QAA: the Hugging Face
    ``config.json``)."""
    spec = published_model(name)
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"weights file {str(path)!r} does not exist; pass the path of {spec.name}'s file {spec.download_name}")
    raw = _read_file(spec.read, path, allow_unsafe_pickle)
    for file, extra_path in zip(spec.extra_files, extra_files(spec.name, beside=path.parent)):  # AnyLoc: + DINOv2
        raw.update((file.prefix + k, v) for k, v in _read_file(file.read, extra_path, allow_unsafe_pickle).items())
    if spec.check_sidecar is not None:
        resolve_callable(spec.check_sidecar)(path, spec)
    if spec.convert is not None:
        try:
            raw = resolve_callable(spec.convert)(raw, spec)
        except ValueError as err:
            raise ConfigError(f"weights file {str(path)!r} is not {spec.name}'s file {spec.download_name}: {err}") from err
    return {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in raw.items()}


def _load_named(
    spec: PublishedModel, weights: str | Path | None, size: tuple[int, int] | None, model_class: type[VPRModel],
    allow_unsafe_pickle: bool,
) -> tuple[VPRModel, Path]:
    """The one load path of every published model: build it (random weights), read the file (``weights``,
    else the cached download) into the model's keys through the family's mapping, load it strictly.
    A family that describes its network by an architecture value (BoQ) is built from it, with the
    backbone evaluating at ``size``; the others carry their method's preprocessing
    (``model.eval_preprocessing``, resized to ``size``)."""
    path = Path(weights).expanduser() if weights is not None else release_file(spec.name)
    extra_files(spec.name, beside=path.parent)  # every file on disk (or its download error) before building a big model
    if spec.architecture is not None:
        architecture = spec.architecture if size is None else replace(spec.architecture, eval_image_size=size)
        model = architecture.build(model_class)
    else:
        model = spec.build_model()
        model.eval_preprocessing = spec.preprocessing if size is None else spec.preprocessing.resized(size)
    state = read_published_state(spec.name, path, allow_unsafe_pickle=allow_unsafe_pickle and weights is not None)
    load_published_state(model, state, spec, f"weights file {str(path)!r}")
    return model, path


def load_published(
    name: str, weights: str | Path | None = None, *, allow_unsafe_pickle: bool = False
) -> tuple[VPRModel, Path]:
    """(model of the published ``name`` with its released weights, in eval mode, the file read).
    ``weights``: a local copy of the file; without it the file comes from :func:`release_file`.
    Strict: every key of the model present with its shape, nothing else; differences are named.
    The model carries its method's evaluation preprocessing as ``model.eval_preprocessing`` (BoQ's
    evaluates at its backbone's size)."""
    model, path = _load_named(published_model(name), weights, None, VPRModel, allow_unsafe_pickle)
    return model.eval(), path


def read_release_state(path: Path, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weights in ``path`` (a BoQ file or checkpoint) converted to the release layout (conversions are logged)."""
    state, notes = to_release_layout(read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle))
    for note in notes:
        log.info("%s: %s", path, note)
    return state


def load_published_state(model: VPRModel, state: dict[str, torch.Tensor], spec: PublishedModel, source: str) -> None:
    """Strict load of a converted state dict, or a ValueError naming missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    load_strict(model, state, source,
                f"the released {spec.name} ({spec.method} {spec.backbone}, {spec.descriptor_dim}-d, file {spec.download_name})",
                lambda: _in_release_names(spec, expected, state))


def _in_release_names(spec: PublishedModel, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """The same differences under the release file's own key names, when the family can map them back."""
    if spec.export is None:
        return ""
    export = resolve_callable(spec.export)
    try:
        release_expected, release_found = export(expected, spec), export(found, spec)
    except ValueError:
        return ""
    text = describe_differences(release_expected, release_found)
    return f" (in the file's key names: {text})" if text and set(release_expected) != set(expected) else ""


def eval_preprocessing(name: str, protocol: str | None = None, image_size: Any = None) -> EvalPreprocessing:
    """The evaluation preprocessing of the published model ``name``: its own code's (``protocol`` None or
    "original") or another named protocol's ("vpr-methods-evaluation" where offered), optionally at
    another ``image_size``; ``.transform()`` is the PIL image -> tensor transform, ``.describe()`` a label."""
    prep = published_model(name).eval_preprocessing(protocol)
    return prep if image_size is None else prep.resized(image_size)


def _sidecar_size(path: Path) -> tuple[int, int] | None:
    """The eval image size recorded by `vprlab models export` next to ``path`` (None without a sidecar)."""
    record = read_export_sidecar(path)
    if record is None or not record.get("eval_image_size"):
        return None
    log.info("%s: eval image size %s from %s", path, record["eval_image_size"], sidecar_path(path).name)
    return tuple(int(v) for v in record["eval_image_size"])  # type: ignore[return-value]


def display_name(name_or_path: str | Path, protocol: str | None = None) -> str:
    """The name results and tables give a model: the canonical published name (aliases resolved), or the
    stem of a weights file given by path; ``@<protocol>`` when evaluated under another protocol."""
    key = str(name_or_path)
    if is_published(key):
        name = published_model(key).name
    else:
        name = Path(key).stem
    return f"{name}@{protocol}" if protocol not in (None, "", "original") else name


def _published_name(name_or_path: str | Path) -> str:
    """The published model ``name_or_path`` is, or (a file exported by `vprlab models export`) was
    fine-tuned from; a ConfigError for a file without that record."""
    key = str(name_or_path)
    if is_published(key):
        return published_model(key).name
    record = read_export_sidecar(key) if Path(key).expanduser().is_file() else None
    if record and record.get("published_model"):
        return str(record["published_model"])
    raise ConfigError(f"{key!r} is not a published model, nor a file exported from one (no {sidecar_path(key).name} "
                      "naming its published model); an evaluation protocol applies to published models only")


def _resolve(
    name_or_path: str | Path, weights: str | Path | None, image_size: Any, model_class: type[VPRModel],
    allow_unsafe_pickle: bool = False,
) -> tuple[VPRModel, Path, str]:
    """(model with weights, weights file, display name) for a published name or a file path (one exported
    by ``vprlab models export``: its sidecar names the published model; else a BoQ file, whose keys
    describe its architecture).
    ``allow_unsafe_pickle`` applies to local files only; a download is always read tensors-only."""
    from vprlab.utils.images import as_hw

    size = as_hw(image_size) if image_size is not None else None
    key = str(name_or_path)
    if is_published(key):
        model, path = _load_named(published_model(key), weights, size, model_class, allow_unsafe_pickle)
        return model, path, display_name(key)
    if weights is not None:  # weights= is a local copy of a released model's file: name that model
        raise ConfigError(f"unknown released model {key!r} (given weights={str(weights)!r}); choose one of {sorted(PUBLISHED_MODELS)}")
    path = Path(key).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"{key!r} is neither a released model (`vprlab models list` shows them: {', '.join(sorted(PUBLISHED_MODELS))}) "
            "nor an existing weights file"
        )
    record = read_export_sidecar(path)
    if record is not None and record.get("published_model"):  # exported from a fine-tuned published model
        spec = published_model(str(record["published_model"]))
        model, _ = _load_named(spec, path, size, model_class, allow_unsafe_pickle)
        log.info("%s: a %s in its released layout (from %s)", path, spec.name, sidecar_path(path).name)
        return model, path, display_name(path)
    state = read_release_state(path, allow_unsafe_pickle)
    if "aggregator.proj_c.weight" not in state:
        raise ConfigError(
            f"weights file {str(path)!r} is not a BoQ model (no aggregator.proj_c weights) and has no {sidecar_path(path).name} naming the published "
            "model it belongs to. For a file in a published model's layout pass that model: "
            f"load_pretrained(<name>, weights={str(path)!r}) (vprlab compare: --models <name> --weights <name>={path}); "
            "for a fine-tuned checkpoint, export it with `vprlab models export CKPT OUT.pth`, which writes the sidecar"
        )
    architecture = published_architecture(infer_architecture(state, f"weights file {str(path)!r}"))
    size = size or _sidecar_size(path)
    if size is not None:
        architecture = replace(architecture, eval_image_size=size)
    model = architecture.build(model_class)
    load_release_state_dict(model, state, f"weights file {str(path)!r}", architecture.describe())
    return model, path, display_name(path)


def load_pretrained(
    name_or_path: str | Path,
    *,
    weights: str | Path | None = None,
    image_size: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    allow_unsafe_pickle: bool = False,
    protocol: str | None = None,
):
    """A published model (or an exported BoQ model) in eval mode, and its eval transform (PIL image -> tensor).

    ``name_or_path``: a published name (``vprlab models list``: ``"cosplace_resnet50_2048"``,
    ``"mixvpr_resnet50_4096"``, ``"salad_dinov2_8448"``...; for other methods than BoQ the transform is
    the method's own evaluation preprocessing, e.g. native size for CosPlace, 320x320 PIL bilinear for
    MixVPR, or another named ``protocol`` such as ``"vpr-methods-evaluation"``); or
    ``"boq_resnet50_16384"`` / ``"boq_dinov2_12288"`` (also ``"resnet50_16384"``,
    ``"dinov2_12288"``), downloaded once into the torch hub cache unless ``weights`` gives a local copy;
    or the path of a state dict in the release layout (e.g. written by :func:`export_release`), whose
    architecture is read off its keys and shapes. The transform resizes to the published size
    (ResNet50: 384x384, DINOv2: 322x322; ``image_size`` overrides it) with bicubic antialiased
    interpolation and normalises with the ImageNet statistics. Files are read tensors-only;
    ``allow_unsafe_pickle=True`` lets a trusted local file that needs the full unpickler load.

    Example::

        model, transform = load_pretrained("boq_dinov2_12288")
        descriptor = model(transform(pil_image).unsqueeze(0))  # [1, 12288], L2-normalised
    """
    from vprlab.data.transforms import eval_transform

    model, _, _ = _resolve(name_or_path, weights, image_size, VPRModel, allow_unsafe_pickle)
    model.eval()
    if device is not None:
        model.to(device)
    prep = getattr(model, "eval_preprocessing", None)
    if protocol not in (None, "", "original"):
        prep = eval_preprocessing(_published_name(name_or_path), protocol, image_size)  # a protocol needs a published model
        model.eval_preprocessing = prep
    if prep is not None:
        return model, prep.transform()
    transform = eval_transform(model.backbone.eval_image_size, mean=model.backbone.mean, std=model.backbone.std)
    return model, transform
