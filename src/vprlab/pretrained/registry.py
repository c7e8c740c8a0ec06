"""The one registry of published models (timm-like): each family module under
:mod:`vprlab.pretrained.families` describes its released files as :class:`PublishedModel` entries
(its ``default_cfgs``) and adds them with :func:`register` when it is imported;
:mod:`vprlab.pretrained.catalog` imports every family, so ``PUBLISHED_MODELS`` is complete as soon
as :mod:`vprlab.pretrained` is imported."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.vpr_model import VPRModel
from vprlab.utils.errors import ConfigError

# The interface every family plugs in through (fixed; other branches rely on it). A family lives in
# ``vprlab/pretrained/families/<method>.py``, registers its entries there and provides, named by a
# dotted "module:function" path in its entries (resolved only when used):
#   build(entry) -> VPRModel                            random weights, never downloads
#   convert(raw: dict[str, Tensor], entry) -> dict      release keys -> the model's own state-dict keys
#                                                       (explicit mapping, keymaps.map_keys; ValueError
#                                                       naming unmapped / missing keys); None: the keys
#                                                       already are ours
#   read(path) -> dict[str, Tensor]                     a file that is not a plain state dict: needed for
#                                                       container "matlab" (NetVLAD); also a torch file
#                                                       with more than tensors (AP-GeM's dirtorch pickle)
#                                                       or one tensor (AnyLoc's vocabulary); not used for
#                                                       a .safetensors file
#   configs(entry) -> (backbone cfg, aggregator cfg)    optional: ``_target_`` dicts building the same
#                                                       model from zoo components, for fine-tuning
#   export(state, entry) -> dict                        optional: our state dict -> the release's keys
#                                                       (the inverse of convert), to write fine-tuned
#                                                       weights in the released layout
#   check_sidecar(path, entry) -> None                  optional: check the files the release keeps next
#                                                       to its weights (e.g. a Hugging Face config.json)
#                                                       against the entry; ValueError naming what differs
# ``entry.options`` carries the family's sizes (e.g. {"backbone": "resnet50", "fc_dim": 2048}).
# A model whose weights come in more than one file (AnyLoc: its vocabulary + Meta's DINOv2 weights)
# lists the others as ``extra_files`` (:class:`ReleaseFile`); their tensors reach ``convert`` with
# the file's ``prefix`` in front of each key, next to those of the main file.

CONTAINERS = ("torch", "safetensors", "matlab")


def resolve_callable(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (imported now)."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ConfigError(f"{path!r} is not a 'package.module:function' path")
    try:
        return getattr(import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot import {path!r} ({type(err).__name__}: {err}); this vprlab lacks that model family") from err


@dataclass(frozen=True)
class ReleaseFile:
    """A further file a published model needs besides its main one (``PublishedModel.file_name``)."""

    file_name: str  # the name in the local cache (and what the URL serves)
    url: str | None  # direct download URL; None: ``manual_download`` says where to get it
    what: str  # what it holds, for messages: "DINOv2 ViT-G/14 weights (Meta)"
    prefix: str  # put in front of each of its keys before ``convert`` sees them: "dinov2."
    cache_dir: str = "checkpoints"  # sub-folder of the torch hub dir holding the file
    read: str | None = None  # "module:function", read(path) -> raw dict; None: a state dict (torch/safetensors)
    manual_download: str | None = None

    @property
    def download_name(self) -> str:
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if self.url else self.file_name

    def local_path(self) -> Path:
        """``<torch hub dir>/<cache_dir>/<file_name>``."""
        return Path(torch.hub.get_dir()) / self.cache_dir / self.file_name


@dataclass(frozen=True)
class PublishedModel:
    """One released file of a published VPR method, and how vprlab rebuilds, loads and evaluates it."""

    name: str  # <method>_<backbone>_<dim>: our name, also the conf/pretrained option
    method: str  # "BoQ", "CosPlace", "MixVPR"...
    paper: str  # authors, venue, year
    backbone: str  # as the method names it: "ResNet50", "VGG16", "DINOv2 ViT-B/14"
    descriptor_dim: int
    file_name: str  # the release's file name (also the name in the local cache)
    url: str | None  # direct download URL; None: cannot be fetched by URL (see ``manual_download``)
    container: str  # "torch" (bare state dict, torch.save), "safetensors" or "matlab"
    preprocessing: EvalPreprocessing  # the method's own evaluation preprocessing
    build: str  # "module:function", build(entry) -> VPRModel with random weights
    convert: str | None = None  # "module:function", convert(raw, entry) -> our state dict; None: identity
    read: str | None = None  # "module:function", read(path) -> raw dict; needed for container "matlab", used for any non-safetensors file
    configs: str | None = None  # "module:function", configs(entry) -> (backbone cfg, aggregator cfg): fine-tuning
    export: str | None = None  # "module:function", export(state, entry) -> release-layout dict (inverse of convert)
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    cache_dir: str = "checkpoints"  # sub-folder of the torch hub dir holding the file
    manual_download: str | None = None  # where to get a file that has no URL (e.g. a Google Drive id)
    note: str = ""  # e.g. "the file may not exist"
    repo: str = ""  # the original code
    protocols: Mapping[str, EvalPreprocessing] = field(default_factory=dict, hash=False, compare=False)  # other named eval protocols
    aliases: tuple[str, ...] = ()
    paper_model: str = ""  # the model column of the paper's results that this file reproduces (BoQ's)
    extra_files: tuple[ReleaseFile, ...] = ()  # further files the model needs (AnyLoc: the DINOv2 weights)
    check_sidecar: str | None = None  # "module:function", check_sidecar(weights path, entry): see above

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise ConfigError(f"{self.name}: container={self.container!r}; use one of {CONTAINERS}")
        if self.container == "matlab" and self.read is None:
            raise ConfigError(f"{self.name}: a matlab file needs a read= function")

    @property
    def architecture(self) -> Any:
        """``options["architecture"]``: the family's own description of the network where it keeps one
        (BoQ: a :class:`~vprlab.pretrained.families.boq.BoQArchitecture`, which a file's keys are also
        read back into), else None."""
        return self.options.get("architecture")

    @property
    def download_name(self) -> str:
        """The name of the file as its URL serves it (what a user who fetches it by hand gets): for most
        releases ``file_name``; NetVLAD's URL serves ``Pitts30K_struct.mat``, cached as hloc names it."""
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if self.url else self.file_name

    def local_path(self) -> Path:
        """Where the file lives once downloaded: ``<torch hub dir>/<cache_dir>/<file_name>``."""
        return Path(torch.hub.get_dir()) / self.cache_dir / self.file_name

    def files(self) -> tuple[ReleaseFile, ...]:
        """Every file the model needs: the main one (as a :class:`ReleaseFile`, prefix "") and ``extra_files``."""
        main = ReleaseFile(self.file_name, self.url, f"{self.method} release file", "", self.cache_dir,
                           self.read, self.manual_download)
        return (main, *self.extra_files)

    def eval_preprocessing(self, protocol: str | None = None) -> EvalPreprocessing:
        """The method's own preprocessing, or that of another named protocol (e.g. "vpr-methods-evaluation")."""
        if protocol in (None, "", "original"):
            return self.preprocessing
        if protocol not in self.protocols:
            raise ConfigError(f"{self.name}: unknown eval protocol {protocol!r}; choose 'original' or one of {sorted(self.protocols)}")
        return self.protocols[protocol]

    def build_model(self) -> VPRModel:
        """The architecture with random weights (never downloads)."""
        return resolve_callable(self.build)(self)


_PUBLISHED: dict[str, PublishedModel] = {}
_ALIASES: dict[str, str] = {}  # other spellings -> name (BoQ: the release file stems and the paper's model names)


def register(*entries: PublishedModel) -> None:
    """Add entries to :data:`PUBLISHED_MODELS` (each family module calls this for its files)."""
    for entry in entries:
        if entry.name in _PUBLISHED and _PUBLISHED[entry.name] != entry:
            raise ConfigError(f"published model {entry.name!r} is registered twice")
        _PUBLISHED[entry.name] = entry
        _ALIASES.update((alias, entry.name) for alias in entry.aliases)


PUBLISHED_MODELS: Mapping[str, PublishedModel] = _PUBLISHED


def published_model(name: str) -> PublishedModel:
    """The published model called ``name`` (also BoQ's aliases: ``resnet50_16384``, ``boq_dinov2``...)."""
    key = _ALIASES.get(name, name)
    if key not in PUBLISHED_MODELS:
        raise ConfigError(f"unknown published model {name!r}; `vprlab models list` shows them all: {', '.join(sorted(PUBLISHED_MODELS))}")
    return PUBLISHED_MODELS[key]


def is_published(name: str) -> bool:
    return str(name) in PUBLISHED_MODELS or str(name) in _ALIASES
