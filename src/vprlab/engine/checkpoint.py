"""Checkpoints: one dict with everything needed to resume exactly, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprlab.utils.errors import DataError, MissingFileError, UnreadableFileError
from vprlab.utils.io import atomic_torch_save
from vprlab.utils.weights import UnsafeFileError, error_summary, torch_load

CHECKPOINT_VERSION = 1


def _plain(obj: Any) -> Any:
    """numpy values as tensors / Python numbers, so the file loads with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (model, optimizer, scaler, epoch, step, best metric, config, RNG)
    to ``path`` through a temporary file, so a crash never leaves a truncated checkpoint.
    Everything is stored as tensors and plain Python types: the file loads without unpickling code."""
    return atomic_torch_save({"version": CHECKPOINT_VERSION, **_plain(state)}, path)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, allow_unsafe_pickle: bool = False
) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``; older files
    holding other Python objects need the explicit ``allow_unsafe_pickle`` (see :func:`torch_load`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint '{path}' does not exist; pass the path of a .ckpt file written by train.py "
            f"(for example <run folder>/checkpoints/last.ckpt)"
        )
    try:
        state = torch_load(path, map_location=map_location, allow_unsafe_pickle=allow_unsafe_pickle)
    except UnsafeFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise UnreadableFileError(f"checkpoint '{path}' could not be read ({error_summary(e)}); the file is damaged or not a torch checkpoint") from e
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"'{path}' is not a vprlab checkpoint (no 'model' entry); to load bare weights use the model config plus a weights file")
    return state
