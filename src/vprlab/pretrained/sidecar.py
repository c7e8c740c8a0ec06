"""The sidecar ``<stem>.vprlab.json`` that ``vprlab models export`` writes next to a bare state dict:
the published model it belongs to or the BoQ architecture, the eval image size and transform, the
training config and the hashes of both files; read back when the file is loaded by path."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vprlab.pretrained.families.boq import BoQArchitecture
from vprlab.utils.errors import ConfigError

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "vprlab-export/1"


def sidecar_path(weights_path: str | Path) -> Path:
    """``model.pth`` -> ``model.vprlab.json``: what serving needs, next to the bare state dict."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.stem + ".vprlab.json")


def write_export_sidecar(
    weights_path: Path, architecture: BoQArchitecture, training_config: dict[str, Any] | None,
    mean: Sequence[float], std: Sequence[float], source: Path,
) -> Path:
    """Write ``<stem>.vprlab.json`` for the exported ``weights_path``: the eval image size (the training
    config's ``backbone.eval_image_size``, else the architecture's), the eval transform, the
    architecture and the full training config. The .pth itself stays a bare state dict."""
    from dataclasses import asdict

    from vprlab.utils.images import as_hw

    size = ((training_config or {}).get("backbone") or {}).get("eval_image_size") or architecture.eval_image_size
    size = list(as_hw(size)) if size is not None else None
    return write_sidecar(weights_path, {
        "architecture": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(architecture).items()},
        "eval_image_size": size,
        "transform": {"steps": ["to_tensor", "resize", "normalize"], "image_size": size, "interpolation": "bicubic",
                      "antialias": True, "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
    }, training_config, source)


def write_sidecar(weights_path: Path, fields: dict[str, Any], training_config: dict[str, Any] | None, source: Path) -> Path:
    from vprlab.utils.io import atomic_write_json
    from vprlab.utils.weights import file_hash

    record = {"format": SIDECAR_FORMAT, "weights_file": weights_path.name, "weights_hash": file_hash(weights_path), **fields,
              "training_config": training_config, "exported_from": {"path": str(source), "hash": file_hash(source)}}
    return atomic_write_json(sidecar_path(weights_path), record)


def read_export_sidecar(weights_path: str | Path) -> dict[str, Any] | None:
    """The sidecar of an exported weights file, or None when there is none. A sidecar written for other
    weights (its hash differs) is ignored with a warning: its image size would be a guess."""
    import json

    from vprlab.utils.weights import file_hash

    path = sidecar_path(weights_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); re-export with `vprlab models export` or delete it") from error
    if record.get("format") != SIDECAR_FORMAT:
        raise ConfigError(f"{path}: unknown sidecar format {record.get('format')!r} (expected {SIDECAR_FORMAT!r})")
    if record.get("weights_hash") != file_hash(weights_path):
        log.warning("%s was written for other weights (hash %s, the file has %s); ignoring it",
                    path, record.get("weights_hash"), file_hash(weights_path))
        return None
    return record
