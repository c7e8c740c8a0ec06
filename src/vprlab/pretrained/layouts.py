"""Key layouts of weight files: conversion to the release layout (vprlab, Lightning and
OpenVPRLab checkpoints), strict loading with the differences named, and the architecture a
state dict describes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.registry import BoQArchitecture
from vprlab.utils.errors import ConfigError

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
        raise ConfigError(f"OpenVPRLab ResNet keys: frozen_layers stages {frozen_stages} are not 0..n-1")
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
                raise ConfigError(f"OpenVPRLab ResNet key {key!r}: the stem has weights only in conv1 (0) and bn1 (1)")
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
        raise ConfigError(
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
        raise ConfigError(f"{source} is not a BoQ model: no aggregator.proj_c / aggregator.fc weights (aggregator keys: {_list(prefixes) or 'none'})")
    if "backbone.net.0.weight" in state:
        bottleneck = "backbone.net.4.0.conv3.weight" in state
        layer3_blocks = _block_count(state, "backbone.net.6.")
        backbone = _RESNET_BY_LAYER3.get((bottleneck, layer3_blocks))
        if backbone is None:
            raise ConfigError(f"{source}: a ResNet with {layer3_blocks} blocks in layer3 (bottleneck={bottleneck}) is not a torchvision ResNet18/34/50/101/152")
        crop_last_block = "backbone.net.7.0.conv1.weight" not in state
    elif "backbone.dino.pos_embed" in state:
        width = int(state["backbone.dino.pos_embed"].shape[-1])
        if width not in _DINOV2_BY_WIDTH:
            raise ConfigError(f"{source}: DINOv2 width {width} is none of {sorted(_DINOV2_BY_WIDTH)}")
        backbone, crop_last_block = _DINOV2_BY_WIDTH[width], True
    else:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in state if not k.startswith("aggregator.")})
        raise ConfigError(
            f"cannot tell the backbone of {source}: expected backbone.net.* (ResNet), backbone.dino.* (DINOv2) or "
            f"OpenVPRLab's backbone.frozen_layers/unfrozen_layers.*; found {_list(prefixes)}"
        )
    proj_channels, in_channels = (int(v) for v in state["aggregator.proj_c.weight"].shape[:2])
    num_layers = _block_count(state, "aggregator.boqs.")
    if num_layers == 0 or "aggregator.boqs.0.queries" not in state:
        raise ConfigError(f"{source} is not a BoQ model: no aggregator.boqs.0.queries")
    return BoQArchitecture(
        backbone=backbone,
        in_channels=in_channels,
        proj_channels=proj_channels,
        num_queries=int(state["aggregator.boqs.0.queries"].shape[1]),
        num_layers=num_layers,
        row_dim=int(state["aggregator.fc.weight"].shape[0]),
        crop_last_block=crop_last_block,
    )
