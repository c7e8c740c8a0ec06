"""The released BoQ models by name: architecture, release file, URL and evaluation size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vprlab.models.aggregators.boq import BoQ
from vprlab.models.backbones.dinov2 import DINOV2_MODELS, DinoV2Backbone
from vprlab.models.backbones.resnet import ResNetBackbone
from vprlab.models.vpr_model import VPRModel

RELEASE_URL = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/{file_name}"


# ------------------------------------------------------------------------------------ architecture


@dataclass(frozen=True)
class BoQArchitecture:
    """Everything needed to rebuild a backbone + BoQ model whose weights come from a file."""

    backbone: str  # a torchvision ResNet name or a timm DINOv2 name (DINOV2_MODELS)
    in_channels: int
    proj_channels: int
    num_queries: int = 64
    num_layers: int = 2
    row_dim: int = 32
    crop_last_block: bool = True  # ResNets only
    eval_image_size: tuple[int, int] | None = None  # None: the backbone's default (384 / 322)

    @property
    def is_dinov2(self) -> bool:
        return self.backbone in DINOV2_MODELS

    @property
    def descriptor_dim(self) -> int:
        return self.proj_channels * self.row_dim

    def describe(self) -> str:
        crop = "" if self.is_dinov2 or self.crop_last_block else ", layer4 kept"
        return (
            f"{self.backbone}{crop} + BoQ(in {self.in_channels}, proj {self.proj_channels}, "
            f"{self.num_queries} queries, {self.num_layers} layers, row_dim {self.row_dim}) -> {self.descriptor_dim}-d"
        )

    def build(self, model_class: type[VPRModel] = VPRModel) -> VPRModel:
        """The model with random weights; never downloads anything."""
        sizes = {} if self.eval_image_size is None else {"eval_image_size": self.eval_image_size}
        if self.is_dinov2:
            backbone = DinoV2Backbone(self.backbone, pretrained=False, num_trainable_blocks=2, **sizes)
        else:
            backbone = ResNetBackbone(
                self.backbone, pretrained=False, crop_last_block=self.crop_last_block, num_trainable_blocks=2, **sizes
            )
        aggregator = BoQ(backbone.out_channels, self.proj_channels, self.num_queries, self.num_layers, self.row_dim)
        return model_class(backbone, aggregator)


@dataclass(frozen=True)
class ReleasedModel:
    """One published checkpoint: where it lives, what it is, and which paper rows it reproduces."""

    name: str  # our name, also the conf/pretrained option
    hub_backbone: str  # backbone_name in get_trained_boq
    file_name: str
    paper_model: str  # the model column of the paper results
    architecture: BoQArchitecture

    @property
    def url(self) -> str:
        return RELEASE_URL.format(file_name=self.file_name)

    @property
    def descriptor_dim(self) -> int:
        return self.architecture.descriptor_dim


RELEASED_MODELS: dict[str, ReleasedModel] = {
    model.name: model
    for model in (
        ReleasedModel(
            "boq_resnet50_16384", "resnet50", "resnet50_16384.pth", "boq_resnet50",
            BoQArchitecture("resnet50", in_channels=1024, proj_channels=512, eval_image_size=(384, 384)),
        ),
        ReleasedModel(
            "boq_dinov2_12288", "dinov2", "dinov2_12288.pth", "boq_dinov2",
            BoQArchitecture("vit_base_patch14_dinov2", in_channels=768, proj_channels=384, eval_image_size=(322, 322)),
        ),
    )
}
# Other spellings people use for the same files: the release file stems and the paper's model names.
_ALIASES = {alias: model.name for model in RELEASED_MODELS.values() for alias in (Path(model.file_name).stem, model.paper_model)}


def released_model(name: str) -> ReleasedModel:
    """The released model called ``name`` (``boq_resnet50_16384``, ``resnet50_16384``, ``boq_resnet50``...)."""
    key = _ALIASES.get(name, name)
    if key not in RELEASED_MODELS:
        raise ConfigError(f"unknown released model {name!r}; choose one of {sorted(RELEASED_MODELS)}")
    return RELEASED_MODELS[key]


class HubBoQModel(VPRModel):
    """What ``get_trained_boq`` returns: ``model(x)`` gives ``(descriptors, attention maps)`` like the
    original hub model; state-dict keys are the release's."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:  # type: ignore[override]
        return self.forward_with_attention(x)


# ------------------------------------------------------------------------------------ every published model
#
# The interface every family plugs in through (fixed; other branches rely on it). A family lives in
# ``vprlab/pretrained/families/<family>.py`` and provides, named by a dotted "module:function" path
# in its entries (imported only when used):
#   build(entry) -> VPRModel                            random weights, never downloads
#   convert(raw: dict[str, Tensor], entry) -> dict      release keys -> the model's own state-dict keys
#                                                       (explicit mapping; ValueError naming unmapped /
#                                                       missing keys); None: the keys already are ours
#   read(path) -> dict[str, Tensor]                     only for container "matlab" (NetVLAD)
#   configs(entry) -> (backbone cfg, aggregator cfg)    optional: ``_target_`` dicts building the same
#                                                       model from zoo components, for fine-tuning
#   export(state, entry) -> dict                        optional: our state dict -> the release's keys
#                                                       (the inverse of convert), to write fine-tuned
#                                                       weights in the released layout
# ``entry.options`` carries the family's sizes (e.g. {"backbone": "resnet50", "fc_dim": 2048}).

from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import field  # noqa: E402
from importlib import import_module  # noqa: E402
from typing import Any  # noqa: E402

from vprlab.data.transforms import EvalPreprocessing  # noqa: E402
from vprlab.utils.errors import ConfigError

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
class PublishedModel:
    """One released file of a published VPR method, and how vprlab rebuilds, loads and evaluates it."""

    name: str  # <method>_<backbone>_<dim>: our name, also the conf/pretrained option
    method: str  # "CosPlace", "MixVPR"...
    paper: str  # authors, venue, year
    backbone: str  # as the method names it: "ResNet50", "VGG16", "DINOv2 ViT-B/14"
    descriptor_dim: int
    file_name: str  # the release's file name (also the name in the local cache)
    url: str | None  # direct download URL; None: cannot be fetched by URL (see ``manual_download``)
    container: str  # "torch" (bare state dict, torch.save), "safetensors" or "matlab"
    preprocessing: EvalPreprocessing  # the method's own evaluation preprocessing
    build: str  # "module:function", build(entry) -> VPRModel with random weights
    convert: str | None = None  # "module:function", convert(raw, entry) -> our state dict; None: identity
    read: str | None = None  # "module:function", read(path) -> raw dict; needed for container "matlab"
    configs: str | None = None  # "module:function", configs(entry) -> (backbone cfg, aggregator cfg): fine-tuning
    export: str | None = None  # "module:function", export(state, entry) -> release-layout dict (inverse of convert)
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    cache_dir: str = "checkpoints"  # sub-folder of the torch hub dir holding the file
    manual_download: str | None = None  # where to get a file that has no URL (e.g. a Google Drive id)
    note: str = ""  # e.g. "the file may not exist"
    repo: str = ""  # the original code
    protocols: Mapping[str, EvalPreprocessing] = field(default_factory=dict, hash=False, compare=False)  # other named eval protocols
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise ConfigError(f"{self.name}: container={self.container!r}; use one of {CONTAINERS}")
        if self.container == "matlab" and self.read is None:
            raise ConfigError(f"{self.name}: a matlab file needs a read= function")

    @property
    def download_name(self) -> str:
        """The name of the file as its URL serves it (what a user who fetches it by hand gets): for most
        releases ``file_name``; NetVLAD's URL serves ``Pitts30K_struct.mat``, cached as hloc names it."""
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if self.url else self.file_name

    def local_path(self) -> Path:
        """Where the file lives once downloaded: ``<torch hub dir>/<cache_dir>/<file_name>``."""
        return Path(torch.hub.get_dir()) / self.cache_dir / self.file_name

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


def register(*entries: PublishedModel) -> None:
    """Add entries to :data:`PUBLISHED_MODELS` (a family module may call this for extra files)."""
    for entry in entries:
        if entry.name in _PUBLISHED and _PUBLISHED[entry.name] != entry:
            raise ConfigError(f"published model {entry.name!r} is registered twice")
        _PUBLISHED[entry.name] = entry


PUBLISHED_MODELS: Mapping[str, PublishedModel] = _PUBLISHED
