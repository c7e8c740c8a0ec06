"""dataset.decoder: tensor decoding in the workers and batch decoding on the training device."""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from data_gsv_tree import write_gsv_tree
from PIL import Image

from vprlab.data import decoding
from vprlab.data.decoding import (
    EncodedBatch,
    EncodedPlace,
    decode_batch,
    decode_tensor,
    read_encoded,
)
from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.data.loaders import build_train_loader
from vprlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform


def _photo(path, seed=0, size=(48, 64)):
    """A textured JPEG (flat images would hide resize and decode differences)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR).save(path, quality=90)
    return path


def _loader_cfg(root, decoder, **extra):
    return {
        "_target_": "vprlab.data.gsv_cities.GSVCitiesDataset", "root": str(root), "cities": None,
        "img_per_place": 4, "min_img_per_place": 4, "image_size": [32, 40], "places_per_batch": 4,
        "num_workers": 0, "decoder": decoder, **extra,
    }


def _first_batch(root, decoder, epoch=1, **extra):
    loader, sampler, _ = build_train_loader(_loader_cfg(root, decoder, **extra), mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=5)
    sampler.set_epoch(epoch)
    images, labels = next(iter(loader))
    return images.to("cpu"), labels


@pytest.fixture
def backend_torchvision_io(monkeypatch):
    """Force the fallback decoder (torchvision.io) even where TorchCodec is installed."""
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # makes the import fail
    monkeypatch.setattr(decoding, "_BACKEND", None)
    yield
    decoding._BACKEND = None


@pytest.mark.parametrize("fallback", [False, True], ids=["default-backend", "torchvision.io"])
def test_tensor_decoding_gives_the_pixels_pil_gives(tmp_path, fallback, request):
    if fallback:
        request.getfixturevalue("backend_torchvision_io")
    path = _photo(tmp_path / "a.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision.io's deprecation warning must not reach users
        image = decode_tensor(read_encoded(path))
    if fallback:
        assert decoding.backend().name == "torchvision.io"
    expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert (image.int() - expected.int()).abs().max() <= 1  # both libjpeg-turbo


def test_decode_batch_returns_the_error_in_place_of_a_corrupt_image_and_decodes_the_rest(tmp_path):
    good = [read_encoded(_photo(tmp_path / f"{i}.jpg", seed=i)) for i in range(3)]
    truncated = good[1][: good[1].numel() // 3].clone()
    png_path = tmp_path / "p.png"
    Image.fromarray(np.full((8, 8, 3), 77, np.uint8)).save(png_path)
    out = decode_batch([good[0], truncated, good[2], read_encoded(png_path)], "cpu")
    assert isinstance(out[1], OSError)
    assert torch.equal(out[0], decode_tensor(good[0])) and torch.equal(out[2], decode_tensor(good[2]))
    assert out[3].shape == (3, 8, 8) and int(out[3][0, 0, 0]) == 77  # non-JPEG formats decode on the CPU


def test_device_decoding_gives_exactly_the_batch_of_worker_side_tensor_decoding(tiny_synthetic):
    root = tiny_synthetic.gsv_root
    worker_images, worker_labels = _first_batch(root, "torchvision")
    device_images, device_labels = _first_batch(root, "device")
    assert torch.equal(worker_labels, device_labels)
    assert device_images.shape == (16, 3, 32, 40)
    assert torch.equal(worker_images, device_images)  # same pixels, same per-place augmentation seeds
    other_epoch, _ = _first_batch(root, "device", epoch=2)
    assert not torch.equal(other_epoch, device_images)


def test_pil_and_tensor_decoders_compute_the_same_training_images(tiny_synthetic):
    root = tiny_synthetic.gsv_root
    # One transform for both (uint8 resize + RandAugment); only the decoders' rounding may differ.
    for ops in (0, 3):
        pil, pil_labels = _first_batch(root, "pil", randaugment_ops=ops)
        tensor, tensor_labels = _first_batch(root, "torchvision", randaugment_ops=ops)
        assert pil.dtype == tensor.dtype == torch.uint8 and torch.equal(pil_labels, tensor_labels)
        diff = (pil.int() - tensor.int()).abs().float()
        assert diff.mean() < 0.5 and (ops > 0 or diff.max() <= 1), (ops, diff.mean(), diff.max())


def test_device_batches_survive_worker_processes(tiny_synthetic):
    """Encoded places travel from a worker process by pickling (they must not drag the dataset along)."""
    root = tiny_synthetic.gsv_root
    loader, sampler, dataset = build_train_loader(_loader_cfg(root, "device", num_workers=1), mean=IMAGENET_MEAN,
                                                  std=IMAGENET_STD, seed=5)
    sampler.set_epoch(1)
    batch, labels = next(iter(loader))
    assert isinstance(batch, EncodedBatch) and len(batch) == 16
    item, _ = dataset[(0, 0)]
    assert getattr(item.transform, "__self__", None) is None  # not a bound method of the dataset
    assert torch.equal(batch.to("cpu"), _first_batch(root, "device")[0])


def _encoded_place(tmp_path, policy, corrupt=(1,)):
    paths = [_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(4)]
    data = [read_encoded(p) for p in paths]
    for i in corrupt:
        data[i] = data[i][:50].clone()
    transform = train_transform((16, 16), randaugment_ops=0)
    return EncodedPlace(data, [str(p) for p in paths], seed=3, transform=transform, bad_image_policy=policy), paths


def test_undecodable_image_on_the_device_fails_with_its_path(tmp_path):
    place, paths = _encoded_place(tmp_path, "fail")
    with pytest.raises(OSError, match=rf"cannot decode training image '{paths[1]}'.*bad_image_policy=skip"):
        place.to("cpu")


def test_undecodable_image_on_the_device_is_replaced_by_another_image_of_the_place_when_skipping(tmp_path, caplog):
    place, paths = _encoded_place(tmp_path, "skip")
    with caplog.at_level(logging.WARNING, logger="vprlab.data.decoding"):
        images = place.to("cpu")
    assert images.shape == (4, 3, 16, 16)
    assert torch.equal(images[1], images[0])  # the first good image of the same place stands in
    assert not torch.equal(images[2], images[0])
    assert str(paths[1]) in caplog.text
    place, _ = _encoded_place(tmp_path, "skip", corrupt=(0, 1, 2, 3))
    with pytest.raises(OSError, match="no image of the place"):
        place.to("cpu")


def test_unknown_decoder_and_fast_decode_with_a_tensor_decoder_are_rejected(tiny_synthetic):
    root = tiny_synthetic.gsv_root
    with pytest.raises(ValueError, match=r"dataset.decoder='nvjpeg' is not one of \('pil', 'torchvision', 'device'\)"):
        GSVCitiesDataset(root, None, decoder="nvjpeg")
    with pytest.raises(ValueError, match=r"draft_size .* needs decoder='pil', got decoder='torchvision'"):
        GSVCitiesDataset(root, None, decoder="torchvision", draft_size=(32, 32))
    with pytest.raises(ValueError, match="fast_decode .* works with dataset.decoder=pil only"):
        build_train_loader(_loader_cfg(root, "device", fast_decode=True), mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=0)


def test_unreadable_file_fails_in_the_worker_with_its_path_under_device_decoding(tmp_path):
    root = write_gsv_tree(tmp_path / "gsv")
    dataset = GSVCitiesDataset(root, None, decoder="device")
    victim = dataset.place_image_paths(0)
    for path in victim:
        open(path, "wb").close()  # empty files cannot even be read as bytes
    with pytest.raises(OSError, match=r"cannot read training image .*is empty"):
        dataset[(0, 0)]


@pytest.mark.gpu
@requires_cuda
def test_nvjpeg_batches_match_cpu_decoding(tiny_synthetic):
    root = tiny_synthetic.gsv_root
    on_cpu, cpu_labels = _first_batch(root, "device", randaugment_ops=0)  # decoded by libjpeg-turbo
    loader, sampler, _ = build_train_loader(_loader_cfg(root, "device", randaugment_ops=0), mean=IMAGENET_MEAN,
                                            std=IMAGENET_STD, seed=5, device_type="cuda")
    sampler.set_epoch(1)
    batch, labels = next(iter(loader))
    on_gpu = batch.to("cuda")
    assert on_gpu.is_cuda and on_gpu.shape == on_cpu.shape and torch.equal(labels, cpu_labels)
    # nvjpeg and libjpeg-turbo may round the IDCT differently: a few grey levels at most.
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.02


@pytest.mark.parametrize("fallback", [False, True], ids=["default-backend", "torchvision.io"])
def test_every_decoder_gives_pil_pixels_for_exif_rotated_cmyk_grey_and_png_files(tmp_path, fallback, request):
    from vprlab.data.decoding import load_for_device, load_tensor, pil_to_uint8

    if fallback:
        request.getfixturevalue("backend_torchvision_io")
    pixels = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # TorchCodec would rotate it; PIL, and so vprlab, does not
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(pixels).convert("L").save(tmp_path / "grey.jpg")
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    Image.fromarray(pixels).save(tmp_path / "plain.jpg")
    names = ["rotated.jpg", "cmyk.jpg", "grey.jpg", "plain.png", "plain.jpg"]
    expected = [pil_to_uint8(Image.open(tmp_path / n)) for n in names]
    for name, want in zip(names, expected):
        assert torch.equal(load_tensor(tmp_path / name), want), name
    handed = [load_for_device(tmp_path / n) for n in names]
    assert [h.dim() for h in handed] == [3, 3, 1, 3, 1]  # plain JPEGs travel encoded, the rest as PIL pixels
    for name, got, want in zip(names, decode_batch(handed, "cpu"), expected):
        assert torch.equal(got, want), name
