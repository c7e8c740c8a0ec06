from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from vprlab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_hw,
    eval_transform,
    train_transform,
)


def _image(h: int = 37, w: int = 53, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_eval_transform_is_totensor_then_bicubic_antialiased_resize_then_normalize():
    img = _image()
    out = eval_transform((20, 30))(img)
    expected = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(
        T.Resize((20, 30), interpolation=InterpolationMode.BICUBIC, antialias=True)(T.ToTensor()(img))
    )
    assert out.shape == (3, 20, 30) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_an_int_size_means_a_square_image():
    assert eval_transform(16)(_image()).shape == (3, 16, 16)
    assert train_transform(16)(_image()).shape == (3, 16, 16)
    assert as_hw(16) == (16, 16) and as_hw([12, 20]) == (12, 20)


@pytest.mark.parametrize("bad", [0, (10,), (10, 0), (1, 2, 3)])
def test_bad_sizes_are_rejected_with_the_value(bad):
    with pytest.raises(ValueError, match="image_size"):
        as_hw(bad)


def test_train_transform_shape_and_custom_normalisation():
    torch.manual_seed(0)
    tf = train_transform((24, 32), randaugment_ops=2, randaugment_magnitude=9, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = tf(_image())
    assert out.shape == (3, 24, 32) and out.dtype == torch.float32
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6


def test_train_transform_without_randaugment_is_deterministic_resize_and_normalize():
    img = _image()
    out = train_transform((24, 32), randaugment_ops=0)(img)
    resized = img.resize((32, 24), Image.Resampling.BICUBIC)
    expected = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(resized))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_train_transform_randomness_follows_torch_seed():
    tf = train_transform((24, 32))
    img = _image()
    torch.manual_seed(7)
    a = tf(img)
    torch.manual_seed(7)
    b = tf(img)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
