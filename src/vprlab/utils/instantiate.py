"""The one place where configs become objects."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate as _hydra_instantiate
from omegaconf import DictConfig, OmegaConf


def build(cfg: DictConfig | dict | None, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (a node with ``_target_``), passing values that depend on
    other components as keyword arguments (e.g. ``in_channels=backbone.out_channels``)."""
    if cfg is None:
        raise ValueError("cannot build a component from an empty config (got None)")
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    if "_target_" not in cfg:
        raise ValueError(f"config has no _target_, so it cannot be built: {OmegaConf.to_yaml(cfg)}")
    return _hydra_instantiate(cfg, _convert_="all", **kwargs)
