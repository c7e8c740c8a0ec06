"""Checkpoints: one dict with everything needed to resume exactly, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vprlab.utils.io import atomic_torch_save

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (model, optimizer, scaler, epoch, step, best metric, config, RNG)
    to ``path`` through a temporary file, so a crash never leaves a truncated checkpoint."""
    return atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint '{path}' does not exist; pass the path of a .ckpt file written by train.py "
            f"(for example <run folder>/checkpoints/last.ckpt)"
        )
    try:
        # Our checkpoints hold the resolved config and RNG states (plain python / numpy
        # objects), so they are not weights-only files.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise RuntimeError(f"checkpoint '{path}' could not be read ({type(e).__name__}: {e}); the file is damaged or not a torch checkpoint") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"'{path}' is not a vprlab checkpoint (no 'model' entry); to load bare weights use the model config plus a weights file")
    return state
