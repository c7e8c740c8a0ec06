"""Does a composed config fit the classes it names?

An experiment file is written for one backbone and one aggregator; swapping one of them
(``experiment=quickstart aggregator=gem``) keeps every key the experiment sets. A key the new
class does not take would stop ``build_model`` with ``__init__() got an unexpected keyword
argument``, after the data and the other components were set up. :func:`check_component_keys`
compares the ``backbone`` and ``aggregator`` config keys with the constructor of their
``_target_`` (``inspect.signature``; importing the class builds nothing) and names who set the
key that does not fit: the experiment, the command line or the preset itself.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from vprlab.models.aggregators import registry
from vprlab.utils.errors import ConfigError

# The groups whose config node is the keyword arguments of one class.
COMPONENT_GROUPS = ("backbone", "aggregator")
# Hydra's instantiate keys: not constructor arguments.
_INSTANTIATE_KEYS = frozenset({"_target_", "_recursive_", "_convert_", "_partial_", "_args_"})
# Arguments the code passes when it builds the component (vprlab.models.vpr_model.build_model).
PASSED_BY_CODE = {"aggregator": frozenset({"in_channels"})}


def target_class(group: str, target: str) -> Any:
    """The class (or factory) a ``_target_`` names, imported but not called."""
    module_name, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"{group}._target_={target!r} cannot be imported: {error}") from None


def constructor_parameters(cls: Any) -> tuple[set[str] | None, set[str]]:
    """(names the constructor takes, or None when it takes ``**kwargs``; names it requires)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return accepted, required


def _hydra_node(cfg: Any) -> Any:
    """The Hydra node of this run: in ``cfg`` (compose with return_hydra_config) or of the running app."""
    node = cfg.get("hydra") if isinstance(cfg, (DictConfig, Mapping)) else None
    if node is not None:
        return node
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    return HydraConfig.get() if HydraConfig.initialized() else None


def _select(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    try:
        value = OmegaConf.select(node, key, default=default) if isinstance(node, DictConfig) else default
    except Exception:  # an interpolation that cannot resolve outside a run
        return default
    return default if value is None else value


def _experiment_sets(hydra: Any, experiment: str, dotted: str) -> bool | None:
    """Whether conf/experiment/<experiment>.yaml sets ``dotted`` itself (None: file not found)."""
    for source in _select(hydra, "runtime.config_sources", []) or []:
        if str(source.get("schema", "")) != "file" or not source.get("path"):
            continue
        path = Path(str(source.path)) / "experiment" / f"{experiment}.yaml"
        if path.is_file():
            try:
                return OmegaConf.select(OmegaConf.load(path), dotted, default=None) is not None
            except Exception:
                return None
    return None


def group_choice(cfg: Any, group: str) -> str | None:
    """The option of config group ``group`` this run composed (``recipe=reproduce_boq_dinov2`` ->
    ``"reproduce_boq_dinov2"``), from Hydra's record of the run; None when none was chosen or unknown."""
    choices = _select(_hydra_node(cfg), "runtime.choices", {}) or {}
    choice = choices.get(group) if hasattr(choices, "get") else None
    return str(choice) if choice else None


def _component(group: str, target: str, hydra: Any) -> str:
    """``aggregator=gem (vprlab...GeM)`` when the group was chosen by name, else the target alone."""
    choices = _select(hydra, "runtime.choices", {}) or {}
    choice = choices.get(group) if hasattr(choices, "get") else None
    return f"{group}={choice} ({target})" if choice else f"{group} {target}"


def _who_sets(group: str, keys: Iterable[str], hydra: Any) -> str:
    """'experiment=X sets aggregator.a', 'the command line sets ...' or '<group> preset sets ...'."""
    dotted = [f"{group}.{key}" for key in keys]
    names = ", ".join(dotted)
    overrides = [str(o).lstrip("+~") for o in (_select(hydra, "overrides.task", []) or [])]
    on_command_line = [d for d in dotted if any(o.split("=", 1)[0] == d for o in overrides)]
    if on_command_line and len(on_command_line) == len(dotted):
        return f"the command line sets {names}"
    choices = _select(hydra, "runtime.choices", {}) or {}
    experiment = choices.get("experiment") if hasattr(choices, "get") else None
    if experiment:
        in_file = _experiment_sets(hydra, str(experiment), dotted[0])
        if in_file is not False:
            return f"experiment={experiment} sets {names}"
    choice = choices.get(group) if hasattr(choices, "get") else None
    if choice:
        return f"{group}={choice} (conf/{group}/{choice}.yaml or a config it includes) sets {names}"
    return f"the config sets {names}"


def check_component_keys(cfg: DictConfig | Mapping, groups: Iterable[str] = COMPONENT_GROUPS) -> None:
    """Every key of the backbone / aggregator config is an argument of its ``_target_``'s constructor,
    every required argument is given, and a class token goes only to an aggregator that reads it;
    raises ValueError naming the key, who set it and the class."""
    _check_keys(cfg, groups)
    check_class_token(cfg)


def _check_keys(cfg: DictConfig | Mapping, groups: Iterable[str]) -> None:
    hydra = _hydra_node(cfg)
    for group in groups:
        node = cfg.get(group) if hasattr(cfg, "get") else None
        if not node or "_target_" not in node:
            continue
        target = str(node["_target_"])
        cls = target_class(group, target)
        try:
            accepted, required = constructor_parameters(cls)
        except (TypeError, ValueError):  # no introspectable signature (a builtin): nothing to compare
            continue
        keys = [str(k) for k in node.keys() if str(k) not in _INSTANTIATE_KEYS]
        component = _component(group, target, hydra)
        if accepted is not None:
            unknown = [k for k in keys if k not in accepted]
            if unknown:
                takes = sorted(accepted - PASSED_BY_CODE.get(group, frozenset()))
                raise ConfigError(
                    f"{_who_sets(group, unknown, hydra)}, which {component} does not take "
                    f"(it takes: {', '.join(takes) or 'nothing'}); drop {'it' if len(unknown) == 1 else 'them'} "
                    f"({' '.join('~' + group + '.' + k for k in unknown)}), pick the {group} they were written for, "
                    f"or, in an experiment file, move them to a {group} preset in conf/{group}/ that the experiment "
                    f"selects (`- override /{group}: <preset>`)"
                )
        missing = sorted(required - set(keys) - PASSED_BY_CODE.get(group, frozenset()))
        if missing:
            raise ConfigError(
                f"{component} needs {', '.join(f'{group}.{k}' for k in missing)}, which the config does not set"
            )


def check_class_token(cfg: DictConfig | Mapping) -> None:
    """A backbone that returns its class token (``backbone.return_cls_token=true``, set for SALAD) with an
    aggregator that does not read it: found here instead of at the first forward pass."""
    backbone, aggregator = cfg.get("backbone") or {}, cfg.get("aggregator") or {}
    if not backbone.get("return_cls_token", False) or "_target_" not in aggregator:
        return
    target = str(aggregator["_target_"])
    spec = getattr(target_class("aggregator", target), "spec", None)
    if spec is not None and spec.needs_cls_token:
        return
    readers = sorted(name for name, cls in registry().items() if cls.spec.needs_cls_token)
    hydra = _hydra_node(cfg)
    raise ConfigError(
        f"{_who_sets('backbone', ['return_cls_token'], hydra)}=true, but {_component('aggregator', target, hydra)} "
        "takes a feature map, not "
        f"(feature map, class token): only aggregator={'/'.join(readers)} reads the class token; "
        "add backbone.return_cls_token=false"
    )
