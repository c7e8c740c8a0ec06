"""What a model component declares about itself, on its class, so that config checks, the tests, the
zoo table and the docs read it from one place instead of keeping lists of names.

An aggregator subclasses :class:`Aggregator` and sets ``spec = AggregatorSpec(...)`` (its config name,
paper, descriptor-size formula and what it needs from the backbone) and ``output_dim`` (the descriptor
size computed from its init arguments, without building it). Defining such a class registers it;
:func:`vprlab.models.aggregators.registry` lists every one (docs/extending.md has a worked example).

A backbone subclasses :class:`Backbone` and says what its config gives before it is built: the output
stride, the size images must be a multiple of, whether it returns the class token.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class AggregatorSpec:
    """The declarations of one aggregator class.

    - ``name``: its config name, ``conf/aggregator/<name>.yaml`` (``aggregator=<name>``).
    - ``paper``: the reference shown in the zoo table.
    - ``descriptor``: the descriptor size in words, for the docs (e.g. "`out_channels` x `s1` x `s2`");
      the number itself comes from :meth:`Aggregator.output_dim`.
    - ``needs_cls_token``: it reads ``(feature map, class token)``, so the backbone config must set
      ``return_cls_token=true``.
    - ``fixed_map_size``: the names of the init arguments that fix the feature map's height and width
      (the model only works on maps of that size, at training and evaluation alike).
    - ``min_map_size``: the names of the init arguments the map's height and width must reach.
    - ``more_positions_than``: the name of the init argument that the number of positions H x W must exceed.
    - ``hint``: a config that pairs it correctly, quoted by the error messages (e.g. "experiment=salad_dinov2").
    - ``small``: init arguments of a small instance, for CPU tests and examples (the tests set a
      ``fixed_map_size`` to the map they feed).
    """

    name: str
    paper: str
    descriptor: str
    needs_cls_token: bool = False
    fixed_map_size: tuple[str, str] | None = None
    min_map_size: tuple[str, str] | None = None
    more_positions_than: str | None = None
    hint: str = ""
    small: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "small", MappingProxyType(dict(self.small)))


_AGGREGATORS: dict[str, type[Aggregator]] = {}


class Aggregator(nn.Module):
    """Base of the aggregators: feature map [B, C, H, W] (or ``(map, class token)``) -> L2-normalised
    float32 descriptor [B, descriptor_dim]. The first init argument is ``in_channels`` (``build_model``
    passes the backbone's ``out_channels``); the others come from the aggregator config.

    A subclass that sets ``spec`` in its own body is registered under ``spec.name``; intermediate
    bases (such as ``GlobalPool``) leave it out.
    """

    spec: ClassVar[AggregatorSpec]

    #: True when a descriptor depends on the other images of the batch (a cross-image encoder: CricaVPR,
    #: SuperVLAD-CrossImage); evaluation then keeps one batch size for database and queries, records it
    #: with the results and in the descriptor cache key (:func:`mixes_batch`). Instances may override it.
    mixes_batch: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        if not isinstance(spec, AggregatorSpec):
            raise TypeError(f"{cls.__qualname__}.spec must be an AggregatorSpec, got {type(spec).__name__}")
        if cls.output_dim is Aggregator.output_dim:
            raise TypeError(f"{cls.__qualname__} declares a spec but no output_dim(in_channels, ...) formula")
        previous = _AGGREGATORS.get(spec.name)
        if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"aggregator name '{spec.name}' is declared by both {previous.__module__}.{previous.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}; give one of them another spec.name"
            )
        _AGGREGATORS[spec.name] = cls  # a reloaded module replaces its own class

    @staticmethod
    def output_dim(in_channels: int, **args: Any) -> int:
        """The descriptor size for ``in_channels`` and the init arguments ``args`` (all of them,
        defaults included: see :meth:`descriptor_dim_for`)."""
        raise NotImplementedError

    @classmethod
    def config_args(cls, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The init arguments other than ``in_channels``: the config's values (``_target_`` and keys
        that are not arguments are left out), the signature's defaults for the rest."""
        config = dict(config or {})
        args = {}
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name in ("self", "in_channels") or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if name in config:
                args[name] = config[name]
            elif parameter.default is not parameter.empty:
                args[name] = parameter.default
        return args

    @classmethod
    def descriptor_dim_for(cls, in_channels: int, **config: Any) -> int:
        """The descriptor size of ``cls(in_channels, **config)``, without building it."""
        return int(cls.output_dim(in_channels, **cls.config_args(config)))

    @property
    def descriptor_dim(self) -> int:
        """By default the formula applied to the init arguments read back from the attributes of the
        same name; an aggregator that does not keep them overrides this."""
        names = ["in_channels", *type(self).config_args()]
        return int(type(self).output_dim(**{n: getattr(self, n) for n in names if hasattr(self, n)}))


class Backbone(nn.Module):
    """Base of the backbones: images [B, 3, H, W] -> feature map [B, out_channels, H/stride, W/stride]
    (or ``(feature map, class token)``). Built backbones expose ``out_channels``, ``stride``, ``mean``,
    ``std``, ``train_image_size`` and ``eval_image_size``; the class methods below say what a config
    gives before anything is built (``None``: known only once built)."""

    #: whether some config of this class returns ``(feature map, class token)`` (``return_cls_token=true``)
    can_return_cls_token: ClassVar[bool] = False

    @classmethod
    def config_stride(cls, config: Mapping[str, Any]) -> int | None:
        """The output stride (the patch size for ViTs) that ``config`` gives."""
        return None

    @classmethod
    def config_patch_size(cls, config: Mapping[str, Any]) -> int | None:
        """The size every image side must be a multiple of, if any."""
        return None

    @classmethod
    def config_cls_token(cls, config: Mapping[str, Any]) -> bool:
        """Whether the backbone built from ``config`` returns ``(feature map, class token)``."""
        return bool(config.get("return_cls_token", False))


def registered_aggregators() -> dict[str, type[Aggregator]]:
    """Every aggregator class defined so far, by config name (:func:`vprlab.models.aggregators.registry`
    first imports the package's own modules)."""
    return dict(sorted(_AGGREGATORS.items()))


def mixes_batch(model: nn.Module) -> bool:
    """Whether any aggregator in ``model`` makes a descriptor depend on the other images of its batch."""
    return any(isinstance(m, Aggregator) and m.mixes_batch for m in model.modules())


def component_class(config: Mapping[str, Any] | None) -> type | None:
    """The class a ``_target_`` config names, or None when it names none that can be imported
    (the build then reports the problem)."""
    target = str((config or {}).get("_target_") or "")
    module_name, _, attribute = target.rpartition(".")
    if not module_name:
        return None
    try:
        found = getattr(importlib.import_module(module_name), attribute, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None
