from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from vprlab.data.transforms import (
    IMAGENET_MEAN,
    DeviceNormalize,
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


def _original_train_transform(size, ops=3, magnitude=15):
    """The original BoQ train transform (Bag-of-Queries datamodule.py), written from its facts:
    torchvision v2 on uint8 tensors, Resize bicubic (v2's default antialias=True), RandAugment
    with bilinear interpolation, ToDtype(float32, scale=True), Normalize."""
    import torchvision.transforms.v2 as T2

    steps = [T2.Resize(size, interpolation=InterpolationMode.BICUBIC)]
    if ops:
        steps.append(T2.RandAugment(num_ops=ops, magnitude=magnitude, interpolation=InterpolationMode.BILINEAR))
    return T2.Compose(steps + [T2.ToDtype(torch.float32, scale=True), T2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _smooth_image(h=60, w=80, seed=0):
    """Textured but smooth, like a photo (RandAugment's Equalize/AutoContrast act on histograms)."""
    small = np.random.default_rng(seed).integers(0, 256, (h // 6, w // 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)


def _as_tensor(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()  # what decode_image gives


@pytest.mark.parametrize("ops", [0, 3])
def test_train_transform_computes_the_original_boq_transform_exactly_on_fixed_seeds(ops):
    original = _original_train_transform((24, 32), ops=ops)
    ours = train_transform((24, 32), randaugment_ops=ops)
    for seed in range(40):  # 120 RandAugment operations: every one of the 14 is drawn
        img = _smooth_image(seed=seed % 5)
        torch.manual_seed(seed)
        want = original(_as_tensor(img))
        for given in (img, _as_tensor(img)):  # a PIL image (decoder=pil) or uint8 tensor (torchvision)
            torch.manual_seed(seed)
            got = ours(given)
            assert got.dtype == torch.float32 and torch.equal(got, want), seed


def test_uint8_resize_stays_within_one_grey_level_of_the_previous_pil_resize():
    img = _image()
    new = train_transform((24, 32), randaugment_ops=0, normalize=False)(img)
    previous = torch.from_numpy(np.array(img.resize((32, 24), Image.Resampling.BICUBIC))).permute(2, 0, 1)
    diff = (new.int() - previous.int()).abs()
    assert new.dtype == torch.uint8 and diff.max() <= 1 and diff.float().mean() < 0.05


def test_normalising_a_uint8_batch_on_the_device_equals_normalising_each_image_in_the_worker():
    worker = train_transform((24, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    raw = train_transform((24, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), normalize=False)
    images = [_smooth_image(seed=s) for s in range(4)]
    expected = []
    for seed, img in enumerate(images):
        torch.manual_seed(seed)
        expected.append(worker(img))
    batch = []
    for seed, img in enumerate(images):
        torch.manual_seed(seed)
        batch.append(raw(img))
    batch = torch.stack(batch)
    assert batch.dtype == torch.uint8
    normalize = DeviceNormalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    out = normalize(batch)
    assert torch.equal(out, torch.stack(expected))
    assert normalize(out) is out  # a float batch is already normalised: never twice


def test_train_transform_randomness_follows_torch_seed():
    tf = train_transform((24, 32))
    img = _image()
    torch.manual_seed(7)
    a = tf(img)
    torch.manual_seed(7)
    b = tf(img)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
