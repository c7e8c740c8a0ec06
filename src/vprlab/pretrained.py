"""Released BoQ models: load them, serve them through torch.hub, and export ours in their layout.

The two models published with the BoQ paper (v1.0 release of github.com/amaralibey/Bag-of-Queries)
are plain state dicts whose keys are exactly those of :class:`~vprlab.models.VPRModel` built with
``ResNetBackbone("resnet50")`` / ``DinoV2Backbone("vit_base_patch14_dinov2")`` and ``BoQ`` (see
``reference/boq_released_checkpoints``), so they load strictly, key for key. Models are always built
with ``pretrained=False``: a checkpoint overwrites every backbone weight, so the backbone's own
pretraining weights are never downloaded.

Also accepted, through explicit conversions (:func:`to_release_layout`): a vprlab training
checkpoint (``{"model": ...}``), a Lightning checkpoint (``{"state_dict": ...}``, e.g. from
OpenVPRLab) and OpenVPRLab's ResNet layout (``backbone.frozen_layers.*`` /
``backbone.unfrozen_layers.*``). Anything else fails with the list of keys and shapes that differ.

Entry points: :func:`load_pretrained` (Python), :func:`hub_model` (``hubconf.get_trained_boq``),
:func:`load_for_evaluation` (``evaluate.py pretrained=...``), :func:`export_release` and the CLI
``python -m vprlab.pretrained export CKPT OUT`` / ``download NAME``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vprlab.models.aggregators.boq import BoQ
from vprlab.models.backbones.dinov2 import DINOV2_MODELS, DinoV2Backbone
from vprlab.models.backbones.resnet import ResNetBackbone
from vprlab.models.vpr_model import VPRModel

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/{file_name}"


# ------------------------------------------------------------------------------------ architecture


@dataclass(frozen=True)
class BoQArchitecture:
    """Everything needed to rebuild a backbone + BoQ model whose weights come from a file."""

    backbone: str  # a torchvision ResNet name or a timm DINOv2 name (DINOV2_MODELS)
    in_channels: int
    proj_channels: int
    num_queries: int = 64
    num_layers: int = 2
    row_dim: int = 32
    crop_last_block: bool = True  # ResNets only
    eval_image_size: tuple[int, int] | None = None  # None: the backbone's default (384 / 322)

    @property
    def is_dinov2(self) -> bool:
        return self.backbone in DINOV2_MODELS

    @property
    def descriptor_dim(self) -> int:
        return self.proj_channels * self.row_dim

    def describe(self) -> str:
        crop = "" if self.is_dinov2 or self.crop_last_block else ", layer4 kept"
        return (
            f"{self.backbone}{crop} + BoQ(in {self.in_channels}, proj {self.proj_channels}, "
            f"{self.num_queries} queries, {self.num_layers} layers, row_dim {self.row_dim}) -> {self.descriptor_dim}-d"
        )

    def build(self, model_class: type[VPRModel] = VPRModel) -> VPRModel:
        """The model with random weights; never downloads anything."""
        sizes = {} if self.eval_image_size is None else {"eval_image_size": self.eval_image_size}
        if self.is_dinov2:
            backbone = DinoV2Backbone(self.backbone, pretrained=False, num_trainable_blocks=2, **sizes)
        else:
            backbone = ResNetBackbone(
                self.backbone, pretrained=False, crop_last_block=self.crop_last_block, num_trainable_blocks=2, **sizes
            )
        aggregator = BoQ(backbone.out_channels, self.proj_channels, self.num_queries, self.num_layers, self.row_dim)
        return model_class(backbone, aggregator)


@dataclass(frozen=True)
class ReleasedModel:
    """One published checkpoint: where it lives, what it is, and which paper rows it reproduces."""

    name: str  # our name, also the conf/pretrained option
    hub_backbone: str  # backbone_name in get_trained_boq
    file_name: str
    paper_model: str  # the model column of the paper results
    architecture: BoQArchitecture

    @property
    def url(self) -> str:
        return RELEASE_URL.format(file_name=self.file_name)

    @property
    def descriptor_dim(self) -> int:
        return self.architecture.descriptor_dim


RELEASED_MODELS: dict[str, ReleasedModel] = {
    model.name: model
    for model in (
        ReleasedModel(
            "boq_resnet50_16384", "resnet50", "resnet50_16384.pth", "boq_resnet50",
            BoQArchitecture("resnet50", in_channels=1024, proj_channels=512, eval_image_size=(384, 384)),
        ),
        ReleasedModel(
            "boq_dinov2_12288", "dinov2", "dinov2_12288.pth", "boq_dinov2",
            BoQArchitecture("vit_base_patch14_dinov2", in_channels=768, proj_channels=384, eval_image_size=(322, 322)),
        ),
    )
}
# Other spellings people use for the same files: the release file stems and the paper's model names.
_ALIASES = {alias: model.name for model in RELEASED_MODELS.values() for alias in (Path(model.file_name).stem, model.paper_model)}


def released_model(name: str) -> ReleasedModel:
    """The released model called ``name`` (``boq_resnet50_16384``, ``resnet50_16384``, ``boq_resnet50``...)."""
    key = _ALIASES.get(name, name)
    if key not in RELEASED_MODELS:
        raise ValueError(f"unknown released model {name!r}; choose one of {sorted(RELEASED_MODELS)}")
    return RELEASED_MODELS[key]


class HubBoQModel(VPRModel):
    """What ``get_trained_boq`` returns: ``model(x)`` gives ``(descriptors, attention maps)`` like the
    original hub model; state-dict keys are the release's."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:  # type: ignore[override]
        return self.forward_with_attention(x)


# ------------------------------------------------------------------------------------ reading files


def _torch_load(path: Path, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise
        # vprlab / Lightning training checkpoints also hold configs and RNG states, which the
        # weights-only unpickler refuses. Local files are the user's own: unpickle them fully.
        log.info("%s holds more than tensors (%s); loading it as a full training checkpoint", path, str(err).splitlines()[0])
        return torch.load(path, map_location="cpu", weights_only=False)


def read_state_dict(path: str | Path, *, trusted: bool = True) -> dict[str, torch.Tensor]:
    """The model weights in ``path``: a bare state dict, a vprlab checkpoint (``model``) or a
    Lightning checkpoint (``state_dict``). ``trusted=False`` refuses anything but tensors (downloads)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; pass the path of a .pth / .ckpt file")
    try:
        obj = _torch_load(path, trusted)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file means the same thing to the user
        raise ValueError(f"weights file {str(path)!r} could not be read ({type(err).__name__}: {err}); is it a torch file?") from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):  # Lightning, vprlab checkpoint
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"weights file {str(path)!r} holds neither a state dict (name -> tensor) nor a checkpoint with one under "
        f"'state_dict' or 'model' (found {keys}); export it with `python -m vprlab.pretrained export`"
    )


# ------------------------------------------------------------------------------------ layouts

# Children of a training module that are not part of the model (OpenVPRLab keeps its loss there).
NON_MODEL_PREFIXES = ("loss_function.", "loss_fn.", "miner.")
# Wrappers around the whole model: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_OPENVPRLAB_RESNET = re.compile(r"^backbone\.(frozen_layers|unfrozen_layers)\.(\d+)\.(.+)$")
# Index in ResNetBackbone.net of each OpenVPRLab stage after the stem (net = conv1, bn1, relu, maxpool, layer1...).
_FIRST_LAYER_INDEX = 4


def _openvprlab_resnet_to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenVPRLab's ResNet splits ``[stem, layer1, layer2, layer3(, layer4)]`` (stem = Sequential(conv1,
    bn1, relu, maxpool)) into ``frozen_layers`` and ``unfrozen_layers`` at ``num_unfrozen_blocks``:
    ``frozen_layers.i`` is stage i and ``unfrozen_layers.j`` is stage ``len(frozen_layers) + j``.
    The release (and ResNetBackbone) flattens the same modules into ``net.N``."""
    frozen_stages = sorted({int(m.group(2)) for k in state if (m := _OPENVPRLAB_RESNET.match(k)) and m.group(1) == "frozen_layers"})
    if frozen_stages != list(range(len(frozen_stages))):
        raise ValueError(f"OpenVPRLab ResNet keys: frozen_layers stages {frozen_stages} are not 0..n-1")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _OPENVPRLAB_RESNET.match(key)
        if match is None:
            out[key] = value
            continue
        part, index, rest = match.group(1), int(match.group(2)), match.group(3)
        stage = index if part == "frozen_layers" else len(frozen_stages) + index
        if stage == 0:  # the stem: 0 = conv1, 1 = bn1 (relu and maxpool have no weights)
            sub, _, rest = rest.partition(".")
            if sub not in ("0", "1"):
                raise ValueError(f"OpenVPRLab ResNet key {key!r}: the stem has weights only in conv1 (0) and bn1 (1)")
            out[f"backbone.net.{sub}.{rest}"] = value
        else:
            out[f"backbone.net.{_FIRST_LAYER_INDEX + stage - 1}.{rest}"] = value
    return out


def to_release_layout(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert a model state dict to the release layout; returns it and the conversions applied.

    Conversions, each explicit: drop a ``module.`` / ``_orig_mod.`` prefix shared by every key; drop
    the weights of training-only children (``loss_function.*``...); map OpenVPRLab ResNet keys to
    ``backbone.net.N``. The release layout itself passes through unchanged.
    """
    state = dict(state)
    notes: list[str] = []
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            notes.append(f"removed the {prefix!r} prefix")
    dropped = sorted(k for k in state if k.startswith(NON_MODEL_PREFIXES))
    if dropped:
        state = {k: v for k, v in state.items() if k not in dropped}
        notes.append(f"ignored {len(dropped)} training-only entries ({dropped[0]}...)")
    if any(_OPENVPRLAB_RESNET.match(k) for k in state):
        state = _openvprlab_resnet_to_release(state)
        notes.append("mapped OpenVPRLab ResNet keys (backbone.frozen_layers / unfrozen_layers) to backbone.net.N")
    return state, notes


def _list(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def describe_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    """Missing keys, unexpected keys and shape mismatches between two key -> tensor/shape mappings
    (empty string when they agree)."""
    def shape(v: Any) -> tuple[int, ...]:
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {shape(found[k])} (expected {shape(expected[k])})" for k in expected if k in found and shape(found[k]) != shape(expected[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_list(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_list(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_list(shapes, 5)}")
    return "; ".join(parts)


def load_release_state_dict(model: VPRModel, state: Mapping[str, torch.Tensor], source: str, expected: str | None = None) -> None:
    """Load ``state`` (release layout) into ``model`` strictly: same keys, same shapes, or a
    ValueError that names ``source`` and every difference."""
    differences = describe_differences(model.state_dict(), state)
    if differences:
        what = expected or "the model"
        raise ValueError(
            f"{source} does not match {what}: {differences}. Pass the weights of that model, or load the file "
            "by path (vprlab.load_pretrained('/path/file.pth')) to rebuild the architecture it describes"
        )
    model.load_state_dict(state, strict=True)


def _block_count(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


# (bottleneck blocks?, blocks in layer3) -> torchvision model
_RESNET_BY_LAYER3 = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101", (True, 36): "resnet152"}
_DINOV2_BY_WIDTH = {384: "vit_small_patch14_dinov2", 768: "vit_base_patch14_dinov2", 1024: "vit_large_patch14_dinov2", 1536: "vit_giant_patch14_dinov2"}


def infer_architecture(state: Mapping[str, torch.Tensor], source: str = "the state dict") -> BoQArchitecture:
    """Read the backbone and BoQ sizes off a release-layout state dict (see :func:`to_release_layout`)."""
    if "aggregator.proj_c.weight" not in state or "aggregator.fc.weight" not in state:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in state if k.startswith("aggregator.")})
        raise ValueError(f"{source} is not a BoQ model: no aggregator.proj_c / aggregator.fc weights (aggregator keys: {_list(prefixes) or 'none'})")
    if "backbone.net.0.weight" in state:
        bottleneck = "backbone.net.4.0.conv3.weight" in state
        layer3_blocks = _block_count(state, "backbone.net.6.")
        backbone = _RESNET_BY_LAYER3.get((bottleneck, layer3_blocks))
        if backbone is None:
            raise ValueError(f"{source}: a ResNet with {layer3_blocks} blocks in layer3 (bottleneck={bottleneck}) is not a torchvision ResNet18/34/50/101/152")
        crop_last_block = "backbone.net.7.0.conv1.weight" not in state
    elif "backbone.dino.pos_embed" in state:
        width = int(state["backbone.dino.pos_embed"].shape[-1])
        if width not in _DINOV2_BY_WIDTH:
            raise ValueError(f"{source}: DINOv2 width {width} is none of {sorted(_DINOV2_BY_WIDTH)}")
        backbone, crop_last_block = _DINOV2_BY_WIDTH[width], True
    else:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in state if not k.startswith("aggregator.")})
        raise ValueError(
            f"cannot tell the backbone of {source}: expected backbone.net.* (ResNet), backbone.dino.* (DINOv2) or "
            f"OpenVPRLab's backbone.frozen_layers/unfrozen_layers.*; found {_list(prefixes)}"
        )
    proj_channels, in_channels = (int(v) for v in state["aggregator.proj_c.weight"].shape[:2])
    num_layers = _block_count(state, "aggregator.boqs.")
    if num_layers == 0 or "aggregator.boqs.0.queries" not in state:
        raise ValueError(f"{source} is not a BoQ model: no aggregator.boqs.0.queries")
    return BoQArchitecture(
        backbone=backbone,
        in_channels=in_channels,
        proj_channels=proj_channels,
        num_queries=int(state["aggregator.boqs.0.queries"].shape[1]),
        num_layers=num_layers,
        row_dim=int(state["aggregator.fc.weight"].shape[0]),
        crop_last_block=crop_last_block,
    )


# ------------------------------------------------------------------------------------ release files


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


def _read_release_state(path: Path, trusted: bool = True) -> dict[str, torch.Tensor]:
    """The weights in ``path`` converted to the release layout (conversions are logged)."""
    state, notes = to_release_layout(read_state_dict(path, trusted=trusted))
    for note in notes:
        log.info("%s: %s", path, note)
    return state


def _published(architecture: BoQArchitecture) -> BoQArchitecture:
    """A released architecture read off a file keeps the eval size it was published with."""
    for spec in RELEASED_MODELS.values():
        if replace(architecture, eval_image_size=spec.architecture.eval_image_size) == spec.architecture:
            return spec.architecture
    return architecture


def _resolve(name_or_path: str | Path, weights: str | Path | None, image_size: Any, model_class: type[VPRModel]) -> tuple[VPRModel, Path, str]:
    """(model with weights, weights file, display name) for a released name or a file path."""
    from vprlab.data.transforms import as_hw

    size = as_hw(image_size) if image_size is not None else None
    key = str(name_or_path)
    if key in RELEASED_MODELS or key in _ALIASES:
        spec = released_model(key)
        path = Path(weights).expanduser() if weights is not None else release_file(spec.name)
        architecture = spec.architecture if size is None else replace(spec.architecture, eval_image_size=size)
        model = architecture.build(model_class)
        state = _read_release_state(path, trusted=weights is not None)  # downloads: tensors only
        load_release_state_dict(model, state, f"weights file {str(path)!r}", f"the released {spec.name} ({architecture.describe()})")
        return model, path, spec.name
    if weights is not None:  # weights= is a local copy of a released model's file: name that model
        raise ValueError(f"unknown released model {key!r} (given weights={str(weights)!r}); choose one of {sorted(RELEASED_MODELS)}")
    path = Path(key).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{key!r} is neither a released model ({', '.join(sorted(RELEASED_MODELS))}) nor an existing weights file"
        )
    state = _read_release_state(path)
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
):
    """A released or exported BoQ model in eval mode, and its eval transform (PIL image -> tensor).

    ``name_or_path``: ``"boq_resnet50_16384"`` / ``"boq_dinov2_12288"`` (also ``"resnet50_16384"``,
    ``"dinov2_12288"``), downloaded once into the torch hub cache unless ``weights`` gives a local copy;
    or the path of a state dict in the release layout (e.g. written by :func:`export_release`), whose
    architecture is read off its keys and shapes. The transform resizes to the published size
    (ResNet50: 384x384, DINOv2: 322x322; ``image_size`` overrides it) with bicubic antialiased
    interpolation and normalises with the ImageNet statistics.

    Example::

        model, transform = load_pretrained("boq_dinov2_12288")
        descriptor = model(transform(pil_image).unsqueeze(0))  # [1, 12288], L2-normalised
    """
    from vprlab.data.transforms import eval_transform

    model, _, _ = _resolve(name_or_path, weights, image_size, VPRModel)
    model.eval()
    if device is not None:
        model.to(device)
    transform = eval_transform(model.backbone.eval_image_size, mean=model.backbone.mean, std=model.backbone.std)
    return model, transform


def load_for_evaluation(name: str, path: str | Path | None = None) -> tuple[VPRModel, str, str]:
    """(model, display name, weights hash) for ``evaluate.py pretrained=<name> [pretrained.path=...]``."""
    from vprlab.engine.checkpoint import file_hash

    model, weights_path, display_name = _resolve(name, path, None, VPRModel)
    return model.eval(), display_name, file_hash(weights_path)


# ------------------------------------------------------------------------------------ torch.hub

# backbone_name -> {output_dim: released model}, as in the original get_trained_boq.
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


def export_release(ckpt_path: str | Path, out_path: str | Path) -> tuple[Path, BoQArchitecture]:
    """Write the model weights of ``ckpt_path`` (a vprlab checkpoint, or any file :func:`read_state_dict`
    reads) as a plain state dict in the release layout and order, loadable by
    ``get_trained_boq(weights=out_path)``, :func:`load_pretrained` and the original BoQ code (for the
    released architectures). The result is rebuilt and loaded strictly before it is written."""
    from vprlab.utils.io import atomic_torch_save

    ckpt_path = Path(ckpt_path).expanduser()
    state = _read_release_state(ckpt_path)
    architecture = infer_architecture(state, f"checkpoint {str(ckpt_path)!r}")
    model = architecture.build()
    load_release_state_dict(model, state, f"checkpoint {str(ckpt_path)!r}", architecture.describe())
    # Fresh contiguous tensors in the model's (= the release's) key order, nothing else in the file.
    release = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return atomic_torch_save(release, Path(out_path).expanduser()), architecture


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vprlab.pretrained", description="Released BoQ checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a trained BoQ checkpoint in the release layout")
    export.add_argument("ckpt", help="a vprlab checkpoint (.ckpt) or a state dict file")
    export.add_argument("out", help="the .pth file to write")
    download = commands.add_parser("download", help="fetch a released checkpoint into the torch hub cache")
    download.add_argument("name", choices=sorted(RELEASED_MODELS))
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            out, architecture = export_release(args.ckpt, args.out)
            print(f"wrote {out}: {architecture.describe()}")
            print(f"load it with vprlab.load_pretrained({str(out)!r}) or torch.hub.load(<vprlab repo>, 'get_trained_boq', "
                  f"backbone_name={_hub_backbone_name(architecture)!r}, output_dim={architecture.descriptor_dim}, weights={str(out)!r})")
        else:
            print(release_file(args.name))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
