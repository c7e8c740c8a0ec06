"""Backbones: image batch [B, 3, H, W] -> feature map [B, out_channels, H/stride, W/stride]."""

from vprlab.models.backbones.dinov2 import DinoV2Backbone, check_image_size
from vprlab.models.backbones.resnet import ResNetBackbone

__all__ = ["DinoV2Backbone", "ResNetBackbone", "check_image_size"]
