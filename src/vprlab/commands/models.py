"""The one model loader for evaluation (evaluate.py, ``vprlab compare``): a published model (any
`vprlab models list` name, its file downloaded once or given), a vprlab checkpoint (rebuilt from the
config stored in it), a weights file in a release layout, or a state dict for the configured
architecture (or that architecture untrained). It lives in commands/ because it needs both the
checkpoint format (engine) and the published models (pretrained)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vprlab.engine.checkpoint import load_checkpoint
from vprlab.models.vpr_model import build_model
from vprlab.pretrained import is_published, load_pretrained, published_model, release_file
from vprlab.pretrained.load import display_name
from vprlab.utils.errors import ConfigError
from vprlab.utils.weights import file_hash, read_state_dict, state_dict_hash

log = logging.getLogger(__name__)

KINDS = ("released", "checkpoint", "weights file", "configured")


@dataclass
class LoadedModel:
    """A model ready to evaluate: what results and tables call it, the hash that keys its cache entries
    and results rows, the key of its rows in the published-results CSV, and what it was loaded from."""

    model: torch.nn.Module
    name: str
    weights_hash: str
    published_key: str | None
    kind: str  # one of KINDS


def configured_name(architecture: Any, has_weights: bool) -> str:
    """The name of a model built from the backbone / aggregator groups: ``<backbone>-<Aggregator>``,
    with ``-untrained`` when no weights file is loaded into it."""
    name = f"{architecture.backbone.get('model_name', 'backbone')}-{str(architecture.aggregator._target_).rsplit('.', 1)[-1]}"
    return name if has_weights else name + "-untrained"


def load_model(
    source: str | Path | None,
    weights: str | Path | None = None,
    *,
    protocol: str | None = None,
    allow_unsafe_pickle: bool = False,
    architecture: DictConfig | None = None,
    kind: str | None = None,
) -> LoadedModel:
    """The model to evaluate, loaded from ``source``.

    - a published name: its released weights (``weights``: a local copy of its file; without it the file
      is downloaded once), with its method's evaluation preprocessing (``protocol``'s when given);
    - a vprlab checkpoint (``kind="checkpoint"``, or a ``.ckpt`` path): rebuilt from its stored config;
    - with ``architecture`` (a config holding ``backbone`` and ``aggregator`` groups): that architecture,
      with the state dict in the file ``source`` (strict, shapes checked) or, when ``source`` is None,
      untrained (with a warning);
    - another file: a weights file in a release layout, its architecture read off its keys.
    Files are read tensors-only unless ``allow_unsafe_pickle``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind={kind!r}; use one of {KINDS}")
    if architecture is not None:
        return _load_configured(architecture, source, allow_unsafe_pickle)
    if source is None:
        raise ValueError("load_model: no source; give a published name or a file (or an architecture)")
    key = str(source)
    if kind == "checkpoint" or (kind is None and not is_published(key) and Path(key).suffix == ".ckpt"):
        return _load_checkpoint(key, allow_unsafe_pickle)
    model, _ = load_pretrained(key, weights=weights, allow_unsafe_pickle=allow_unsafe_pickle, protocol=protocol)
    if is_published(key):
        path = Path(weights).expanduser() if weights is not None else release_file(key)
        return LoadedModel(model.eval(), display_name(key, protocol), file_hash(path), published_model(key).name, "released")
    return LoadedModel(model.eval(), display_name(key, protocol), file_hash(Path(key).expanduser()), None, "weights file")


def _load_checkpoint(path: str, allow_unsafe_pickle: bool) -> LoadedModel:
    state = load_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    train_cfg = OmegaConf.create(state["config"])
    # The checkpoint holds every weight: never download pretrained backbone weights.
    train_cfg.backbone.pretrained = False
    model = build_model(train_cfg.backbone, train_cfg.aggregator)
    model.load_state_dict(state["model"])
    if (train_cfg.get("pretrained") or {}).get("name"):  # fine-tuned from a published model: its preprocessing
        model.eval_preprocessing = published_model(train_cfg.pretrained.name).preprocessing
    name = f"{Path(path).parent.parent.name}/{Path(path).stem}"
    return LoadedModel(model, name, file_hash(path), None, "checkpoint")


def _load_configured(cfg: DictConfig, weights_path: str | Path | None, allow_unsafe_pickle: bool) -> LoadedModel:
    backbone_cfg = OmegaConf.create(OmegaConf.to_container(cfg.backbone, resolve=True))
    if weights_path:
        backbone_cfg.pretrained = False
    model = build_model(backbone_cfg, cfg.aggregator)
    name = configured_name(cfg, bool(weights_path))
    if not weights_path:
        log.warning("no ckpt_path or weights_path given: evaluating an untrained model")
        return LoadedModel(model, name, state_dict_hash(model.state_dict()), None, "configured")
    weights = read_state_dict(weights_path, allow_unsafe_pickle=allow_unsafe_pickle)
    own = model.state_dict()
    reshaped = [f"{k} {list(v.shape)} (model {list(own[k].shape)})" for k, v in weights.items()
                if k in own and v.shape != own[k].shape]
    if reshaped:  # torch would dump every mismatch; name a few and say what to do
        raise ConfigError(
            f"weights '{weights_path}' do not fit the configured model: {len(reshaped)} tensors have other "
            f"shapes, e.g. {'; '.join(reshaped[:3])}; set backbone=/aggregator= and their sizes to those of "
            "the model the file was trained with (or pass that run's checkpoint as ckpt_path=)"
        )
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"weights '{weights_path}' do not match the configured model: "
            f"missing keys {list(missing)[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {list(unexpected)[:8]}{'...' if len(unexpected) > 8 else ''}; "
            "check backbone=/aggregator= and their sizes"
        )
    return LoadedModel(model, name, file_hash(weights_path), None, "configured")
