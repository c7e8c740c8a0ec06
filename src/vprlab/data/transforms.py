"""Image transforms for training and evaluation.

Training follows the original BoQ code: uint8 tensors through torchvision v2 (resize, RandAugment),
float conversion and normalisation last (on the training device, see :func:`train_transform`).

Evaluation follows the BoQ release: the image becomes a tensor first and is then
resized with bicubic interpolation *and antialiasing*. Published recalls depend on
this order (a PIL resize or a resize without antialiasing shifts R@1 by a point or
more at large downscaling factors), so keep it when adding variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.v2 as T2
from PIL import Image
from torchvision.transforms import InterpolationMode

from vprlab.data.augment import RecipeRandAugment
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD, ImageSize, as_hw

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "DeviceNormalize", "EvalPreprocessing", "ImageSize", "RoundToMultiple", "CropToMultiple", "ToUint8",
    "as_hw", "eval_transform", "train_transform",
]


def train_transform(
    image_size: ImageSize,
    randaugment_ops: int = 3,
    randaugment_magnitude: int = 15,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
    interpolation: str = "bicubic",
) -> T2.Compose:
    """Training image (PIL image or uint8 tensor [3, H, W]) -> the recipe's training image.

    The original's steps (Bag-of-Queries ``datamodule.py``) on uint8 tensors: torchvision v2
    ``Resize`` with antialiasing, ``RandAugment(ops, magnitude, bilinear)``
    (:class:`~vprlab.data.augment.RecipeRandAugment`: the same draws and pixels, faster), then
    ``ToDtype(float32, scale=True)`` and ``Normalize``. ``interpolation``: the resize's, "bicubic"
    (BoQ, OpenVPRLab) or "bilinear" (MixVPR, GSV-Cities, SALAD, which resize PIL images; torchvision's
    antialiased tensor resize follows PIL's filter to within a grey level); RandAugment's own is bilinear
    in all of them. ``normalize=False`` stops before the last two and returns uint8 [3, H, W]: the
    training loader does that, and the trainer converts and normalises each batch on the training
    device (:class:`DeviceNormalize`, the same numbers; a uint8 batch is 4x smaller to collate and
    copy). ``randaugment_ops=0`` disables RandAugment, whose randomness comes from torch's global RNG
    (``GSVCitiesDataset`` seeds it per place). Runs on whatever device the tensor is on.
    """
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"dataset.interpolation={interpolation!r}; use one of {sorted(_INTERPOLATIONS)}")
    steps: list = [ToUint8(), T2.Resize(as_hw(image_size), interpolation=_INTERPOLATIONS[interpolation], antialias=True)]
    if randaugment_ops > 0:
        steps.append(
            RecipeRandAugment(
                num_ops=randaugment_ops,
                magnitude=randaugment_magnitude,
                interpolation=InterpolationMode.BILINEAR,
            )
        )
    if normalize:
        steps.append(DeviceNormalize(mean, std))
    return T2.Compose(steps)


class ToUint8(torch.nn.Module):
    """PIL image -> uint8 RGB [3, H, W] (a view of its pixels, channels last in memory, as
    torchvision's resize returns them); a tensor passes unchanged."""

    def forward(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return image
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)

    def __repr__(self) -> str:
        return "ToUint8()"


class DeviceNormalize(torch.nn.Module):
    """uint8 images [..., 3, H, W] -> float32 ``(x / 255 - mean) / std``: torchvision v2
    ``ToDtype(float32, scale=True)`` then ``Normalize``, the last steps of the recipe's train
    transform, run where the batch is (the trainer calls it after ``.to(device)``). A float
    tensor is taken as already normalised (a custom transform) and passes unchanged, so a batch
    is normalised exactly once."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        return T2.functional.normalize(T2.functional.to_dtype(images, torch.float32, scale=True), self.mean, self.std)

    def __repr__(self) -> str:
        return f"DeviceNormalize(mean={self.mean}, std={self.std})"


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


# ------------------------------------------------------------------------ published models' preprocessing

_INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
_STAGES = ("pil", "tensor", "normalized")


class RoundToMultiple(torch.nn.Module):
    """Resize a tensor image [3, H, W] so that each side is the nearest multiple of ``multiple``
    (``round(side / multiple) * multiple``); a side that already is one is kept, and an image whose
    sides both are is returned unchanged. Used after normalisation, as VPR-methods-evaluation's
    ``ResizingWrapper`` and MegaLoc's forward do for DINOv2 models (patch 14)."""

    def __init__(self, multiple: int, interpolation: str = "bilinear", antialias: bool = True) -> None:
        super().__init__()
        self.multiple, self.interpolation, self.antialias = int(multiple), interpolation, bool(antialias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        size = [max(self.multiple, round(side / self.multiple) * self.multiple) for side in (height, width)]
        if (height, width) == tuple(size):
            return image
        return T.functional.resize(image, size, interpolation=_INTERPOLATIONS[self.interpolation], antialias=self.antialias)

    def __repr__(self) -> str:
        return f"RoundToMultiple(multiple={self.multiple}, interpolation={self.interpolation}, antialias={self.antialias})"


class CropToMultiple(torch.nn.Module):
    """Centre-crop a tensor image [3, H, W] to the largest multiples of ``multiple`` that fit
    (``side // multiple * multiple``; torchvision's ``center_crop``, which puts the odd pixel of a
    difference at the bottom / right). AnyLoc's evaluation code does this for DINOv2 (patch 14)."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = int(multiple)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        size = [side // self.multiple * self.multiple for side in (height, width)]
        if min(size) < self.multiple:
            raise ValueError(f"image of {height}x{width} pixels is smaller than {self.multiple} on a side; nothing to crop to")
        return image if [height, width] == size else T.functional.center_crop(image, size)

    def __repr__(self) -> str:
        return f"CropToMultiple(multiple={self.multiple})"


@dataclass(frozen=True)
class EvalPreprocessing:
    """How a published method prepares an evaluation image (PIL image -> normalised tensor [3, H, W]).

    - ``size``: (H, W) to resize to; None keeps the image at its native size (CosPlace, EigenPlaces,
      NetVLAD, MegaLoc), so a batch may hold images of several sizes (evaluation groups them).
    - ``interpolation``: "bilinear" or "bicubic"; ``antialias``: for tensor resizes (PIL always filters).
    - ``stage``: where the resize happens: "pil" (on the PIL image, before ToTensor: MixVPR, Conv-AP,
      SALAD validation code), "tensor" (after ToTensor, before normalisation: BoQ) or "normalized"
      (on the normalised tensor: VPR-methods-evaluation's model wrappers).
    - ``multiple_of``: after normalisation, round each side to the nearest multiple (DINOv2 patch 14),
      bilinear and antialiased; sides that already are multiples are kept.
    - ``crop_multiple_of``: last, centre-crop each side down to a multiple (AnyLoc's code, patch 14).
    """

    size: tuple[int, int] | None = None
    interpolation: str = "bicubic"
    antialias: bool = True
    stage: str = "tensor"
    multiple_of: int | None = None
    crop_multiple_of: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", as_hw(self.size))
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r}; use one of {sorted(_INTERPOLATIONS)}")
        if self.stage not in _STAGES:
            raise ValueError(f"stage={self.stage!r}; use one of {list(_STAGES)}")

    def resized(self, size: ImageSize | None) -> "EvalPreprocessing":
        """The same preprocessing at another size (None: native size)."""
        return replace(self, size=None if size is None else as_hw(size))

    def describe(self) -> str:
        """E.g. ``native size``, ``320x320 PIL bilinear``, ``322x322 tensor bicubic antialiased``."""
        if self.size is None:
            text = "native size"
        else:
            where = {"pil": "PIL", "tensor": "tensor", "normalized": "tensor after normalisation"}[self.stage]
            aa = " antialiased" if self.antialias and self.stage != "pil" else ""
            text = f"{self.size[0]}x{self.size[1]} {where} {self.interpolation}{aa}"
        if self.multiple_of:
            text += f", sides rounded to multiples of {self.multiple_of}"
        if self.crop_multiple_of:
            text += f", centre-cropped to multiples of {self.crop_multiple_of}"
        return text

    def transform(self) -> T.Compose:
        """The transform (its repr names every step, so the descriptor cache keys on it)."""
        steps: list = []
        resize = None
        if self.size is not None:
            resize = T.Resize(self.size, interpolation=_INTERPOLATIONS[self.interpolation], antialias=self.antialias)
        if resize is not None and self.stage == "pil":
            steps.append(resize)
        steps.append(T.ToTensor())
        if resize is not None and self.stage == "tensor":
            steps.append(resize)
        steps.append(T.Normalize(mean=list(self.mean), std=list(self.std)))
        if resize is not None and self.stage == "normalized":
            steps.append(resize)
        if self.multiple_of:
            steps.append(RoundToMultiple(self.multiple_of))
        if self.crop_multiple_of:
            steps.append(CropToMultiple(self.crop_multiple_of))
        return T.Compose(steps)
