"""Key layouts of BoQ weight files: conversion of vprlab, Lightning and OpenVPRLab checkpoints to the
release layout, and the strict load of a file whose architecture was read off its keys
(:func:`vprlab.pretrained.families.boq.infer_architecture`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.keymaps import describe_differences, load_strict
from vprlab.utils.errors import ConfigError

__all__ = ["NON_MODEL_PREFIXES", "WRAPPER_PREFIXES", "describe_differences", "load_release_state_dict", "to_release_layout"]

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


def load_release_state_dict(model: VPRModel, state: Mapping[str, torch.Tensor], source: str, expected: str | None = None) -> None:
    """Load ``state`` (release layout) into ``model`` strictly: same keys, same shapes, or a
    ValueError that names ``source`` and every difference."""
    load_strict(model, state, source, expected or "the model", ". Pass the weights of that model, or load the file "
                "by path (vprlab.load_pretrained('/path/file.pth')) to rebuild the architecture it describes")
