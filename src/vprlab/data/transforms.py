"""Image transforms for training and evaluation.

Evaluation follows the BoQ release: the image becomes a tensor first and is then
resized with bicubic interpolation *and antialiasing*. Published recalls depend on
this order (a PIL resize or a resize without antialiasing shifts R@1 by a point or
more at large downscaling factors), so keep it when adding variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD, ImageSize, as_hw

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageSize", "as_hw", "eval_transform", "train_transform"]


def train_transform(
    image_size: ImageSize,
    randaugment_ops: int = 3,
    randaugment_magnitude: int = 15,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    tensor_input: bool = False,
) -> T.Compose:
    """PIL image -> normalised float tensor [3, H, W]: bicubic resize, RandAugment, normalise.

    ``randaugment_ops=0`` disables RandAugment. Its randomness comes from torch's global
    RNG, which :class:`vprlab.data.gsv_cities.GSVCitiesDataset` seeds per item.
    ``tensor_input=True`` takes uint8 tensors [3, H, W] instead (the tensor decoders; it runs
    on whatever device the tensor is on), with an antialiased bicubic resize like PIL's.
    """
    steps: list = [T.Resize(as_hw(image_size), interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if randaugment_ops > 0:
        steps.append(
            T.RandAugment(
                num_ops=randaugment_ops,
                magnitude=randaugment_magnitude,
                interpolation=InterpolationMode.BILINEAR,
            )
        )
    to_float = T.ConvertImageDtype(torch.float32) if tensor_input else T.ToTensor()  # both divide by 255
    steps += [to_float, T.Normalize(mean=list(mean), std=list(std))]
    return T.Compose(steps)


def eval_transform(
    image_size: ImageSize,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """PIL image -> normalised float tensor [3, H, W]: ToTensor, bicubic antialiased resize, normalise."""
    return T.Compose(
        [
            T.ToTensor(),
            T.Resize(as_hw(image_size), interpolation=InterpolationMode.BICUBIC, antialias=True),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )
