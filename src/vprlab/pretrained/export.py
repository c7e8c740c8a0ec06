"""``vprlab models export``: write a trained checkpoint as a bare state dict in a release's layout,
with the sidecar (:mod:`.sidecar`) that lets it load by path: :func:`export_release` (BoQ, whose
file describes its architecture) and :func:`export_published` (the published model a run was
fine-tuned from, through its family's ``export`` mapping)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vprlab.pretrained.families.boq import BoQArchitecture, infer_architecture
from vprlab.pretrained.layouts import load_release_state_dict
from vprlab.pretrained.load import load_published_state, read_release_state
from vprlab.pretrained.registry import PublishedModel, published_model, resolve_callable
from vprlab.pretrained.sidecar import write_export_sidecar, write_sidecar
from vprlab.utils.errors import ConfigError
from vprlab.utils.weights import read_state_dict


def export_release(
    ckpt_path: str | Path, out_path: str | Path, allow_unsafe_pickle: bool = False
) -> tuple[Path, BoQArchitecture]:
    """Write the model weights of ``ckpt_path`` (a vprlab checkpoint, or any file :func:`read_state_dict`
    reads) as a plain state dict in the release layout and order, loadable by
    ``get_trained_boq(weights=out_path)``, :func:`load_pretrained` and the original BoQ code (for the
    released architectures). The result is rebuilt and loaded strictly before it is written."""
    from vprlab.utils.io import atomic_torch_save

    ckpt_path = Path(ckpt_path).expanduser()
    state = read_release_state(ckpt_path, allow_unsafe_pickle)
    architecture = infer_architecture(state, f"checkpoint {str(ckpt_path)!r}")
    training_config = _training_config(ckpt_path, allow_unsafe_pickle)
    size = ((training_config or {}).get("backbone") or {}).get("eval_image_size")
    if size is not None:
        from vprlab.utils.images import as_hw

        architecture = replace(architecture, eval_image_size=as_hw(size))
    model = architecture.build()
    load_release_state_dict(model, state, f"checkpoint {str(ckpt_path)!r}", architecture.describe())
    # Fresh contiguous tensors in the model's (= the release's) key order, nothing else in the file.
    release = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    out = atomic_torch_save(release, Path(out_path).expanduser())
    write_export_sidecar(out, architecture, training_config, model.backbone.mean, model.backbone.std, ckpt_path)
    return out, architecture


def _training_config(ckpt_path: Path, allow_unsafe_pickle: bool) -> dict[str, Any] | None:
    """The resolved config a vprlab checkpoint stores (None for a bare state dict)."""
    from vprlab.utils.weights import torch_load

    container = torch_load(ckpt_path, allow_unsafe_pickle=allow_unsafe_pickle)
    config = container.get("config") if isinstance(container, dict) else None
    return config if isinstance(config, dict) else None



def checkpoint_published_name(ckpt_path: str | Path, allow_unsafe_pickle: bool = False) -> str | None:
    """The published model a vprlab training checkpoint was fine-tuned from (``pretrained.name`` of its
    stored config), or None."""
    from vprlab.utils.weights import torch_load

    obj = torch_load(Path(ckpt_path).expanduser(), allow_unsafe_pickle=allow_unsafe_pickle)
    config = obj.get("config") if isinstance(obj, dict) else None
    pretrained = (config or {}).get("pretrained") or {}
    return pretrained.get("name") if isinstance(pretrained, dict) else None


def export_published(
    ckpt_path: str | Path, out_path: str | Path, name: str | None = None, allow_unsafe_pickle: bool = False
) -> tuple[Path, PublishedModel]:
    """Write the weights of ``ckpt_path`` (a checkpoint of ``train.py pretrained=<name>``, or a state dict
    with the model's own keys; ``name`` defaults to the checkpoint's ``pretrained.name``) in the released
    file's layout (e.g. ``backbone.N.*`` / ``aggregation.*`` for CosPlace), so the original code and
    ``load_pretrained(name, weights=out_path)`` load it, and the sidecar ``<stem>.vprlab.json`` naming
    the published model (its evaluation preprocessing and the training config), so
    ``load_pretrained(out_path)`` and ``vprlab compare --models out_path`` load it by path too. The
    weights are loaded strictly first."""
    from vprlab.utils.io import atomic_torch_save

    ckpt_path = Path(ckpt_path).expanduser()
    name = name or checkpoint_published_name(ckpt_path, allow_unsafe_pickle)
    if not name:
        raise ConfigError(f"{str(ckpt_path)!r} was not fine-tuned from a published model (no pretrained.name in its config); pass name=")
    spec = published_model(name)
    if spec.export is None:
        raise ConfigError(f"{spec.name}: writing its released layout is not available for {spec.method} {spec.backbone}")
    model = spec.build_model()
    load_published_state(model, read_state_dict(ckpt_path, allow_unsafe_pickle=allow_unsafe_pickle), spec, f"checkpoint {str(ckpt_path)!r}")
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    release = resolve_callable(spec.export)(state, spec)
    out = atomic_torch_save(release, Path(out_path).expanduser())
    prep = spec.preprocessing
    write_sidecar(out, {
        "published_model": spec.name, "method": spec.method, "descriptor_dim": spec.descriptor_dim,
        "eval_image_size": None if prep.size is None else list(prep.size),
        "transform": {"preprocessing": prep.describe(), "mean": [float(v) for v in prep.mean], "std": [float(v) for v in prep.std]},
    }, _training_config(ckpt_path, allow_unsafe_pickle), ckpt_path)
    return out, spec
