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

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.layouts import (
    infer_architecture,
    load_release_state_dict,
    to_release_layout,
)
from vprlab.pretrained.registry import (
    _ALIASES,
    RELEASED_MODELS,
    BoQArchitecture,
    HubBoQModel,
    released_model,
)
from vprlab.utils.weights import read_state_dict

log = logging.getLogger(__name__)

def release_file(name: str, *, progress: bool = True) -> Path:
    """Path of a released checkpoint in the torch hub cache (``<hub dir>/checkpoints/``, where
    ``torch.hub.load_state_dict_from_url`` keeps it too), downloaded once if it is not there."""
    spec = released_model(name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", spec.url, cached)
    try:
        torch.hub.download_url_to_file(spec.url, str(cached), progress=progress)
    except Exception as err:  # no network, proxy, interrupted download...: all end the same way
        raise RuntimeError(
            f"could not download {spec.url} ({type(err).__name__}: {err}). Without network access, fetch "
            f"{spec.file_name} elsewhere and pass its path: weights=/path/{spec.file_name} (get_trained_boq, "
            f"load_pretrained) or pretrained.path=/path/{spec.file_name} (evaluate.py), or copy it to {cached}"
        ) from err
    return cached


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


def _resolve(
    name_or_path: str | Path, weights: str | Path | None, image_size: Any, model_class: type[VPRModel],
    allow_unsafe_pickle: bool = False,
) -> tuple[VPRModel, Path, str]:
    """(model with weights, weights file, display name) for a released name or a file path.
    ``allow_unsafe_pickle`` applies to local files only; a download is always read tensors-only."""
    from vprlab.utils.images import as_hw

    size = as_hw(image_size) if image_size is not None else None
    key = str(name_or_path)
    if key in RELEASED_MODELS or key in _ALIASES:
        spec = released_model(key)
        path = Path(weights).expanduser() if weights is not None else release_file(spec.name)
        architecture = spec.architecture if size is None else replace(spec.architecture, eval_image_size=size)
        model = architecture.build(model_class)
        state = _read_release_state(path, allow_unsafe_pickle and weights is not None)
        load_release_state_dict(model, state, f"weights file {str(path)!r}", f"the released {spec.name} ({architecture.describe()})")
        return model, path, spec.name
    if weights is not None:  # weights= is a local copy of a released model's file: name that model
        raise ValueError(f"unknown released model {key!r} (given weights={str(weights)!r}); choose one of {sorted(RELEASED_MODELS)}")
    path = Path(key).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{key!r} is neither a released model ({', '.join(sorted(RELEASED_MODELS))}) nor an existing weights file"
        )
    state = _read_release_state(path, allow_unsafe_pickle)
    architecture = _published(infer_architecture(state, f"weights file {str(path)!r}"))
    if size is not None:
        architecture = replace(architecture, eval_image_size=size)
    model = architecture.build(model_class)
    load_release_state_dict(model, state, f"weights file {str(path)!r}", architecture.describe())
    return model, path, path.stem


def load_pretrained(
    name_or_path: str | Path,
    *,
    weights: str | Path | None = None,
    image_size: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    allow_unsafe_pickle: bool = False,
):
    """A released or exported BoQ model in eval mode, and its eval transform (PIL image -> tensor).

    ``name_or_path``: ``"boq_resnet50_16384"`` / ``"boq_dinov2_12288"`` (also ``"resnet50_16384"``,
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
    transform = eval_transform(model.backbone.eval_image_size, mean=model.backbone.mean, std=model.backbone.std)
    return model, transform


def load_for_evaluation(
    name: str, path: str | Path | None = None, allow_unsafe_pickle: bool = False
) -> tuple[VPRModel, str, str]:
    """(model, display name, weights hash) for ``evaluate.py pretrained=<name> [pretrained.path=...]``."""
    from vprlab.utils.weights import file_hash

    model, weights_path, display_name = _resolve(name, path, None, VPRModel, allow_unsafe_pickle)
    return model.eval(), display_name, file_hash(weights_path)


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
        raise ValueError(f"output_dim={output_dim!r} must be an integer such as 16384 or 12288") from None
    if weights is not None:
        path = Path(weights).expanduser()
        state = _read_release_state(path)
        architecture = _published(infer_architecture(state, f"weights={str(path)!r}"))
        name, dim = _hub_backbone_name(architecture), architecture.descriptor_dim
        if (name, dim) != (backbone_name, output_dim):
            raise ValueError(
                f"weights={str(path)!r} holds a {architecture.describe()} model; call "
                f"get_trained_boq(backbone_name={name!r}, output_dim={dim}, weights=...) "
                f"instead of backbone_name={backbone_name!r}, output_dim={output_dim}"
            )
        model = architecture.build(HubBoQModel)
        load_release_state_dict(model, state, f"weights={str(path)!r}", architecture.describe())
        return model.eval()
    if backbone_name not in HUB_MODELS:
        raise ValueError(f"backbone_name={backbone_name!r}; the released models have {sorted(HUB_MODELS)}")
    if output_dim not in HUB_MODELS[backbone_name]:
        raise ValueError(f"output_dim={output_dim} for backbone_name={backbone_name!r}; released: {sorted(HUB_MODELS[backbone_name])}")
    name = HUB_MODELS[backbone_name][output_dim]
    if not pretrained:
        return released_model(name).architecture.build(HubBoQModel).eval()
    model, _, _ = _resolve(name, None, None, HubBoQModel)
    return model.eval()  # type: ignore[return-value]


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
    model = architecture.build()
    load_release_state_dict(model, state, f"checkpoint {str(ckpt_path)!r}", architecture.describe())
    # Fresh contiguous tensors in the model's (= the release's) key order, nothing else in the file.
    release = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return atomic_torch_save(release, Path(out_path).expanduser()), architecture
