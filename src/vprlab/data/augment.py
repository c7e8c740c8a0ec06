"""RandAugment as the BoQ recipe computes it, with faster kernels for uint8 images.

The original training code (Bag-of-Queries ``src/dataloaders/datamodule.py``) runs torchvision v2
``RandAugment(num_ops=3, magnitude=15, interpolation=BILINEAR)`` on uint8 tensors after the resize.
:class:`RecipeRandAugment` *is* that transform: the same draws from torch's RNG (operation, then
the sign of a signed magnitude, per operation), the same magnitudes, and for a uint8 RGB tensor
the same pixels, bit for bit (``tests/data/test_data_augment.py`` checks every operation against
torchvision's kernel). What differs is how some operations compute them:

- the point operations (Brightness, Contrast, Solarize, AutoContrast, Equalize) map each
  channel through a 256-entry table computed with torchvision's own arithmetic, applied by PIL;
- Sharpness sums the 3x3 neighbourhood in integers (the rounded blur equals torchvision's float
  convolution rounded: a sum of integers / 13 is never within float error of a .5 tie);
- TranslateX/Y move by a whole number of pixels (torchvision rounds the offset to an int), so
  they are a shifted copy with zero fill instead of a bilinear resampling;
- ShearX/Y and Rotate call torchvision's own grid functions, but build each sampling grid once
  per (operation, magnitude, image size): RandAugment's magnitude is fixed, so there are six;
- Color and Posterize (already fast) use torchvision's kernels unchanged.

On one core this makes the augmentation about twice as fast as torchvision's (which is the input
pipeline's largest cost at 320x320). Any other input (a PIL image, a float tensor, a fill value)
goes through torchvision's kernels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2 as T2
from PIL import Image
from torchvision.transforms.v2.functional import rgb_to_grayscale

_LEVELS = torch.arange(256, dtype=torch.float32)


def apply_lut(image: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] through a per-channel table ``lut`` uint8 [3, 256] (or [256] for all three);
    returns uint8 [3, H, W] with channels-last memory, as torchvision's resize gives."""
    if lut.dim() == 1:
        lut = lut.expand(3, 256)
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    out = Image.fromarray(hwc, "RGB").point(lut.reshape(-1).tolist())
    return torch.from_numpy(np.array(out)).permute(2, 0, 1)


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return values.clamp_(0, 255).to(torch.uint8)


def _brightness(image: torch.Tensor, magnitude: float) -> torch.Tensor:
    return apply_lut(image, _to_uint8(_LEVELS.mul(1.0 + magnitude)))


def _contrast(image: torch.Tensor, magnitude: float) -> torch.Tensor:
    # torchvision: blend with the mean of the floored grayscale image (a float scalar).
    mean = rgb_to_grayscale(image).to(torch.float32).mean()  # uint8 grayscale == floored float grayscale
    ratio = 1.0 + magnitude
    return apply_lut(image, _to_uint8(_LEVELS.mul(ratio).add_(mean.expand(256), alpha=1.0 - ratio)))


def _solarize(image: torch.Tensor, magnitude: float) -> torch.Tensor:
    threshold = 255.0 * magnitude
    levels = torch.arange(256, dtype=torch.uint8)
    return apply_lut(image, torch.where(levels >= threshold, 255 - levels, levels))


def _histograms(image: torch.Tensor) -> torch.Tensor:
    """int64 [3, 256]: each channel's histogram."""
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    return torch.tensor(Image.fromarray(hwc, "RGB").histogram(), dtype=torch.int64).view(3, 256)


def _autocontrast(image: torch.Tensor, magnitude: float) -> torch.Tensor:
    hist = _histograms(image)
    present = hist > 0
    minimum = present.to(torch.uint8).argmax(dim=1).to(torch.float32).unsqueeze(1)
    maximum = (255 - present.flip(1).to(torch.uint8).argmax(dim=1)).to(torch.float32).unsqueeze(1)
    # torchvision: inv_scale = (max - min) / 255, min := 0 and inv_scale := 1 where max == min.
    equal = maximum == minimum
    inv_scale = maximum.sub(minimum).mul_(1.0 / 255)
    minimum[equal] = 0.0
    inv_scale[equal] = 1.0
    return apply_lut(image, _to_uint8(_LEVELS.expand(3, 256).sub(minimum).div_(inv_scale)))


def _equalize(image: torch.Tensor, magnitude: float) -> torch.Tensor:
    # torchvision's (and PIL's) table from each channel's histogram; a channel with a single value is kept.
    hist = _histograms(image)
    cum = hist.cumsum(dim=1)
    pixels = image.shape[-1] * image.shape[-2]
    last = cum.argmax(dim=1, keepdim=True)  # the channel's largest value present
    step = (pixels - hist.gather(1, last)).div(255, rounding_mode="floor")
    lut = (cum[:, :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255).to(torch.uint8)
    lut = torch.cat([torch.zeros(3, 1, dtype=torch.uint8), lut], dim=1)
    lut = torch.where(step.ne(0), lut, torch.arange(256, dtype=torch.uint8))
    return apply_lut(image, lut)


def _sharpness(image: torch.Tensor, magnitude: float) -> torch.Tensor:
    height, width = image.shape[-2:]
    if height <= 2 or width <= 2:
        return image
    # torchvision: blur with [[1,1,1],[1,5,1],[1,1,1]] / 13 in float, round, blend inside the border.
    x = image.to(torch.int32)
    total = x[:, 1:-1, 1:-1] * 4
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            total += x[:, dy:dy + height - 2, dx:dx + width - 2]
    blurred = total.mul_(2).add_(13).div_(26, rounding_mode="floor").to(torch.float32)  # round(total / 13), no ties
    output = image.to(torch.float32, copy=True)
    view = output[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view), alpha=1.0 - (1.0 + magnitude))
    return _to_uint8(output)


def _translate(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    out = torch.zeros_like(image)
    height, width = image.shape[-2:]
    if abs(dx) >= width or abs(dy) >= height:
        return out
    src_y, dst_y = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
    out[:, dst_y, dst_x] = image[:, src_y, src_x]
    return out


try:  # torchvision's own grid functions, to reuse a grid; without them, torchvision's public kernels
    from torchvision.transforms.v2.functional._geometry import (
        _affine_grid,
        _apply_grid_transform,
        _get_inverse_affine_matrix,
    )
except ImportError:  # pragma: no cover - another torchvision layout
    _affine_grid = None

_GRIDS: dict[tuple, torch.Tensor] = {}


def _warp(image: torch.Tensor, transform_id: str, magnitude: float, interpolation: Any) -> torch.Tensor | None:
    """ShearX/Y and Rotate as torchvision computes them (the same inverse matrix, sampling grid and
    ``grid_sample``), with the grid kept per (operation, magnitude, size, device): RandAugment's
    fixed magnitude gives a handful of grids, and building one costs as much as sampling with it."""
    if _affine_grid is None:
        return None
    height, width = image.shape[-2:]
    key = (transform_id, magnitude, height, width, str(interpolation), str(image.device))
    grid = _GRIDS.get(key)
    if grid is None:
        if transform_id == "Rotate":
            angle = magnitude % 360  # torchvision's rotate_image: the same reduction, then -angle
            if angle in (0, 90, 180, 270):
                return None  # torchvision's exact fast paths
            matrix = _get_inverse_affine_matrix([0.0, 0.0], -angle, [0.0, 0.0], 1.0, [0.0, 0.0])
        else:  # torchvision's RandAugment: affine with center [0, 0], shear in degrees of atan(magnitude)
            degrees = math.degrees(math.atan(magnitude))
            shear = [degrees, 0.0] if transform_id == "ShearX" else [0.0, degrees]
            matrix = _get_inverse_affine_matrix([-width * 0.5, -height * 0.5], 0.0, [0.0, 0.0], 1.0, shear)
        theta = torch.tensor(matrix, dtype=torch.float32, device=image.device).reshape(1, 2, 3)
        grid = _affine_grid(theta, w=width, h=height, ow=width, oh=height)
        if len(_GRIDS) >= 64:
            _GRIDS.clear()
        _GRIDS[key] = grid
    return _apply_grid_transform(image, grid, T2.InterpolationMode(interpolation).value, fill=None)


_WARPS = ("ShearX", "ShearY", "Rotate")

_FAST_KERNELS = {
    "Brightness": _brightness,
    "Contrast": _contrast,
    "Solarize": _solarize,
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Sharpness": _sharpness,
    "TranslateX": lambda image, m: _translate(image, int(m), 0),
    "TranslateY": lambda image, m: _translate(image, 0, int(m)),
}


class RecipeRandAugment(T2.RandAugment):
    """torchvision v2 ``RandAugment``: the same draws and, on uint8 RGB [3, H, W] tensors with the
    default fill, the same pixels from faster kernels (see the module docstring)."""

    def _apply_image_or_video_transform(self, image: Any, transform_id: str, magnitude: float,
                                        interpolation: Any, fill: Any) -> Any:
        kernel = _FAST_KERNELS.get(transform_id)
        if (
            kernel is not None and type(image) is torch.Tensor and image.dtype == torch.uint8
            and image.dim() == 3 and image.shape[0] == 3 and image.device.type == "cpu"
            and all(value is None for value in fill.values())
        ):
            return kernel(image, magnitude)
        if (
            transform_id in _WARPS and type(image) is torch.Tensor and image.dtype == torch.uint8
            and image.dim() == 3 and all(value is None for value in fill.values())
        ):
            out = _warp(image, transform_id, magnitude, interpolation)
            if out is not None:
                return out
        return super()._apply_image_or_video_transform(image, transform_id, magnitude, interpolation, fill)
