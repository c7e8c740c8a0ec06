"""Torchvision VGG16 as a VPR backbone: ``features`` up to conv5_3, without its last ReLU and max-pool
(512 channels at stride 16), the crop NetVLAD and CosPlace's VGG16 models use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from vprlab.models.backbones._weights import download_failed, load_strict
from vprlab.models.spec import Backbone
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD, as_hw
from vprlab.utils.weights import load_state_dict_file

# torchvision's vgg16().features: conv1_1 (0) ... conv5_3 (28), then ReLU (29) and max-pool (30), dropped.
NUM_KEPT_LAYERS = 29
# Indices into the kept layers of each stage's convolutions (the pools between stages have no weights).
STAGE_CONVS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
# name -> (torchvision's layer configuration, ImageNet weights)
_VGGS = {"vgg16": ("D", torchvision.models.VGG16_Weights.IMAGENET1K_V1)}


def _vgg_features(config: str) -> nn.Sequential:
    """torchvision's VGG ``features`` alone (the 120M-parameter classifier is never built), initialised
    as torchvision initialises them (Kaiming normal, fan-out, zero biases)."""
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[config], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def _features_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``features.*`` entries of a torchvision VGG state dict, prefix removed (the classifier is
    not part of the backbone)."""
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


class VGGBackbone(Backbone):
    """VGG16's convolutional part up to conv5_3 (no final ReLU, no last max-pool): images
    [B, 3, H, W] -> [B, 512, H/16, W/16] (floor at each of the four max-pools).

    ``self.net`` is the first 29 modules of torchvision's ``vgg16().features``, so the state-dict keys
    are ``net.N.weight`` / ``net.N.bias`` with torchvision's indices N (0, 2, 5, ... 28).

    Freezing: the five conv stages count as blocks; ``num_trainable_blocks`` trains the last ones
    (default 1: conv5_1..conv5_3); 0 freezes everything, 5 trains everything.

    Input: images normalised with the ImageNet mean and std, like every backbone. ``pixel_mean``
    (three values on the 0-255 scale) switches to the input of the MatConvNet models (the NetVLAD
    release): the ImageNet normalisation is undone, the image clamped to [0, 1], scaled to 0-255 and
    the mean pixel subtracted (no division). The mean pixel is a buffer (``pixel_mean``), so it
    travels with the weights. Without it, the ImageNet-normalised input goes in as is (torchvision's
    ImageNet weights).

    Weights: ``weights_path`` (a torchvision ``vgg16`` state dict, classifier included or not) is
    loaded whenever it is given; otherwise ``pretrained=True`` downloads torchvision's IMAGENET1K_V1
    weights and ``pretrained=False`` keeps the random initialisation.
    """

    @classmethod
    def config_stride(cls, config) -> int:
        return 16

    def __init__(
        self,
        model_name: str = "vgg16",
        pretrained: bool = True,
        weights_path: str | Path | None = None,
        num_trainable_blocks: int = 1,
        pixel_mean: Sequence[float] | None = None,
        train_image_size: int | Sequence[int] | None = (320, 320),
        eval_image_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if model_name not in _VGGS:
            raise ValueError(f"unknown VGG model_name={model_name!r}; choose one of {sorted(_VGGS)}")
        config, imagenet_weights = _VGGS[model_name]
        features = _vgg_features(config)
        if weights_path is not None:  # a local file wins over downloading
            what = f"a torchvision {model_name} state dict (features.*; a classifier is ignored)"
            state = load_state_dict_file(weights_path, what)
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            if any(not k.startswith("features.") for k in state):
                raise ValueError(
                    f"backbone.weights_path={str(weights_path)!r} does not match {what}: keys outside features.* "
                    f"({sorted(k for k in state if not k.startswith('features.'))[:5]})"
                )
            load_strict(features, _features_only(state), weights_path, what)
        elif pretrained:
            try:
                state = imagenet_weights.get_state_dict(progress=True, check_hash=True)
            except Exception as err:  # no network, proxy, corrupt cache...
                raise download_failed(model_name, err, f"{model_name}.pth") from err
            features.load_state_dict(_features_only(state))
        self.net = nn.Sequential(*list(features.children())[:NUM_KEPT_LAYERS])

        self.model_name = model_name
        self.out_channels: int = self.net[STAGE_CONVS[-1][-1]].out_channels
        self.stride: int = 16
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.train_image_size = None if train_image_size is None else as_hw(train_image_size, "train_image_size")
        self.eval_image_size = None if eval_image_size is None else as_hw(eval_image_size, "eval_image_size")
        if pixel_mean is not None:
            values = [float(v) for v in pixel_mean]
            if len(values) != 3:
                raise ValueError(f"backbone.pixel_mean must hold 3 values (R, G, B on 0-255), got {list(pixel_mean)}")
            self.register_buffer("pixel_mean", torch.tensor(values))
        else:
            self.pixel_mean = None

        if not 0 <= num_trainable_blocks <= len(STAGE_CONVS):
            raise ValueError(
                f"num_trainable_blocks={num_trainable_blocks} is out of range for {model_name}; use "
                f"0..{len(STAGE_CONVS)} (blocks: conv1, conv2, conv3, conv4, conv5)"
            )
        self.num_trainable_blocks = num_trainable_blocks
        for stage in STAGE_CONVS[: len(STAGE_CONVS) - num_trainable_blocks]:
            for index in stage:
                self.net[index].requires_grad_(False)

    def matconvnet_input(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images -> the 0-255, mean-pixel-subtracted input of the MatConvNet models."""
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        pixels = (x * std + mean).clamp(0.0, 1.0) * 255.0
        return pixels - self.pixel_mean.to(pixels.dtype).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixel_mean is not None:
            x = self.matconvnet_input(x)
        return self.net(x)
