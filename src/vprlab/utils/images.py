"""Image facts every layer shares: the ImageNet normalisation statistics (torchvision's ResNets
and DINOv2 were trained with them) and the one parser of image sizes."""

from __future__ import annotations

from collections.abc import Sequence

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageSize = int | Sequence[int]


def as_hw(image_size: ImageSize, name: str = "image_size") -> tuple[int, int]:
    """``320 -> (320, 320)``; ``(320, 240) -> (320, 240)`` as (height, width).

    An int means a square image, not "resize the shorter side" as in torchvision:
    VPR models are trained and evaluated at fixed (H, W).
    """
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]
