"""Stand-ins for published models' files: random (seeded) weights written in the release's own
layout and container, for trying loading, evaluation, ``vprlab compare`` and ``vprlab leaderboard``
without the real files (offline machines, CI, demos). The recalls such a file gives mean nothing and
must never be shown as the published model's.

The model is built from the zoo (seeded random initialisation), mapped back to the release's key
names by the family's ``export`` function (the inverse of the mapping loading uses) and saved as the
release does: ``torch.save`` of a bare state dict, or safetensors. A family without an ``export``
mapping (NetVLAD's MATLAB file) gets no stand-in: :func:`standin_reason` says why. The same name and
seed always give the same bytes, so a stand-in's file hash (and its descriptor cache entries) is
stable across runs; the random state is seeded from the seed and the name, so two models of one
architecture (CosPlace and EigenPlaces ResNet18-512) never get the same file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

from vprlab.pretrained.registry import PublishedModel, published_model, resolve_callable
from vprlab.utils.errors import ConfigError
from vprlab.utils.io import atomic_torch_save, atomic_write_bytes

def standin_reason(spec: PublishedModel) -> str | None:
    """Why no stand-in can be written for ``spec`` (None: one can)."""
    if spec.export is None:
        return f"no stand-in: the {spec.method} family has no export mapping to write its {spec.container} file"
    return None


def write_random_release(name: str, out_dir: str | Path, seed: int = 0, hub_layout: bool = False) -> Path:
    """A stand-in file for published model ``name`` in ``out_dir`` (``hub_layout``: at the place the
    torch hub cache keeps it, ``<out_dir>/<cache_dir>/<file_name>``, so ``out_dir`` can serve as a hub
    dir); returns its path. ConfigError when the family cannot write its layout."""
    spec = published_model(name)
    reason = standin_reason(spec)
    if reason:
        raise ConfigError(f"{spec.name}: {reason}")
    torch.manual_seed(seed * 1_000_003 + zlib.crc32(spec.name.encode()))  # two families with one architecture differ
    state = {k: v.detach().clone().contiguous() for k, v in spec.build_model().state_dict().items()}
    release = resolve_callable(spec.export)(state, spec)
    path = Path(out_dir) / (spec.cache_dir if hub_layout else "") / spec.file_name
    if spec.container == "safetensors":
        from safetensors.torch import save

        return atomic_write_bytes(path, save(release))
    return atomic_torch_save(release, path)
