"""Aggregators: backbone output -> L2-normalised global descriptor (a float32 tensor [B, descriptor_dim],
or a tuple whose first item is it). One file per method; shared steps live in ``_common``.

Each subclasses :class:`~vprlab.models.spec.Aggregator`, takes ``in_channels`` (passed by ``build_model``
from the backbone), exposes ``descriptor_dim`` and declares its ``spec`` (config name, paper, what it
needs from the backbone) and ``output_dim`` formula. Every module of this package is imported here, so a
new aggregator is one new module (plus its ``conf/aggregator/<name>.yaml``): :func:`registry` lists it
and ``from vprlab.models.aggregators import <Class>`` works without editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

from vprlab.models.spec import Aggregator, AggregatorSpec, registered_aggregators


def _import_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def registry() -> dict[str, type[Aggregator]]:
    """Every aggregator class, by config name (``spec.name``, the ``conf/aggregator/<name>.yaml`` stem):
    those of this package's modules (looked up again on each call) and any defined elsewhere that has
    been imported."""
    _import_modules()
    return registered_aggregators()


_import_modules()
_OWN = {cls.__name__: cls for cls in registered_aggregators().values() if cls.__module__.startswith(f"{__name__}.")}
globals().update(_OWN)

__all__ = ["Aggregator", "AggregatorSpec", "registry", *sorted(_OWN)]  # noqa: PLE0604 (the classes found above)
