"""The one reader of weight files, and the hashes that name weights in results and caches.

Every path that loads weights (released models, ``weights_path=``, backbone weight files,
exports) reads through :func:`read_state_dict`: safetensors, or a torch file loaded with
``weights_only=True``; a vprlab checkpoint (``model``) or a Lightning checkpoint
(``state_dict``) is unwrapped to its model weights.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def _torch_load(path: Path, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise
        # vprlab / Lightning training checkpoints also hold configs and RNG states, which the
        # weights-only unpickler refuses. Local files are the user's own: unpickle them fully.
        log.info("%s holds more than tensors (%s); loading it as a full training checkpoint", path, str(err).splitlines()[0])
        return torch.load(path, map_location="cpu", weights_only=False)


def _read_container(path: Path, trusted: bool) -> Any:
    if path.suffix == ".safetensors":  # e.g. a timm / Hugging Face file copied by hand
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return _torch_load(path, trusted)


def read_state_dict(path: str | Path, *, trusted: bool = True) -> dict[str, torch.Tensor]:
    """The model weights in ``path``: a bare state dict (torch or safetensors), a vprlab checkpoint
    (``model``) or a Lightning checkpoint (``state_dict``). ``trusted=False`` refuses anything but
    tensors (downloads, backbone files, ``weights_path=``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; pass the path of a .pth / .ckpt / .safetensors file")
    try:
        obj = _read_container(path, trusted)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file means the same thing to the user
        raise ValueError(f"weights file {str(path)!r} could not be read ({type(err).__name__}: {err}); is it a torch file?") from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):  # Lightning, vprlab checkpoint
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"weights file {str(path)!r} holds neither a state dict (name -> tensor) nor a checkpoint with one under "
        f"'state_dict' or 'model' (found {keys}); export it with `vprlab models export`"
    )


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict` (tensors only) for ``backbone.weights_path``, with errors that name
    that key; ``what`` names the expected content (e.g. "a torchvision resnet50 state dict")."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone.weights_path={str(path)!r} does not exist; point it to {what} "
            "or set backbone.weights_path=null"
        )
    try:
        return read_state_dict(path, trusted=False)
    except ValueError as err:
        raise ValueError(
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
