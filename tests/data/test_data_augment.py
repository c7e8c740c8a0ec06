"""RecipeRandAugment: torchvision v2 RandAugment's draws and pixels from faster kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T2
from conftest import requires_cuda
from PIL import Image
from torchvision.transforms import InterpolationMode

from vprlab.data.augment import _FAST_KERNELS, _WARPS, RecipeRandAugment, apply_lut


def _images():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    smooth = np.array(Image.fromarray(small).resize((53, 41), Image.Resampling.BILINEAR))
    channels_last = torch.from_numpy(smooth).permute(2, 0, 1)  # the layout torchvision's resize returns
    noise = torch.from_numpy(rng.integers(0, 256, (3, 17, 23), dtype=np.uint8))
    narrow = torch.from_numpy(rng.integers(100, 103, (3, 12, 9), dtype=np.uint8))  # 3 levels: tiny histograms
    flat = torch.full((3, 6, 7), 77, dtype=torch.uint8)  # AutoContrast/Equalize leave a single value alone
    one_flat_channel = noise.clone()
    one_flat_channel[1] = 200
    tiny = torch.from_numpy(rng.integers(0, 256, (3, 2, 5), dtype=np.uint8))  # Sharpness leaves <= 2 rows alone
    square = torch.from_numpy(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8))
    return [channels_last, channels_last.contiguous(), noise, narrow, flat, one_flat_channel, tiny, square]


@pytest.mark.parametrize("op", sorted(_FAST_KERNELS) + list(_WARPS))
def test_every_fast_kernel_gives_torchvisions_pixels_bit_for_bit(op):
    reference = T2.RandAugment(interpolation=InterpolationMode.BILINEAR)
    fast = RecipeRandAugment(interpolation=InterpolationMode.BILINEAR)
    magnitudes_fn, signed = reference._AUGMENTATION_SPACE[op]
    for image in _images():
        magnitudes = magnitudes_fn(31, *image.shape[-2:])
        values = [0.0] if magnitudes is None else [float(magnitudes[b]) for b in (0, 1, 9, 15, 22, 30)]
        for magnitude in values + ([-v for v in values] if signed else []):
            want = reference._apply_image_or_video_transform(image, op, magnitude, reference.interpolation, reference._fill)
            got = fast._apply_image_or_video_transform(image, op, magnitude, fast.interpolation, fast._fill)
            assert got.shape == want.shape and got.dtype == torch.uint8
            assert torch.equal(got, want), (op, magnitude, tuple(image.shape))


def test_whole_randaugment_equals_torchvisions_on_fixed_seeds_and_draws_the_same_numbers():
    reference = T2.RandAugment(num_ops=3, magnitude=15, interpolation=InterpolationMode.BILINEAR)
    fast = RecipeRandAugment(num_ops=3, magnitude=15, interpolation=InterpolationMode.BILINEAR)
    for seed in range(30):
        image = _images()[seed % 3]
        torch.manual_seed(seed)
        want, after_reference = reference(image), torch.rand(())
        torch.manual_seed(seed)
        got, after_fast = fast(image), torch.rand(())
        assert torch.equal(got, want), seed
        assert after_fast == after_reference  # same RNG consumption: later draws are unchanged too


def test_other_inputs_take_torchvisions_kernels():
    fast = RecipeRandAugment(num_ops=2, magnitude=9, fill=[10, 20, 30])
    reference = T2.RandAugment(num_ops=2, magnitude=9, fill=[10, 20, 30])
    image = _images()[0]
    for seed in range(10):  # a fill value: the translations must fill with it, not with zeros
        torch.manual_seed(seed)
        want = reference(image)
        torch.manual_seed(seed)
        assert torch.equal(fast(image), want)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    torch.manual_seed(3)
    out = RecipeRandAugment(num_ops=2)(pil)
    assert isinstance(out, Image.Image)


def test_apply_lut_maps_each_channel_through_its_own_table():
    image = torch.arange(60, dtype=torch.uint8).view(3, 4, 5)
    lut = torch.stack([torch.arange(256), 255 - torch.arange(256), torch.full((256,), 9)]).to(torch.uint8)
    out = apply_lut(image, lut)
    assert torch.equal(out[0], image[0]) and torch.equal(out[1], 255 - image[1]) and bool((out[2] == 9).all())


@pytest.mark.gpu
@requires_cuda
def test_on_a_gpu_the_augmentation_equals_torchvisions_there():
    reference = T2.RandAugment(num_ops=3, magnitude=15, interpolation=InterpolationMode.BILINEAR)
    fast = RecipeRandAugment(num_ops=3, magnitude=15, interpolation=InterpolationMode.BILINEAR)
    image = _images()[0].cuda()
    for seed in range(30):
        torch.manual_seed(seed)
        want = reference(image)
        torch.manual_seed(seed)
        got = fast(image)
        assert got.is_cuda and torch.equal(got, want), seed
