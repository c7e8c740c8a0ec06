"""Torchvision ResNets / ResNeXt as VPR backbones (the BoQ / GSV-Cities recipe: layer4 cropped, early stages frozen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from vprlab.models.backbones._weights import download_failed, load_strict
from vprlab.models.spec import Backbone
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD, as_hw
from vprlab.utils.weights import load_state_dict_file

# name -> (constructor, ImageNet weights). IMAGENET1K_V1 is what BoQ and GSV-Cities trained from.
_RESNETS: dict[str, tuple[Callable[..., torchvision.models.ResNet], torchvision.models.WeightsEnum]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (torchvision.models.resnet152, torchvision.models.ResNet152_Weights.IMAGENET1K_V1),
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1),
}


class ResNetBackbone(Backbone):
    """A torchvision ResNet (18/34/50/101/152) or ResNeXt50-32x4d without pooling and classifier;
    returns the feature map [B, C, H/s, W/s].

    ``crop_last_block=True`` drops layer4: C = 256 (ResNet18/34) or 1024 (the others) at stride 16;
    ``False`` keeps it: 512 or 2048 channels at stride 32.

    ``self.net`` is ``nn.Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3[, layer4])`` so
    that the state-dict keys (``net.N.*``) are those of the released BoQ ResNet50 checkpoint.

    Freezing: the network is seen as the blocks ``[stem (conv1+bn1), layer1, layer2, layer3(, layer4)]``
    and ``num_trainable_blocks`` counts the trained ones from the end. The default 1 trains only the
    last kept stage (layer3 when layer4 is cropped), the default of BoQ's ResNet class
    (``unfreeze_n_blocks=1``) and of GSV-Cities/MixVPR (``layers_to_freeze=2``). BoQ's training script
    passes its shared default ``unfreeze_n_blocks=2`` instead, which here means 2: layer2 and layer3
    train. 0 freezes everything, ``len(blocks)`` trains everything, stem included.
    ``frozen_bn`` sets the mode of the frozen blocks' BatchNorm layers in ``model.train()``:

    - ``"eval"`` (vprlab's default): they normalise with the running statistics of the loaded weights
      and never update them, so a frozen stage computes the same function all through training;
    - ``"train"``: they follow the model's mode like every other layer, i.e. normalise each batch with
      its own statistics and update their running statistics (momentum 0.1) while their weights stay
      fixed. This is what the BoQ, OpenVPRLab, GSV-Cities, MixVPR code trains (it only sets
      ``requires_grad=False``); the presets that reproduce those recipes set it (docs/recipes.md).
    Freezing does not depend on ``pretrained``: a model built with ``pretrained=False`` and then
    loaded from a checkpoint trains the same parameters as one built from ImageNet weights.

    Weights: ``weights_path`` (a torchvision state dict of the full ResNet, fc included) is loaded
    whenever it is given, whatever ``pretrained`` says; otherwise ``pretrained=True`` downloads
    torchvision's IMAGENET1K_V1 weights (the ones BoQ started from) and ``pretrained=False`` keeps
    the random initialisation.

    ``train_image_size`` / ``eval_image_size`` are not used by the network (it takes any size); they
    record the input sizes the model is meant for (BoQ ResNet50: trained at 320, evaluated at 384),
    read by the training data pipeline and by evaluation when a benchmark sets no size.
    """

    @classmethod
    def config_stride(cls, config) -> int:
        return 16 if config.get("crop_last_block", True) else 32

    def __init__(
        self,
        model_name: str = "resnet50",
        pretrained: bool = True,
        weights_path: str | Path | None = None,
        crop_last_block: bool = True,
        num_trainable_blocks: int = 1,
        train_image_size: int | Sequence[int] | None = (320, 320),
        eval_image_size: int | Sequence[int] | None = (384, 384),
        frozen_bn: str = "eval",
    ) -> None:
        super().__init__()
        if frozen_bn not in ("eval", "train"):
            raise ValueError(
                f"backbone.frozen_bn={frozen_bn!r}: use eval (frozen BatchNorm keeps the loaded statistics) or "
                "train (it normalises with batch statistics and updates its running statistics, as the BoQ / MixVPR code)"
            )
        self.frozen_bn = frozen_bn
        if model_name not in _RESNETS:
            raise ValueError(f"unknown ResNet model_name={model_name!r}; choose one of {sorted(_RESNETS)}")
        constructor, imagenet_weights = _RESNETS[model_name]
        resnet = constructor(weights=None)
        if weights_path is not None:  # a local file wins over downloading
            what = f"a torchvision {model_name} state dict"
            load_strict(resnet, load_state_dict_file(weights_path, what), weights_path, what)
        elif pretrained:
            try:
                state = imagenet_weights.get_state_dict(progress=True, check_hash=True)
            except Exception as err:  # no network, proxy, corrupt cache...: all end the same way
                raise download_failed(model_name, err, f"{model_name}.pth") from err
            resnet.load_state_dict(state)

        self.model_name = model_name
        self.crop_last_block = crop_last_block
        stages = [resnet.layer1, resnet.layer2, resnet.layer3] + ([] if crop_last_block else [resnet.layer4])
        self.net = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, *stages)

        last_stage = stages[-1]
        last_block = last_stage[-1]
        last_conv = last_block.conv3 if hasattr(last_block, "conv3") else last_block.conv2
        self.out_channels: int = last_conv.out_channels
        self.stride: int = 16 if crop_last_block else 32
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.train_image_size = None if train_image_size is None else as_hw(train_image_size, "train_image_size")
        self.eval_image_size = None if eval_image_size is None else as_hw(eval_image_size, "eval_image_size")

        # Indices into self.net of each freezable block; relu/maxpool have no parameters.
        self._blocks: list[list[int]] = [[0, 1]] + [[4 + i] for i in range(len(stages))]
        if not 0 <= num_trainable_blocks <= len(self._blocks):
            raise ValueError(
                f"num_trainable_blocks={num_trainable_blocks} is out of range for {model_name} "
                f"(crop_last_block={crop_last_block}); use 0..{len(self._blocks)} "
                "(blocks: stem, layer1, layer2, layer3" + ("" if crop_last_block else ", layer4") + ")"
            )
        self.num_trainable_blocks = num_trainable_blocks
        for indices in self.frozen_block_indices():
            for index in indices:
                self.net[index].requires_grad_(False)
        self.train(self.training)  # puts the frozen BatchNorm layers in their mode right away

    def frozen_block_indices(self) -> list[list[int]]:
        """Indices into ``self.net`` of the frozen blocks (one list per block)."""
        return self._blocks[: len(self._blocks) - self.num_trainable_blocks]

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        if mode and self.frozen_bn == "eval":
            for indices in self.frozen_block_indices():
                for index in indices:
                    for module in self.net[index].modules():
                        if isinstance(module, nn.modules.batchnorm._BatchNorm):
                            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
