"""The two things every published family does with a state dict: rename its keys by explicit rules
(:func:`map_keys`), and check it against a model, naming every key that differs
(:func:`check_state`, :func:`load_strict`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from vprlab.utils.errors import ConfigError

# (pattern, replacement), tried in order; the first pattern that matches the whole key renames it
# (``re`` replacement syntax: ``\1`` is the first group).
Rules = Sequence[tuple[str, str]]


def list_keys(keys: Sequence[str], limit: int = 8) -> str:
    """``a, b, c ... and N more``: at most ``limit`` keys of a message."""
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def prefix_rules(pairs: Sequence[tuple[str, str]], *, inverse: bool = False) -> Rules:
    """Rules renaming ``<old>.<rest>`` to ``<new>.<rest>`` for each (old, new) prefix pair, in order (put a
    longer prefix before a shorter one it starts with); ``inverse=True``: ``<new>.<rest>`` back to
    ``<old>.<rest>``, so one table gives a family's convert and its export."""
    return tuple(
        (re.escape(new if inverse else old) + r"\.(.+)", (old if inverse else new).replace("\\", "\\\\") + r".\1")
        for old, new in pairs
    )


def map_keys(raw: Mapping[str, torch.Tensor], rules: Rules, what: str, *, drop: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Rename every key of ``raw`` by the first rule whose pattern matches the whole key, keeping the
    order; a key matching one of the ``drop`` patterns (whole key) is left out on purpose. A key that
    no rule and no ``drop`` pattern matches is an error that names it (``what`` says whose layout)."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    dropped = [re.compile(pattern) for pattern in drop]
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in raw.items():
        if any(pattern.fullmatch(key) for pattern in dropped):
            continue
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(replacement, key, count=1)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ConfigError(f"{what}: {len(unmapped)} keys that no mapping knows: {list_keys(unmapped)}")
    return out


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
        parts.append(f"{len(missing)} missing keys: {list_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {list_keys(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {list_keys(shapes, 5)}")
    return "; ".join(parts)


def check_state(
    expected: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str, what: str,
    note: str | Callable[[], str] = "",
) -> dict[str, torch.Tensor]:
    """``state`` in the order of ``expected`` (a model's state dict), or a ValueError
    "<source> does not match <what>: <every missing, unexpected and misshapen key><note>" (``note``
    may be a function, called only then: e.g. the same keys in the release file's own names)."""
    differences = describe_differences(expected, state)
    if differences:
        raise ConfigError(f"{source} does not match {what}: {differences}{note() if callable(note) else note}")
    return {k: state[k] for k in expected}


def load_strict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str, note: str | Callable[[], str] = ""
) -> None:
    """Load ``state`` into ``model`` strictly (same keys, same shapes) after :func:`check_state`."""
    model.load_state_dict(check_state(model.state_dict(), state, source, what, note), strict=True)
