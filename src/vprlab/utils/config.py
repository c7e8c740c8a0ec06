from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf


def to_plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A resolved plain-dict copy of a config node. Resolve on the node itself: a copy made
    first would lose its parent, and with it interpolations like ``${paths.data_dir}``."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
