"""BoQ (Ali-bey et al., CVPR 2024): the two models of the v1.0 release of
github.com/amaralibey/Bag-of-Queries, ``ResNetBackbone("resnet50")`` / ``DinoV2Backbone`` + ``BoQ``.

The released files use vprlab's own keys, so the key mapping is the identity; other checkpoints of
the same models load through the explicit conversions of
:func:`vprlab.pretrained.layouts.to_release_layout` (vprlab / Lightning / OpenVPRLab). A BoQ file
describes its architecture (:func:`infer_architecture`), so a file exported by ``vprlab models
export`` loads by path too, and ``get_trained_boq`` (:mod:`vprlab.pretrained.hub`) serves the
releases by backbone and size (``options["hub_backbone"]``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vprlab.data.transforms import EvalPreprocessing
from vprlab.models.aggregators.boq import BoQ
from vprlab.models.backbones.dinov2 import DINOV2_MODELS, DinoV2Backbone
from vprlab.models.backbones.resnet import ResNetBackbone
from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.families._common import FAMILIES_MODULE, Configs
from vprlab.pretrained.keymaps import list_keys
from vprlab.pretrained.layouts import to_release_layout
from vprlab.pretrained.registry import PUBLISHED_MODELS, PublishedModel, published_model, register
from vprlab.utils.errors import ConfigError

log = logging.getLogger(__name__)
_HERE = f"{FAMILIES_MODULE}.boq"
RELEASE_URL = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/{file_name}"


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


class HubBoQModel(VPRModel):
    """What ``get_trained_boq`` returns: ``model(x)`` gives ``(descriptors, attention maps)`` like the
    original hub model; state-dict keys are the release's."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:  # type: ignore[override]
        return self.forward_with_attention(x)


# ------------------------------------------------------------------------------------ family functions


def build_boq(entry: PublishedModel) -> VPRModel:
    return entry.architecture.build()


def configs_boq(entry: PublishedModel) -> Configs:
    """The zoo configs of the released BoQ architecture (what :func:`build_boq` builds), trained as the
    BoQ recipes do (2 trainable blocks; ResNet50 at 320x320, DINOv2 at 280x280)."""
    arch = entry.architecture
    sizes = {"eval_image_size": list(arch.eval_image_size or ())}
    if arch.is_dinov2:
        backbone = {"_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "model_name": arch.backbone,
                    "pretrained": False, "weights_path": None, "num_trainable_blocks": 2, "train_image_size": [280, 280], **sizes}
    else:
        backbone = {"_target_": "vprlab.models.backbones.resnet.ResNetBackbone", "model_name": arch.backbone,
                    "pretrained": False, "weights_path": None, "crop_last_block": arch.crop_last_block,
                    "num_trainable_blocks": 2, "train_image_size": [320, 320], **sizes}
    aggregator = {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": arch.proj_channels,
                  "num_queries": arch.num_queries, "num_layers": arch.num_layers, "row_dim": arch.row_dim}
    return backbone, aggregator


def convert_boq(raw: Mapping[str, torch.Tensor], entry: PublishedModel | None = None) -> dict[str, torch.Tensor]:
    """The release uses our keys; other checkpoints of the model go through the explicit conversions of
    :func:`~vprlab.pretrained.layouts.to_release_layout` (each one logged)."""
    state, notes = to_release_layout(raw)
    for note in notes:
        log.info("%s: %s", getattr(entry, "name", "BoQ"), note)
    return state


def export_boq(state: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    """The release uses our keys: the state dict as it is."""
    return dict(state)


def _block_count(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


# (bottleneck blocks?, blocks in layer3) -> torchvision model
_RESNET_BY_LAYER3 = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101", (True, 36): "resnet152"}
_DINOV2_BY_WIDTH = {384: "vit_small_patch14_dinov2", 768: "vit_base_patch14_dinov2", 1024: "vit_large_patch14_dinov2", 1536: "vit_giant_patch14_dinov2"}


def infer_architecture(state: Mapping[str, torch.Tensor], source: str = "the state dict") -> BoQArchitecture:
    """Read the backbone and BoQ sizes off a release-layout state dict (see :func:`to_release_layout`)."""
    if "aggregator.proj_c.weight" not in state or "aggregator.fc.weight" not in state:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in state if k.startswith("aggregator.")})
        raise ConfigError(f"{source} is not a BoQ model: no aggregator.proj_c / aggregator.fc weights (aggregator keys: {list_keys(prefixes) or 'none'})")
    if "backbone.net.0.weight" in state:
        bottleneck = "backbone.net.4.0.conv3.weight" in state
        layer3_blocks = _block_count(state, "backbone.net.6.")
        backbone = _RESNET_BY_LAYER3.get((bottleneck, layer3_blocks))
        if backbone is None:
            raise ConfigError(f"{source}: a ResNet with {layer3_blocks} blocks in layer3 (bottleneck={bottleneck}) is not a torchvision ResNet18/34/50/101/152")
        crop_last_block = "backbone.net.7.0.conv1.weight" not in state
    elif "backbone.dino.pos_embed" in state:
        width = int(state["backbone.dino.pos_embed"].shape[-1])
        if width not in _DINOV2_BY_WIDTH:
            raise ConfigError(f"{source}: DINOv2 width {width} is none of {sorted(_DINOV2_BY_WIDTH)}")
        backbone, crop_last_block = _DINOV2_BY_WIDTH[width], True
    else:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in state if not k.startswith("aggregator.")})
        raise ConfigError(
            f"cannot tell the backbone of {source}: expected backbone.net.* (ResNet), backbone.dino.* (DINOv2) or "
            f"OpenVPRLab's backbone.frozen_layers/unfrozen_layers.*; found {list_keys(prefixes)}"
        )
    proj_channels, in_channels = (int(v) for v in state["aggregator.proj_c.weight"].shape[:2])
    num_layers = _block_count(state, "aggregator.boqs.")
    if num_layers == 0 or "aggregator.boqs.0.queries" not in state:
        raise ConfigError(f"{source} is not a BoQ model: no aggregator.boqs.0.queries")
    return BoQArchitecture(
        backbone=backbone,
        in_channels=in_channels,
        proj_channels=proj_channels,
        num_queries=int(state["aggregator.boqs.0.queries"].shape[1]),
        num_layers=num_layers,
        row_dim=int(state["aggregator.fc.weight"].shape[0]),
        crop_last_block=crop_last_block,
    )


def published_architecture(architecture: BoQArchitecture) -> BoQArchitecture:
    """A released architecture read off a file keeps the eval size it was published with."""
    from dataclasses import replace

    for spec in RELEASED_MODELS.values():
        if replace(architecture, eval_image_size=spec.architecture.eval_image_size) == spec.architecture:
            return spec.architecture
    return architecture


def hub_backbone_name(architecture: BoQArchitecture) -> str:
    """``backbone_name`` of ``get_trained_boq`` for an architecture ("resnet50", "dinov2"...)."""
    return "dinov2" if architecture.backbone == "vit_base_patch14_dinov2" else architecture.backbone


# ------------------------------------------------------------------------------------------ releases

_PAPER = "Ali-bey et al., CVPR 2024"
for _name, _file, _paper_model, _arch in (
    ("boq_resnet50_16384", "resnet50_16384.pth", "boq_resnet50",
     BoQArchitecture("resnet50", in_channels=1024, proj_channels=512, eval_image_size=(384, 384))),
    ("boq_dinov2_12288", "dinov2_12288.pth", "boq_dinov2",
     BoQArchitecture("vit_base_patch14_dinov2", in_channels=768, proj_channels=384, eval_image_size=(322, 322))),
):
    register(PublishedModel(
        name=_name, method="BoQ", paper=_PAPER, backbone="DINOv2 ViT-B/14" if _arch.is_dinov2 else "ResNet50",
        descriptor_dim=_arch.descriptor_dim, file_name=_file, url=RELEASE_URL.format(file_name=_file), container="torch",
        preprocessing=EvalPreprocessing(_arch.eval_image_size, "bicubic", antialias=True, stage="tensor"),
        build=f"{_HERE}:build_boq", convert=f"{_HERE}:convert_boq", configs=f"{_HERE}:configs_boq",
        export=f"{_HERE}:export_boq", options={"architecture": _arch, "hub_backbone": hub_backbone_name(_arch)},
        repo="amaralibey/Bag-of-Queries", aliases=(Path(_file).stem, _paper_model), paper_model=_paper_model,
    ))

RELEASED_MODELS: Mapping[str, PublishedModel] = {name: e for name, e in PUBLISHED_MODELS.items() if e.method == "BoQ"}
"""The BoQ entries of :data:`~vprlab.pretrained.registry.PUBLISHED_MODELS` (the same objects)."""


def released_model(name: str) -> PublishedModel:
    """The BoQ release called ``name`` (``boq_resnet50_16384``, ``resnet50_16384``, ``boq_resnet50``...)."""
    try:
        entry = published_model(name)
    except ValueError:
        entry = None
    if entry is None or entry.name not in RELEASED_MODELS:
        raise ConfigError(f"unknown released model {name!r}; choose one of {sorted(RELEASED_MODELS)}")
    return entry
