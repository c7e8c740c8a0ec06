"""EigenPlaces (Berton et al., ICCV 2023): the CosPlace network (ResNet or VGG16 + CosPlace head)
trained otherwise, released in CosPlace's layout; built, converted and exported by :mod:`.cosplace`."""

from __future__ import annotations

from vprlab.pretrained.families.cosplace import cosplace_like
from vprlab.pretrained.registry import register

_RELEASED = {"VGG16": (512,), "ResNet18": (256, 512), "ResNet50": (128, 256, 512, 1024, 2048), "ResNet101": (128, 256, 512, 1024, 2048)}
for _backbone, _dims in _RELEASED.items():
    register(*(cosplace_like("EigenPlaces", _backbone, d) for d in _dims))
