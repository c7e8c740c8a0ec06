"""What the backbones share: strict loading of a weights file into a module and the offline-download error."""

from __future__ import annotations

from pathlib import Path

import torch

from vprlab.utils.errors import DataError, DownloadError


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the file."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches are raised even with strict=False
        raise DataError(f"backbone.weights_path={str(path)!r} does not match {what}: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise DataError(
            f"backbone.weights_path={str(path)!r} does not match {what}: "
            f"missing keys {result.missing_keys[:5]}{'...' if len(result.missing_keys) > 5 else ''}, "
            f"unexpected keys {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


def download_failed(model_name: str, err: Exception, example_file: str) -> DownloadError:
    """The error raised when pretrained weights cannot be downloaded (typically: no network)."""
    return DownloadError(
        f"could not download the pretrained weights of {model_name} ({type(err).__name__}: {err}). "
        f"Without network access set backbone.pretrained=false (random initialisation, e.g. before "
        f"loading a trained checkpoint) or backbone.weights_path=/path/to/{example_file} "
        "(a local copy of the weights)"
    )


# Seconds the offline check waits for the hub (DNS and TCP connect together).
HUB_PROBE_TIMEOUT_S = 2.0


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None when it can (or a proxy decides).

    One TCP connection to the hub's host, DNS included, bounded by ``timeout`` (a thread, since
    ``socket`` timeouts do not cover name resolution): what lets an offline machine fail in two
    seconds instead of spending ~47 s in the hub client's retries."""
    import os
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows; let the download try
    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{host}:{port} unreachable ({type(err).__name__}: {err})")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout:g} s"


def cached_timm_weights(model_name: str) -> str | None:
    """The local file of timm's pretrained weights for ``model_name`` in the Hugging Face cache, if
    an earlier download left one there (loading it needs no network)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    repo, _, revision = repo.partition("@")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    for name in (*names, "model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def create_timm_pretrained(create, model_name: str, example_file: str, **kwargs):
    """``create(model_name, pretrained=True, **kwargs)`` (a ``timm.create_model``), failing fast offline:
    weights already in the Hugging Face cache load from there without a network call; otherwise,
    when the hub cannot be reached (:func:`hub_unreachable`), the error comes at once, naming the
    model and ``backbone.weights_path=``, instead of after the hub client's retries."""
    cached = cached_timm_weights(model_name)
    try:
        if cached is not None:
            return create(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=cached), **kwargs)
        reason = hub_unreachable()
        if reason is not None:
            raise ConnectionError(f"no network: {reason}")
        return create(model_name, pretrained=True, **kwargs)
    except Exception as err:  # no network, hub offline mode, corrupt cache...
        raise download_failed(model_name, err, example_file) from err
