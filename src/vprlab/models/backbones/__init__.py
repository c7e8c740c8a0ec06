"""Backbones: image batch [B, 3, H, W] -> feature map [B, out_channels, H/stride, W/stride]
(or ``(feature map, class token)`` for token models built with ``return_cls_token=True``).

Every backbone exposes ``out_channels``, ``stride`` (the patch size for ViTs), the input
normalisation it expects (``mean``, ``std``) and the image sizes it is meant for
(``train_image_size``, ``eval_image_size``).
"""

from vprlab.models.backbones.dinov2 import DinoV2Backbone, check_image_size
from vprlab.models.backbones.resnet import ResNetBackbone
from vprlab.models.backbones.timm_backbone import TimmBackbone
from vprlab.models.backbones.vgg import VGGBackbone

__all__ = ["DinoV2Backbone", "ResNetBackbone", "TimmBackbone", "VGGBackbone", "check_image_size"]
