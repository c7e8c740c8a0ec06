"""What the backbones share: strict loading of a weights file into a module and the offline-download error."""

from __future__ import annotations

from pathlib import Path

import torch


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
