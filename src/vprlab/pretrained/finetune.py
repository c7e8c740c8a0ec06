"""Fine-tuning a published model: ``python train.py pretrained=<name> [pretrained.path=FILE] ...``.

The published architecture is described by zoo configs (the family's ``configs_<x>(entry)``: the
same ``_target_`` classes every other run uses), which replace the run's ``backbone`` / ``aggregator``
groups before anything is built; so the run folder's ``config.yaml`` and every checkpoint describe
the model, and ``evaluate.py ckpt_path=...`` rebuilds it like any other run. The released weights
are loaded strictly into the freshly built model before the first step (not on resume: a resumed
run continues from its own checkpoint).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.download import release_file
from vprlab.pretrained.load import load_published_state, read_published_state
from vprlab.pretrained.registry import resolve_callable
from vprlab.utils.config import command_line_overrides
from vprlab.utils.errors import ConfigError

log = logging.getLogger(__name__)


def published_configs(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(backbone config, aggregator config) that build the published model ``name`` from the zoo."""
    spec = published_model(name)
    if spec.configs is None:
        raise ConfigError(
            f"fine-tuning {spec.name} is not available: its family ({spec.method} {spec.backbone}) has no zoo "
            f"configuration yet; evaluate it with `python evaluate.py pretrained={spec.name}`"
        )
    return resolve_callable(spec.configs)(spec)


def apply_published_architecture(cfg: DictConfig) -> DictConfig:
    """With ``cfg.pretrained.name`` set: replace ``cfg.backbone`` / ``cfg.aggregator`` by the published
    architecture (in place; returns ``cfg``). Without it: ``cfg`` unchanged."""
    pretrained = cfg.get("pretrained")
    if not pretrained or not pretrained.get("name"):
        return cfg
    overrides = command_line_overrides() or []  # None outside Hydra: nothing given on a command line
    groups = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in ("backbone", "aggregator")]
    if groups:
        raise ConfigError(
            f"pretrained={pretrained.name} sets the backbone and aggregator (the published architecture), so "
            f"{', '.join(groups)} cannot choose another; drop it, or change one setting with backbone.KEY=VALUE / "
            "aggregator.KEY=VALUE"
        )
    # backbone.KEY=VALUE / aggregator.KEY=VALUE from the command line apply on top of the published
    # architecture (e.g. backbone.num_trainable_blocks=3); their values are the ones already composed.
    kept = {}
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith(("backbone.", "aggregator.")) and not override.startswith("~"):
            kept[key] = OmegaConf.select(cfg, key)
    backbone, aggregator = published_configs(str(pretrained.name))
    with open_dict(cfg):
        cfg.backbone = OmegaConf.create(backbone)
        cfg.aggregator = OmegaConf.create(aggregator)
        for key, value in kept.items():
            OmegaConf.update(cfg, key, value, force_add=True)
            log.info("pretrained=%s: kept the command line's %s=%s", pretrained.name, key, value)
    log.info("pretrained=%s: backbone and aggregator are the published architecture (%s, %s)",
             pretrained.name, backbone["_target_"].rsplit(".", 1)[-1], aggregator["_target_"].rsplit(".", 1)[-1])
    return cfg


def load_published_weights(model: VPRModel, name: str, path: str | Path | None = None, allow_unsafe_pickle: bool = False) -> Path:
    """Load the released weights of ``name`` (``path``: a local copy; else the torch hub cache,
    downloaded once) strictly into ``model`` (built by :func:`apply_published_architecture`'s configs),
    and attach the method's evaluation preprocessing; returns the file read."""
    spec = published_model(name)
    file = Path(path).expanduser() if path else release_file(spec.name)
    state = read_published_state(spec.name, file, allow_unsafe_pickle=allow_unsafe_pickle and path is not None)
    with torch.no_grad():
        load_published_state(model, state, spec, f"weights file {str(file)!r}")
    model.eval_preprocessing = spec.preprocessing
    log.info("started from the released %s weights (%s)", spec.name, file)
    return file
