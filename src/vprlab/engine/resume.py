"""Resume means the stored run.

``train.py ckpt_path=<file>`` continues the run the checkpoint holds: its stored (resolved)
configuration is rebuilt, and only the keys of :data:`RESUME_SAFE` may be overridden (how long to
train, where and how it runs, logging). Any other override (``optimizer.lr=5e-3``,
``aggregator=gem``, ``experiment=...``) fails before anything is built and names the key: a
different learning rate would silently be a different run, and a different model would only fail
deep inside ``load_state_dict``.

``ckpt_path=auto`` continues this run folder's own checkpoint with the config of this run (a requeued
job starts with the same command line); the model it describes must be the stored one.

``init_from=<file>`` is not a resume: a NEW run (its own folder, epoch 0, a fresh optimizer and
schedule) starts from the model weights of a checkpoint or a `vprlab models export`, whose stored
architecture must be this run's (:func:`prepare_init_from`). A requeued job of such a run
(``ckpt_path=auto``) continues its own checkpoint once it has one.

Which keys were overridden: under Hydra, the command line's overrides; without Hydra (a config made
in Python), every key whose value differs from the stored config.

Everything a resume does lives here: which checkpoint (:func:`load_resume_checkpoint`: ``auto`` and the
fall-back to ``last.prev.ckpt``), with which config (:func:`prepare_resume`), and putting the loop back
where it stopped (:func:`restore_training_state`: model, optimizer, scaler, checkpointer, RNG;
:func:`seek_sampler`: the sampler's place inside a half-done epoch). The checkpoint file format is
``engine/checkpoint.py``; when to write which file, ``engine/checkpointer.py``.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vprlab.engine.checkpoint import load_checkpoint
from vprlab.engine.checkpointer import LAST, PREVIOUS, Checkpointer
from vprlab.pretrained.layouts import describe_differences
from vprlab.pretrained.load import read_export_sidecar, sidecar_path
from vprlab.utils.config import command_line_overrides, flatten_keys
from vprlab.utils.errors import ConfigError, DataError, UnreadableFileError
from vprlab.utils.seed import set_rng_state
from vprlab.utils.weights import read_state_dict

log = logging.getLogger(__name__)

# Keys that change how long, where or how visibly a run goes on, never what it computes. An exact key,
# or a prefix ending in ".". `trainer.max_epochs` extends a run (a schedule defined in epochs then
# stretches with it; warmup_multistep with fixed milestones does not).
RESUME_SAFE = (
    "ckpt_path", "allow_unsafe_pickle", "paths.", "logger", "logger.", "hydra.",
    "trainer.max_epochs", "trainer.device", "trainer.num_threads", "trainer.eval_batch_size", "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps", "trainer.eval_every_n_epochs",
    "dataset.num_workers", "dataset.persistent_workers", "dataset.pin_memory", "dataset.prefetch_factor",
    "dataset.root",
)


def key_in(key: str, patterns: Sequence[str]) -> bool:
    """Whether dotted ``key`` is one of ``patterns``: an exact key, or a prefix ending in "." (its keys)."""
    return any(key == pattern or (pattern.endswith(".") and key.startswith(pattern)) for pattern in patterns)


def is_resume_safe(key: str) -> bool:
    return key_in(key, RESUME_SAFE)


def override_keys(overrides: Sequence[str]) -> list[str]:
    """``["+a.b=1", "aggregator=gem", "~x"]`` -> ``["a.b", "aggregator", "x"]``."""
    keys = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        keys.append(key.split("@", 1)[0])  # group@package=... names the group
    return keys


def refuse_overrides(overrides: Sequence[str] | None, patterns: Sequence[str], reason: str, advice: str) -> None:
    """A ConfigError naming every override of ``overrides`` (the command line's, as Hydra records them)
    whose key is one of ``patterns`` (:func:`key_in`): ``reason`` says why such a key cannot be honoured
    ("ckpt_path=X evaluates the stored model"), ``advice`` what to do. None (outside Hydra): nothing."""
    refused = [o for o, key in zip(overrides or [], override_keys(overrides or [])) if key_in(key, patterns)]
    if refused:
        raise ConfigError(
            f"{reason}, so {', '.join(refused)} cannot be honoured: {'it' if len(refused) == 1 else 'they'} would only "
            f"make this run's config disagree with what it computes. {advice}"
        )


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain values; interpolations that resolve only inside a Hydra job (``${hydra:...}``) stay
    as written when there is none."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


# Keys added after runs were stored, with the value those runs trained with (not today's default): a run
# stored before city-by-city batches shuffled all places and dropped the last partial batch, and resuming it
# must go on doing so.
KEYS_ADDED_LATER = {
    "dataset.batch_order": "shuffled",
    "dataset.drop_last": True,
}


def as_stored_run_trained(stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with :data:`KEYS_ADDED_LATER` filled in where its training-data config lacks them."""
    dataset = stored.get("dataset")
    if not isinstance(dataset, dict) or "places_per_batch" not in dataset:  # not a place-batch training config
        return stored
    filled = {**dataset}
    for key, value in KEYS_ADDED_LATER.items():
        filled.setdefault(key.split(".", 1)[1], value)
    return {**stored, "dataset": filled}


def resume_config(cfg: DictConfig, stored: dict[str, Any], overrides: list[str] | None) -> DictConfig:
    """The stored run's config with the resume-safe values of ``cfg``; any other override is a ValueError
    that names it. ``overrides``: the command line's (None: compare ``cfg`` with ``stored`` key by key)."""
    stored = as_stored_run_trained(stored)
    current = flatten_keys(_resolved(cfg))
    saved = flatten_keys(stored)
    if overrides is not None:
        changed = override_keys(overrides)
    else:
        changed = sorted(k for k in set(current) | set(saved) if current.get(k, "<absent>") != saved.get(k, "<absent>"))
    refused = [k for k in changed if not is_resume_safe(k)]
    if refused:
        shown = []
        for key in refused:
            was = saved.get(key, next((f"{k}=..." for k in saved if k.startswith(key + ".")), "<not set>"))
            now = current.get(key, next((f"{k}=..." for k in current if k.startswith(key + ".")), "<not set>"))
            shown.append(f"{key} (stored: {was}, asked: {now})" if overrides is None else key)
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} resumes the run stored in the checkpoint, so its configuration cannot change: "
            f"{', '.join(shown)} {'is' if len(shown) == 1 else 'are'} not resume-safe. Only these may be overridden when "
            f"resuming: {', '.join(k.rstrip('.') + ('.*' if k.endswith('.') else '') for k in RESUME_SAFE)}. "
            "Drop the other overrides, or start a new run (without ckpt_path) to train with other settings"
        )
    merged = OmegaConf.create(stored)
    for key in changed:
        if key in ("hydra",) or key.startswith("hydra."):
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(merged, key, value, merge=False, force_add=True)  # a group (logger=none) replaces the node
    # This process writes where it was told to (its run folder), not into the stored run's folder.
    merged.paths.output_dir = str(OmegaConf.select(cfg, "paths.output_dir"))
    merged.ckpt_path = str(cfg.ckpt_path)
    merged.allow_unsafe_pickle = bool(cfg.get("allow_unsafe_pickle", False))
    if changed:
        log.info("resuming the stored run of %s with %s", cfg.ckpt_path, ", ".join(changed))
    return merged


def model_differences(cfg: DictConfig, stored: dict[str, Any], ignore: Sequence[str] = ("backbone.pretrained",)) -> list[str]:
    """The backbone./aggregator. keys whose value in ``cfg`` differs from the ``stored`` config, each as
    ``key (stored: x, this run: y)``; keys matching ``ignore`` (:func:`key_in`) are not compared."""
    current = {k: v for k, v in flatten_keys(_resolved(cfg)).items() if k.startswith(("backbone.", "aggregator."))}
    saved = {k: v for k, v in flatten_keys(stored).items() if k.startswith(("backbone.", "aggregator."))}
    differ = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k) and not key_in(k, ignore))
    return [f"{k} (stored: {saved.get(k, '<not set>')}, this run: {current.get(k, '<not set>')})" for k in differ]


def _check_same_model(cfg: DictConfig, stored: dict[str, Any], path: Path) -> None:
    differ = model_differences(cfg, stored)
    if differ:
        raise ConfigError(
            f"ckpt_path=auto: {path} holds a model with other settings than this run's: " + ", ".join(differ)
            + f". Use the run's own command line, another run folder, or remove {path} to start from scratch"
        )


# Backbone keys that say how a model trains and where its weights would come from, not which weights it
# has: a run started with init_from may change them (train at another size, unfreeze more blocks).
INIT_FROM_FREE = (
    "backbone.pretrained", "backbone.weights_path", "backbone.num_trainable_blocks", "backbone.train_image_size",
    "backbone.eval_image_size", "backbone.grad_checkpointing",
)


def prepare_init_from(cfg: DictConfig) -> tuple[Path, dict[str, Any]] | None:
    """``init_from=<file>``: (the file, its model weights) to start a NEW run from, read and checked before
    anything is built; None without ``init_from``. The file is a vprlab checkpoint (``.ckpt``) or a
    `vprlab models export` (``.pth`` with its ``.vprlab.json``); only the model weights are taken (no
    optimizer, schedule, epoch or RNG state). The architecture it stores must be this config's: the
    backbone./aggregator. keys that differ (:data:`INIT_FROM_FREE` aside) are named and nothing runs."""
    value = cfg.get("init_from")
    if not value:
        return None
    if cfg.get("ckpt_path") and str(cfg.ckpt_path) != "auto":  # auto without a checkpoint yet: a fresh start
        raise ConfigError(
            f"init_from={value} and ckpt_path={cfg.ckpt_path}: ckpt_path resumes a run (its weights, optimizer and "
            "epoch), init_from starts a new run from a checkpoint's weights; set only one of them"
        )
    path = Path(str(value)).expanduser()
    allow_unsafe = bool(cfg.get("allow_unsafe_pickle"))
    if path.suffix != ".ckpt" and sidecar_path(path).is_file():  # a `vprlab models export`
        record = read_export_sidecar(path) or {}
        stored, weights = record.get("training_config"), read_state_dict(path, allow_unsafe_pickle=allow_unsafe)
        what = f"the export {path} ({sidecar_path(path).name})"
    else:
        try:
            state = load_checkpoint(path, allow_unsafe_pickle=allow_unsafe)
        except DataError:  # read, but a bare state dict: nothing says which architecture it is
            state = {"model": None}
        stored, weights, what = state.get("config"), state["model"], f"the checkpoint {path}"
    if not isinstance(stored, dict):
        raise ConfigError(
            f"init_from={value}: {what} records no training configuration, so its architecture cannot be checked "
            "against this run's; pass a checkpoint written by train.py (<run>/checkpoints/best.ckpt) or a "
            "`vprlab models export` .pth with its .vprlab.json (for bare weights of the backbone: backbone.weights_path=)"
        )
    differ = model_differences(cfg, stored, ignore=INIT_FROM_FREE)
    if differ:
        published = (stored.get("pretrained") or {}).get("name")
        hint = (f" The stored run fine-tuned {published}: add pretrained={published} for its architecture."
                if published and published != (cfg.get("pretrained") or {}).get("name") else "")
        raise ConfigError(
            f"init_from={value}: {what} holds another architecture than this run's: {', '.join(differ)}. Set these "
            f"keys (or the backbone=/aggregator=/experiment= that gave them) as the stored run had them.{hint}"
        )
    if cfg.backbone.get("pretrained"):  # every weight comes from the file: download no backbone weights
        with open_dict(cfg):
            cfg.backbone.pretrained = False
    return path, weights


def load_init_weights(model: torch.nn.Module, path: Path, weights: dict[str, Any]) -> None:
    """Strict load of ``init_from``'s weights into the freshly built model: a missing, unexpected or
    misshapen tensor is a ConfigError that names it (never a silently partial start)."""
    differences = describe_differences(model.state_dict(), weights)
    if differences:
        raise ConfigError(f"init_from={path}: its weights do not fit the model this run built: {differences}")
    model.load_state_dict(weights, strict=True)
    log.info("new run initialised with the model weights of %s (no optimizer, schedule or epoch state)", path)


def prepare_resume(cfg: DictConfig) -> tuple[DictConfig, Path | None, dict[str, Any] | None]:
    """(the config to train with, the checkpoint path, its loaded state) before anything is built.
    No ``ckpt_path``: ``cfg`` unchanged and no state."""
    value = cfg.get("ckpt_path")
    if not value:
        return cfg, None, None
    ckpt_dir = Path(str(OmegaConf.select(cfg, "paths.output_dir"))) / "checkpoints" if str(value) == "auto" else Path(".")
    path, state = load_resume_checkpoint(value, ckpt_dir, map_location="cpu", allow_unsafe_pickle=bool(cfg.get("allow_unsafe_pickle")))
    if state is None:
        return cfg, None, None
    stored = state.get("config")
    if not isinstance(stored, dict):
        raise ConfigError(f"{path} holds no training configuration (not a checkpoint written by train.py); it cannot be resumed")
    if str(value) == "auto":
        _check_same_model(cfg, stored, path)
        return cfg, path, state
    return resume_config(cfg, stored, command_line_overrides()), path, state


def load_resume_checkpoint(
    value: Any, ckpt_dir: str | os.PathLike, map_location: str | torch.device = "cpu", *,
    allow_unsafe_pickle: bool = False,
) -> tuple[Path | None, dict[str, Any] | None]:
    """``ckpt_path``: null (start fresh), a file, or ``auto``. Returns (path, loaded checkpoint),
    or (None, None) to start from scratch.

    ``auto`` = this run folder's ``last.ckpt`` if there is one, so a requeued job with a fixed run
    folder continues and a first start begins fresh. If ``last.ckpt`` is missing or cannot be read
    but ``last.prev.ckpt`` can, it resumes from that one with a warning; if neither can be read it
    fails. An explicit file is loaded as it is (no fallback: the user chose it).
    ``allow_unsafe_pickle``: see :func:`vprlab.engine.checkpoint.load_checkpoint`.
    """
    load = partial(load_checkpoint, map_location=map_location, allow_unsafe_pickle=allow_unsafe_pickle)
    if not value:
        return None, None
    if str(value) != "auto":
        path = Path(str(value))
        return path, load(path)

    ckpt_dir = Path(ckpt_dir)
    last, previous = ckpt_dir / LAST, ckpt_dir / PREVIOUS
    if not last.is_file() and not previous.is_file():
        log.info("ckpt_path=auto: no checkpoint in %s yet, starting from scratch", ckpt_dir)
        return None, None
    if last.is_file():
        try:
            return last, load(last)
        except (RuntimeError, ValueError) as e:  # load_checkpoint's messages name the file
            problem = str(e)
    else:
        problem = f"{last} is missing (a crash between the renames of a checkpoint write)"
    if not previous.is_file():
        raise UnreadableFileError(
            f"ckpt_path=auto: {problem}, and there is no previous checkpoint {previous} to fall back to; "
            f"pass ckpt_path=<file> to resume from another checkpoint, or remove {last} to start from scratch"
        )
    try:
        state = load(previous)
    except (RuntimeError, ValueError) as e:
        raise UnreadableFileError(
            f"ckpt_path=auto: neither checkpoint is readable: {problem}; and {e} "
            f"Pass ckpt_path=<file> to resume from another checkpoint, or remove both to start from scratch"
        ) from e
    log.warning("ckpt_path=auto: %s; resuming from the previous checkpoint %s instead (one checkpoint interval older)", problem, previous)
    return previous, state


def restore_training_state(
    path: Path, state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scaler: Any, checkpointer: Checkpointer,
) -> tuple[int, int, list[dict[str, Any]]]:
    """Put a freshly built run back where the checkpoint ``state`` (read from ``path`` by
    :func:`prepare_resume`) stopped: model, optimizer and scaler state, the checkpointer's best metric and
    top-k files, and the RNG streams. Returns (epoch, step, history) to continue the loop from; every rank calls it."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    epoch, step = state["epoch"], state["step"]
    checkpointer.resume(path, state["best_metric"], state.get("top_checkpoints"))
    history = state.get("history", [])
    set_rng_state(state["rng"])
    log.info("resumed from %s at epoch %d, step %d", path, epoch, step)
    return epoch, step, history


def seek_sampler(sampler: Any, epoch: int, step: int, steps_per_epoch: int, batch_size: int) -> int:
    """At the start of ``epoch``: the sampler draws that epoch's order and skips the batches already trained
    (``step`` counts every step so far; more than ``epoch * steps_per_epoch`` only when a run resumes
    mid-epoch). Returns the steps of this epoch already done (0 unless resuming mid-epoch)."""
    done_in_epoch = step - epoch * steps_per_epoch
    sampler.set_epoch(epoch)
    sampler.set_start(done_in_epoch * batch_size)
    return done_in_epoch
