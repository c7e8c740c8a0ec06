"""What the backbones share: ImageNet statistics, weight files and the
offline-download error."""

from __future__ import annotations

from pathlib import Path

import torch

# ImageNet statistics (both torchvision ResNets and DINOv2 were trained with them) live with
# the transforms; re-exported here for the backbones.
from vprlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402,F401


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (tensors only, ``weights_only=True``) or as safetensors.

    ``what`` names the expected content in error messages (e.g. "a torchvision resnet50 state dict").
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone.weights_path={str(path)!r} does not exist; point it to {what} "
            "or set backbone.weights_path=null"
        )
    if path.suffix == ".safetensors":  # e.g. a timm / Hugging Face cache file copied by hand
        from safetensors.torch import load_file

        state = load_file(path, device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"backbone.weights_path={str(path)!r} does not hold a plain state dict "
            f"(name -> tensor); expected {what}"
        )
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the file."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches are raised even with strict=False
        raise ValueError(f"backbone.weights_path={str(path)!r} does not match {what}: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"backbone.weights_path={str(path)!r} does not match {what}: "
            f"missing keys {result.missing_keys[:5]}{'...' if len(result.missing_keys) > 5 else ''}, "
            f"unexpected keys {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


def download_failed(model_name: str, err: Exception, example_file: str) -> RuntimeError:
    """The error raised when pretrained weights cannot be downloaded (typically: no network)."""
    return RuntimeError(
        f"could not download the pretrained weights of {model_name} ({type(err).__name__}: {err}). "
        f"Without network access set backbone.pretrained=false (random initialisation, e.g. before "
        f"loading a trained checkpoint) or backbone.weights_path=/path/to/{example_file} "
        "(a local copy of the weights)"
    )
