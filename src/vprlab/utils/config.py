from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf


def to_plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A resolved plain-dict copy of a config node. Resolve on the node itself: a copy made
    first would lose its parent, and with it interpolations like ``${paths.data_dir}``."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)


def flatten_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-3}, "extra": {}}`` -> ``{"optimizer.lr": 1e-3, "extra": {}}``: dotted keys
    to the leaves of nested dicts (an empty dict is a leaf; lists stay lists)."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def command_line_overrides() -> list[str] | None:
    """The overrides of the running Hydra job, or None outside Hydra (a config made in Python: no
    command line to read, which callers tell apart from a command line without overrides)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)
