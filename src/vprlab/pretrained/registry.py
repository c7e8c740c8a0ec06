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
        raise ValueError(f"unknown released model {name!r}; choose one of {sorted(RELEASED_MODELS)}")
    return RELEASED_MODELS[key]


class HubBoQModel(VPRModel):
    """What ``get_trained_boq`` returns: ``model(x)`` gives ``(descriptors, attention maps)`` like the
    original hub model; state-dict keys are the release's."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:  # type: ignore[override]
        return self.forward_with_attention(x)
