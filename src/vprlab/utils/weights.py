"""The one reader of weight files, and the hashes that name weights in results and caches.

Every path that loads weights (released models, ``weights_path=``, backbone weight files,
exports) reads through :func:`read_state_dict`: safetensors, or a torch file loaded with
``weights_only=True`` (:func:`torch_load`, which training checkpoints use too); a vprlab checkpoint
(``model``), a Lightning checkpoint (``state_dict``) or a CricaVPR / SuperVLAD checkpoint
(``model_state_dict``) is unwrapped to its model weights. Nothing is
unpickled with the full unpickler unless the user opts in with ``allow_unsafe_pickle``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprlab.utils.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

# How torch's weights-only unpickler names what it refuses: a global, or a class it may not build
# (e.g. numpy's object dtype, whose items could be anything).
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>")


def error_summary(err: BaseException) -> str:
    """One line for a message: torch's weights-only errors are paragraphs; the cause is the line
    after "WeightsUnpickler error:"."""
    text = str(err)
    lines = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[-1].splitlines() if line.strip()]
    return f"{type(err).__name__}: {(lines[0] if lines else '')[:200]}"


class UnsafeFileError(DataError):
    """A torch file that only a full unpickle could read: loading it could run code stored in it."""


def numpy_safe_globals() -> list[Any]:
    """The globals of numpy arrays, scalars and dtypes (both module spellings: numpy < 2 wrote
    ``numpy.core``), which the weights-only unpickler admits besides tensors and plain types. Training
    scripts store them beside the weights (CricaVPR, SuperVLAD and EDTformer keep ``recalls`` and
    ``best_r5``; dirtorch its PCA arrays); rebuilding them runs no code from the file (an object array's
    items go through the same restricted unpickler)."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Any] = [np.ndarray, np.dtype, (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    allowed += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")]
    return allowed


def torch_load(path: str | Path, *, map_location: Any = "cpu", allow_unsafe_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, plain Python types and numpy arrays / scalars
    (:func:`numpy_safe_globals`) only, so a file can never run code. Files that need the full unpickler (pickled objects of other classes) are refused with
    :class:`UnsafeFileError`, unless ``allow_unsafe_pickle`` (the config key of the same name) says the
    user trusts the file; that load is logged as a warning."""
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names a refused class or function as "Unsupported global: GLOBAL module.name ...";
        # any other failure of the weights-only unpickler is a damaged or foreign file.
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused is None:
            raise
        if not allow_unsafe_pickle:
            raise UnsafeFileError(
                f"{str(path)!r} holds Python objects other than tensors and plain types ({refused.group(1) or refused.group(2)}); "
                "loading it would run code stored in the file, so vprlab does not. If you trust where the file "
                "comes from (e.g. a checkpoint you wrote with an older vprlab), load it once with "
                "allow_unsafe_pickle=true and export or re-save it"
            ) from err
        log.warning("%s: loading with the full unpickler (allow_unsafe_pickle=true): code stored in the file runs", path)
        return torch.load(path, map_location=map_location, weights_only=False)


def _read_container(path: Path, allow_unsafe_pickle: bool) -> Any:
    if path.suffix == ".safetensors":  # e.g. a timm / Hugging Face file copied by hand
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return torch_load(path, allow_unsafe_pickle=allow_unsafe_pickle)


def read_state_dict(path: str | Path, *, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model weights in ``path``: a bare state dict (torch or safetensors), a vprlab checkpoint
    (``model``), a Lightning checkpoint (``state_dict``) or a checkpoint of the deep-visual-geo-localization
    benchmark's training code (``model_state_dict``: EDTformer), read without running code
    (:func:`torch_load`; ``allow_unsafe_pickle`` is the user's explicit opt-out)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"weights file {str(path)!r} does not exist; pass the path of a .pth / .ckpt / .safetensors file")
    try:
        obj = _read_container(path, allow_unsafe_pickle)
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file means the same thing to the user
        raise DataError(f"weights file {str(path)!r} could not be read ({error_summary(err)}); is it a torch file?") from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict"):  # Lightning, vprlab, CricaVPR / SuperVLAD / EDTformer
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise DataError(
        f"weights file {str(path)!r} holds neither a state dict (name -> tensor) nor a checkpoint with one under "
        f"'state_dict', 'model' or 'model_state_dict' (found {keys}); export it with `vprlab models export`"
    )


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict` (tensors only) for ``backbone.weights_path``, with errors that name
    that key; ``what`` names the expected content (e.g. "a torchvision resnet50 state dict")."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"backbone.weights_path={str(path)!r} does not exist; point it to {what} "
            "or set backbone.weights_path=null"
        )
    try:
        return read_state_dict(path)
    except ValueError as err:
        raise DataError(
            f"backbone.weights_path={str(path)!r} does not hold a plain state dict "
            f"(name -> tensor); expected {what} ({err})"
        ) from err


def file_hash(path: str | Path, length: int = 12) -> str:
    """Short SHA-256 of a file, used to name results and caches by the exact weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def state_dict_hash(state_dict: dict[str, torch.Tensor], length: int = 12) -> str:
    """Hash of a model's weights (order-independent over keys), for checkpoints and untrained models alike."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]
