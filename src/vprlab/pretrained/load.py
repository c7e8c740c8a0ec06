"""Released checkpoints on disk (downloaded once into the torch hub cache) and the models built from them:
:func:`load_pretrained` (Python), :func:`load_for_evaluation` (``evaluate.py pretrained=...``),
:func:`hub_model` (``hubconf.get_trained_boq``) and :func:`export_release`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.catalog import is_published, published_model
from vprlab.pretrained.layouts import (
    infer_architecture,
    load_release_state_dict,
    to_release_layout,
)
from vprlab.pretrained.registry import (
    _ALIASES,
    PUBLISHED_MODELS,
    RELEASED_MODELS,
    BoQArchitecture,
    HubBoQModel,
    PublishedModel,
    released_model,
)
from vprlab.utils.errors import ConfigError, DownloadError, MissingFileError
from vprlab.utils.weights import read_state_dict

log = logging.getLogger(__name__)

def release_file(name: str, *, progress: bool = True) -> Path:
    """Path of a published model's file in the torch hub cache (``<hub dir>/checkpoints/<file>``, where
    ``torch.hub.load_state_dict_from_url`` keeps it too; NetVLAD and MegaLoc use their own sub-folders),
    downloaded once if it is not there. One attempt, no retries: offline, the error names the URL and
    the path to put the file at. Files without a URL (Google Drive: MixVPR, Conv-AP) are never fetched;
    the error says where to get them."""
    spec = published_model(name)
    cached = spec.local_path()
    if cached.is_file():
        return cached
    use_instead = (  # the name the URL serves: what a user who fetches the file by hand has
        f"pass its path: weights=/path/{spec.download_name} (load_pretrained, torch.hub) or "
        f"pretrained.path=/path/{spec.download_name} (evaluate.py, train.py), or copy it to {cached}"
    )
    if spec.url is None:
        raise MissingFileError(
            f"{spec.name}: {spec.file_name} cannot be downloaded by URL; get it from {spec.manual_download} and "
            f"{use_instead}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", spec.url, cached)
    try:
        torch.hub.download_url_to_file(spec.url, str(cached), progress=progress)
    except Exception as err:  # no network, proxy, interrupted download...: all end the same way
        raise DownloadError(
            f"could not download {spec.url} ({type(err).__name__}: {err}). Without network access, fetch "
            f"{spec.download_name} elsewhere and {use_instead}"
        ) from err
    return cached


def _file_container(spec: PublishedModel, path: Path) -> str:
    """The container of ``path``: the release's, except that a ``.safetensors`` file is read as one and
    a torch file given for a safetensors release (MegaLoc's legacy ``megaloc.torch``) as a torch file."""
    if spec.container == "matlab":
        return "matlab"
    return "safetensors" if path.suffix == ".safetensors" else "torch"


def read_published_state(
    name: str, path: str | Path, *, allow_unsafe_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The weights of ``path`` (a file of the published model ``name``) under the model's own state-dict
    keys: read from its container (tensors only; GPU-saved tensors land on the CPU), a ``module.``
    prefix shared by every key dropped, the family's explicit key mapping applied, float16/bfloat16
    values cast to float32."""
    from vprlab.pretrained.layouts import WRAPPER_PREFIXES
    from vprlab.pretrained.registry import resolve_callable

    spec = published_model(name)
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"weights file {str(path)!r} does not exist; pass the path of {spec.name}'s file {spec.download_name}")
    container = _file_container(spec, path)
    if container == "matlab":
        raw = resolve_callable(spec.read)(path)  # type: ignore[arg-type]
    else:
        raw = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)  # safetensors by suffix, else torch
    for prefix in WRAPPER_PREFIXES:
        if raw and all(k.startswith(prefix) for k in raw):
            raw = {k[len(prefix):]: v for k, v in raw.items()}
    if spec.convert is not None:
        try:
            raw = resolve_callable(spec.convert)(raw, spec)
        except ValueError as err:
            raise ConfigError(f"weights file {str(path)!r} is not {spec.name}'s file {spec.download_name}: {err}") from err
    return {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in raw.items()}


def load_published(
    name: str, weights: str | Path | None = None, *, allow_unsafe_pickle: bool = False
) -> tuple[VPRModel, Path]:
    """(model of the published ``name`` with its released weights, in eval mode, the file read).
    ``weights``: a local copy of the file; without it the file comes from :func:`release_file`.
    Strict: every key of the model present with its shape, nothing else; differences are named.
    The model carries its method's evaluation preprocessing as ``model.eval_preprocessing``."""
    spec = published_model(name)
    if spec.name in RELEASED_MODELS:
        model, path, _ = _resolve(spec.name, weights, None, VPRModel, allow_unsafe_pickle)
        return model.eval(), path
    path = Path(weights).expanduser() if weights is not None else release_file(spec.name)
    model = spec.build_model()
    state = read_published_state(spec.name, path, allow_unsafe_pickle=allow_unsafe_pickle and weights is not None)
    load_published_state(model, state, spec, f"weights file {str(path)!r}")
    model.eval_preprocessing = spec.preprocessing
    return model.eval(), path


def load_published_state(model: VPRModel, state: dict[str, torch.Tensor], spec: PublishedModel, source: str) -> None:
    """Strict load of a converted state dict, or a ValueError naming missing, unexpected and misshapen keys."""
    from vprlab.pretrained.layouts import describe_differences

    expected = model.state_dict()
    differences = describe_differences(expected, state)
    if differences:
        raise ConfigError(
            f"{source} does not match the released {spec.name} ({spec.method} {spec.backbone}, {spec.descriptor_dim}-d, "
            f"file {spec.download_name}): {differences}{_in_release_names(spec, expected, state)}"
        )
    model.load_state_dict(state, strict=True)


def _in_release_names(spec: PublishedModel, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """The same differences under the release file's own key names, when the family can map them back."""
    from vprlab.pretrained.layouts import describe_differences
    from vprlab.pretrained.registry import resolve_callable

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


def _read_release_state(path: Path, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weights in ``path`` converted to the release layout (conversions are logged)."""
    state, notes = to_release_layout(read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle))
    for note in notes:
        log.info("%s: %s", path, note)
    return state


def _published(architecture: BoQArchitecture) -> BoQArchitecture:
    """A released architecture read off a file keeps the eval size it was published with."""
    for spec in RELEASED_MODELS.values():
        if replace(architecture, eval_image_size=spec.architecture.eval_image_size) == spec.architecture:
            return spec.architecture
    return architecture


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
    elif key in RELEASED_MODELS or key in _ALIASES:
        name = released_model(key).name
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
    """(model with weights, weights file, display name) for a released name or a file path.
    ``allow_unsafe_pickle`` applies to local files only; a download is always read tensors-only."""
    from vprlab.utils.images import as_hw

    size = as_hw(image_size) if image_size is not None else None
    key = str(name_or_path)
    if is_published(key) and published_model(key).name not in RELEASED_MODELS:
        spec = published_model(key)
        model, path = load_published(spec.name, weights, allow_unsafe_pickle=allow_unsafe_pickle)
        if size is not None:
            model.eval_preprocessing = model.eval_preprocessing.resized(size)
        return model, path, display_name(key)
    if key in RELEASED_MODELS or key in _ALIASES:
        spec = released_model(key)
        path = Path(weights).expanduser() if weights is not None else release_file(spec.name)
        architecture = spec.architecture if size is None else replace(spec.architecture, eval_image_size=size)
        model = architecture.build(model_class)
        state = _read_release_state(path, allow_unsafe_pickle and weights is not None)
        load_release_state_dict(model, state, f"weights file {str(path)!r}", f"the released {spec.name} ({architecture.describe()})")
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
        model, _ = load_published(str(record["published_model"]), path, allow_unsafe_pickle=allow_unsafe_pickle)
        log.info("%s: a %s in its released layout (from %s)", path, record["published_model"], sidecar_path(path).name)
        if size is not None:
            model.eval_preprocessing = model.eval_preprocessing.resized(size)
        return model, path, display_name(path)
    state = _read_release_state(path, allow_unsafe_pickle)
    if "aggregator.proj_c.weight" not in state:
        raise ConfigError(
            f"weights file {str(path)!r} is not a BoQ model (no aggregator.proj_c weights) and has no {sidecar_path(path).name} naming the published "
            "model it belongs to. For a file in a published model's layout pass that model: "
            f"load_pretrained(<name>, weights={str(path)!r}) (vprlab compare: --models <name> --weights <name>={path}); "
            "for a fine-tuned checkpoint, export it with `vprlab models export CKPT OUT.pth`, which writes the sidecar"
        )
    architecture = _published(infer_architecture(state, f"weights file {str(path)!r}"))
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


def load_for_evaluation(
    name: str, path: str | Path | None = None, allow_unsafe_pickle: bool = False, protocol: str | None = None
) -> tuple[VPRModel, str, str]:
    """(model, display name, weights hash) for ``evaluate.py pretrained=<name> [pretrained.path=...]``.
    Models of other methods than BoQ carry their evaluation preprocessing (``model.eval_preprocessing``,
    that of ``protocol`` when given), which evaluation uses instead of the backbone's size."""
    from vprlab.utils.weights import file_hash

    model, weights_path, _ = _resolve(name, path, None, VPRModel, allow_unsafe_pickle)
    if protocol not in (None, "", "original"):
        model.eval_preprocessing = eval_preprocessing(_published_name(name), protocol)
    return model.eval(), display_name(name, protocol), file_hash(weights_path)


# ------------------------------------------------------------------------------------ torch.hub

HUB_MODELS: dict[str, dict[int, str]] = {}
for _spec in RELEASED_MODELS.values():
    HUB_MODELS.setdefault(_spec.hub_backbone, {})[_spec.descriptor_dim] = _spec.name


def _hub_backbone_name(architecture: BoQArchitecture) -> str:
    return "dinov2" if architecture.backbone == "vit_base_patch14_dinov2" else architecture.backbone


def hub_model(backbone_name: str = "resnet50", output_dim: int = 16384, pretrained: bool = True, weights: str | Path | None = None) -> HubBoQModel:
    """``get_trained_boq`` of hubconf.py: the released model (or ``weights``, a local file in the
    release layout) in eval mode; ``model(x)`` returns ``(descriptors, attention maps)``.

    ``pretrained=False`` (and no ``weights``) gives the architecture with random weights and
    downloads nothing. Backbone pretraining weights are never downloaded.
    """
    try:
        output_dim = int(output_dim)
    except (TypeError, ValueError):
        raise ConfigError(f"output_dim={output_dim!r} must be an integer such as 16384 or 12288") from None
    if weights is not None:
        path = Path(weights).expanduser()
        state = _read_release_state(path)
        architecture = _published(infer_architecture(state, f"weights={str(path)!r}"))
        recorded = _sidecar_size(path)
        if recorded is not None:
            architecture = replace(architecture, eval_image_size=recorded)
        name, dim = _hub_backbone_name(architecture), architecture.descriptor_dim
        if (name, dim) != (backbone_name, output_dim):
            raise ConfigError(
                f"weights={str(path)!r} holds a {architecture.describe()} model; call "
                f"get_trained_boq(backbone_name={name!r}, output_dim={dim}, weights=...) "
                f"instead of backbone_name={backbone_name!r}, output_dim={output_dim}"
            )
        model = architecture.build(HubBoQModel)
        load_release_state_dict(model, state, f"weights={str(path)!r}", architecture.describe())
        return model.eval()
    if backbone_name not in HUB_MODELS:
        raise ConfigError(f"backbone_name={backbone_name!r}; the released models have {sorted(HUB_MODELS)}")
    if output_dim not in HUB_MODELS[backbone_name]:
        raise ConfigError(f"output_dim={output_dim} for backbone_name={backbone_name!r}; released: {sorted(HUB_MODELS[backbone_name])}")
    name = HUB_MODELS[backbone_name][output_dim]
    if not pretrained:
        return released_model(name).architecture.build(HubBoQModel).eval()
    model, _, _ = _resolve(name, None, None, HubBoQModel)
    return model.eval()  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ export sidecar

SIDECAR_FORMAT = "vprlab-export/1"


def sidecar_path(weights_path: str | Path) -> Path:
    """``model.pth`` -> ``model.vprlab.json``: what serving needs, next to the bare state dict."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.stem + ".vprlab.json")


def write_export_sidecar(
    weights_path: Path, architecture: BoQArchitecture, training_config: dict[str, Any] | None,
    mean: Sequence[float], std: Sequence[float], source: Path,
) -> Path:
    """Write ``<stem>.vprlab.json`` for the exported ``weights_path``: the eval image size (the training
    config's ``backbone.eval_image_size``, else the architecture's), the eval transform, the
    architecture and the full training config. The .pth itself stays a bare state dict."""
    from dataclasses import asdict

    from vprlab.utils.images import as_hw

    size = ((training_config or {}).get("backbone") or {}).get("eval_image_size") or architecture.eval_image_size
    size = list(as_hw(size)) if size is not None else None
    return _write_sidecar(weights_path, {
        "architecture": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(architecture).items()},
        "eval_image_size": size,
        "transform": {"steps": ["to_tensor", "resize", "normalize"], "image_size": size, "interpolation": "bicubic",
                      "antialias": True, "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
    }, training_config, source)


def _write_sidecar(weights_path: Path, fields: dict[str, Any], training_config: dict[str, Any] | None, source: Path) -> Path:
    from vprlab.utils.io import atomic_write_json
    from vprlab.utils.weights import file_hash

    record = {"format": SIDECAR_FORMAT, "weights_file": weights_path.name, "weights_hash": file_hash(weights_path), **fields,
              "training_config": training_config, "exported_from": {"path": str(source), "hash": file_hash(source)}}
    return atomic_write_json(sidecar_path(weights_path), record)


def read_export_sidecar(weights_path: str | Path) -> dict[str, Any] | None:
    """The sidecar of an exported weights file, or None when there is none. A sidecar written for other
    weights (its hash differs) is ignored with a warning: its image size would be a guess."""
    import json

    from vprlab.utils.weights import file_hash

    path = sidecar_path(weights_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); re-export with `vprlab models export` or delete it") from error
    if record.get("format") != SIDECAR_FORMAT:
        raise ConfigError(f"{path}: unknown sidecar format {record.get('format')!r} (expected {SIDECAR_FORMAT!r})")
    if record.get("weights_hash") != file_hash(weights_path):
        log.warning("%s was written for other weights (hash %s, the file has %s); ignoring it",
                    path, record.get("weights_hash"), file_hash(weights_path))
        return None
    return record

def _hub_key(text: Any) -> str:
    return "".join(c for c in str(text).lower() if c.isalnum())


def find_published(method: str, backbone: str | None = None, dim: int | None = None) -> PublishedModel:
    """The published model of ``method`` ("cosplace", "Conv-AP"...), ``backbone`` ("ResNet50", "resnet50",
    "dinov2"...; None: the only one) and descriptor size ``dim`` (None: the only one); a ValueError lists
    what exists."""
    candidates = [s for s in PUBLISHED_MODELS.values() if _hub_key(s.method) == _hub_key(method)]
    if not candidates:
        raise ConfigError(f"method={method!r}; published methods: {sorted({s.method for s in PUBLISHED_MODELS.values()})}")
    method = candidates[0].method
    if backbone is not None:
        key = _hub_key(backbone)
        candidates = [s for s in candidates if _hub_key(s.backbone) == key or _hub_key(s.backbone).startswith(key) or
                      _hub_key(s.name.split("_")[1]) == key]
    if dim is not None:
        candidates = [s for s in candidates if s.descriptor_dim == int(dim)]
    if len(candidates) > 1:  # MegaLoc's legacy file holds the same model: the current one is meant
        candidates = [s for s in candidates if not s.name.endswith("_legacy")]
    if len(candidates) != 1:
        pairs = sorted({(s.backbone, s.descriptor_dim) for s in PUBLISHED_MODELS.values() if _hub_key(s.method) == _hub_key(method)})
        what = "no" if not candidates else "more than one"
        raise ConfigError(f"{what} {method} model with backbone={backbone!r}, dim={dim!r}; released (backbone, dim): {pairs}")
    return candidates[0]


def hub_published(
    method: str, backbone: str | None = None, dim: int | None = None, pretrained: bool = True,
    weights: str | Path | None = None, protocol: str | None = None,
) -> VPRModel:
    """torch.hub ``get_trained_model``: the published model in eval mode (``model(x)`` -> L2-normalised
    descriptors), with its evaluation preprocessing as ``model.eval_preprocessing`` (``.transform()``).
    ``weights``: a local copy of the file (no download); ``pretrained=False``: random weights, nothing downloaded."""
    spec = find_published(method, backbone, dim)
    if not pretrained and weights is None:
        model = spec.build_model()
    else:
        model, _ = load_published(spec.name, weights)
    model.eval_preprocessing = spec.eval_preprocessing(protocol)
    return model.eval()


# ------------------------------------------------------------------------------------ export

def export_release(
    ckpt_path: str | Path, out_path: str | Path, allow_unsafe_pickle: bool = False
) -> tuple[Path, BoQArchitecture]:
    """Write the model weights of ``ckpt_path`` (a vprlab checkpoint, or any file :func:`read_state_dict`
    reads) as a plain state dict in the release layout and order, loadable by
    ``get_trained_boq(weights=out_path)``, :func:`load_pretrained` and the original BoQ code (for the
    released architectures). The result is rebuilt and loaded strictly before it is written."""
    from vprlab.utils.io import atomic_torch_save

    ckpt_path = Path(ckpt_path).expanduser()
    state = _read_release_state(ckpt_path, allow_unsafe_pickle)
    architecture = infer_architecture(state, f"checkpoint {str(ckpt_path)!r}")
    training_config = _training_config(ckpt_path, allow_unsafe_pickle)
    size = ((training_config or {}).get("backbone") or {}).get("eval_image_size")
    if size is not None:
        from vprlab.utils.images import as_hw

        architecture = replace(architecture, eval_image_size=as_hw(size))
    model = architecture.build()
    load_release_state_dict(model, state, f"checkpoint {str(ckpt_path)!r}", architecture.describe())
    # Fresh contiguous tensors in the model's (= the release's) key order, nothing else in the file.
    release = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    out = atomic_torch_save(release, Path(out_path).expanduser())
    write_export_sidecar(out, architecture, training_config, model.backbone.mean, model.backbone.std, ckpt_path)
    return out, architecture


def _training_config(ckpt_path: Path, allow_unsafe_pickle: bool) -> dict[str, Any] | None:
    """The resolved config a vprlab checkpoint stores (None for a bare state dict)."""
    from vprlab.utils.weights import torch_load

    container = torch_load(ckpt_path, allow_unsafe_pickle=allow_unsafe_pickle)
    config = container.get("config") if isinstance(container, dict) else None
    return config if isinstance(config, dict) else None



def checkpoint_published_name(ckpt_path: str | Path, allow_unsafe_pickle: bool = False) -> str | None:
    """The published model a vprlab training checkpoint was fine-tuned from (``pretrained.name`` of its
    stored config), or None."""
    from vprlab.utils.weights import torch_load

    obj = torch_load(Path(ckpt_path).expanduser(), allow_unsafe_pickle=allow_unsafe_pickle)
    config = obj.get("config") if isinstance(obj, dict) else None
    pretrained = (config or {}).get("pretrained") or {}
    return pretrained.get("name") if isinstance(pretrained, dict) else None


def export_published(
    ckpt_path: str | Path, out_path: str | Path, name: str | None = None, allow_unsafe_pickle: bool = False
) -> tuple[Path, PublishedModel]:
    """Write the weights of ``ckpt_path`` (a checkpoint of ``train.py pretrained=<name>``, or a state dict
    with the model's own keys; ``name`` defaults to the checkpoint's ``pretrained.name``) in the released
    file's layout (e.g. ``backbone.N.*`` / ``aggregation.*`` for CosPlace), so the original code and
    ``load_pretrained(name, weights=out_path)`` load it, and the sidecar ``<stem>.vprlab.json`` naming
    the published model (its evaluation preprocessing and the training config), so
    ``load_pretrained(out_path)`` and ``vprlab compare --models out_path`` load it by path too. The
    weights are loaded strictly first."""
    from vprlab.pretrained.registry import resolve_callable
    from vprlab.utils.io import atomic_torch_save

    ckpt_path = Path(ckpt_path).expanduser()
    name = name or checkpoint_published_name(ckpt_path, allow_unsafe_pickle)
    if not name:
        raise ConfigError(f"{str(ckpt_path)!r} was not fine-tuned from a published model (no pretrained.name in its config); pass name=")
    spec = published_model(name)
    if spec.export is None:
        raise ConfigError(f"{spec.name}: writing its released layout is not available for {spec.method} {spec.backbone}")
    model = spec.build_model()
    load_published_state(model, read_state_dict(ckpt_path, allow_unsafe_pickle=allow_unsafe_pickle), spec, f"checkpoint {str(ckpt_path)!r}")
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    release = resolve_callable(spec.export)(state, spec)
    out = atomic_torch_save(release, Path(out_path).expanduser())
    prep = spec.preprocessing
    _write_sidecar(out, {
        "published_model": spec.name, "method": spec.method, "descriptor_dim": spec.descriptor_dim,
        "eval_image_size": None if prep.size is None else list(prep.size),
        "transform": {"preprocessing": prep.describe(), "mean": [float(v) for v in prep.mean], "std": [float(v) for v in prep.std]},
    }, _training_config(ckpt_path, allow_unsafe_pickle), ckpt_path)
    return out, spec
