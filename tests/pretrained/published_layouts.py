"""The release layouts derived from the original code (``tests/pretrained/release_layouts/<name>.tsv``:
``#`` comment lines saying where each was read from, then ``key<TAB>(shape)`` in the file's order),
random release tensors with them, and the offline download check."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

LAYOUTS = Path(__file__).resolve().parent / "release_layouts"


def read_release_layout(name: str) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (LAYOUTS / f"{name}.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(ast.literal_eval(shape))
    return layout


def random_release_tensors(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random values with the layout's keys and shapes, scaled so deep networks stay finite and every
    parameter moves the result (BatchNorm statistics away from 0 / 1, LayerScale well above 0)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout.items():
        randn = torch.randn(shape, generator=generator)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith(("pos_embed", "cls_token", "mask_token", "centroids")):
            state[key] = randn
        elif key.endswith("gamma"):
            state[key] = 0.3 * randn
        elif len(shape) == 1 and ("norm" in key or "bn" in key or "downsample.1" in key or ".mix.0." in key) and key.endswith("weight"):
            state[key] = 1 + 0.1 * randn
        elif len(shape) <= 1:  # biases, running means, GeM's p (set by the test)
            state[key] = 0.1 * randn
        else:  # fan-in scaling
            state[key] = randn / math.sqrt(math.prod(shape[1:]))
    return state


def check_offline_message(monkeypatch, tmp_path: Path, name: str, expected: tuple[str, ...]) -> str:
    """``load_pretrained(name)`` with an empty hub cache and a failing network: one attempt at most, and
    an error that names each of ``expected`` (the URL or Drive id, the path to put the file at)."""
    from vprlab import load_pretrained

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls: list[str] = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(Exception) as info:
        load_pretrained(name)
    message = str(info.value)
    for text in expected:
        assert text in message, (text, message)
    assert len(calls) <= 1
    return message
