"""How training images are decoded: ``dataset.decoder``.

- ``torchvision`` (default): the workers decode straight to uint8 tensors with libjpeg-turbo
  (TorchCodec when it is installed, ``pip install vprlab[decode]``, else ``torchvision.io``,
  whose decoders TorchCodec replaces), as the original BoQ code does, and run the transforms.
- ``pil``: PIL decodes in the loader workers; the same transforms then run on its pixels.
- ``device``: the workers only read the encoded bytes (of plain JPEGs; see below); each batch
  is decoded on the training device (nvjpeg on CUDA, many images per call) and transformed
  there. The CPU workers then do almost nothing, which is what a GPU node with few cores per
  GPU needs. On a CPU-only machine it decodes in the main process (for tests, not for speed).

All three decode the pixels PIL decodes: only plain JPEGs (RGB or grey, no EXIF orientation,
see :func:`plain_jpeg`) take the tensor decoders, anything else is decoded by PIL in the worker
(libjpeg-turbo everywhere; two builds may round a pixel one grey level apart). All three draw the
augmentation from the same per-place seed (see ``GSVCitiesDataset``) and run the same uint8
tensor transforms (:func:`vprlab.data.transforms.train_transform`), so ``torchvision`` and
``device`` give identical batches on a CPU.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

DECODERS = ("pil", "torchvision", "device")
JPEG_MAGIC = (0xFF, 0xD8)


def check_decoder(decoder: str) -> str:
    if decoder not in DECODERS:
        raise ValueError(
            f"dataset.decoder={decoder!r} is not one of {DECODERS}: pil decodes with PIL in the loader workers, "
            "torchvision decodes to tensors there, device decodes each batch on the training device (nvjpeg on CUDA)"
        )
    return decoder


class Backend(NamedTuple):
    name: str
    decode_jpeg: Callable  # (tensor or list of tensors, device) -> uint8 RGB [3, H, W] (list)
    decode_image: Callable  # tensor -> uint8 RGB [3, H, W] on the CPU, any format


def _find_backend() -> Backend:
    try:
        from torchcodec.decoders import decode_image, decode_jpeg

        return Backend(
            "torchcodec",
            lambda data, device: decode_jpeg(data, mode="RGB", device=device),
            lambda data: decode_image(data, mode="RGB"),
        )
    except ImportError:
        pass
    import torchvision.io as tio

    def quiet(fn):  # torchvision >= 0.29 warns on every call that TorchCodec replaces it
        def wrapped(*args, **kwargs):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities", category=DeprecationWarning)
                return fn(*args, **kwargs)

        return wrapped

    return Backend(
        "torchvision.io",
        quiet(lambda data, device: tio.decode_jpeg(data, mode=tio.ImageReadMode.RGB, device=device)),
        quiet(lambda data: tio.decode_image(data, mode=tio.ImageReadMode.RGB)),
    )


_BACKEND: Backend | None = None


def backend() -> Backend:
    """TorchCodec's decoders when installed, else torchvision.io's (found once per process)."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _find_backend()
    return _BACKEND


def read_encoded(path: str | Path) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (what the decoders take)."""
    data = Path(path).read_bytes()
    if not data:
        raise OSError(f"{path} is empty")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


_EXIF_ORIENTATION = 0x0112


def plain_jpeg(image: Image.Image) -> bool:
    """Whether libjpeg-turbo's tensor decoding of this (lazily opened) image gives exactly the
    pixels of PIL's ``convert("RGB")``: an RGB or grey JPEG without an EXIF orientation
    (TorchCodec applies the orientation, PIL does not). Reads the header only."""
    return image.format == "JPEG" and image.mode in ("RGB", "L") and image.getexif().get(_EXIF_ORIENTATION, 1) == 1


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 RGB [3, H, W]."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def decode_tensor(data: torch.Tensor) -> torch.Tensor:
    """Encoded bytes -> uint8 RGB [3, H, W] on the CPU. Raises ``OSError`` for an unreadable image."""
    try:
        return backend().decode_image(data)
    except (RuntimeError, ValueError) as e:
        raise OSError(str(e)) from e


def load_tensor(path: str | Path) -> torch.Tensor:
    """uint8 RGB [3, H, W] with exactly the pixels PIL gives: plain JPEGs through the tensor
    decoder, anything else through PIL."""
    data = read_encoded(path)
    with Image.open(io.BytesIO(data.numpy())) as image:
        return decode_tensor(data) if plain_jpeg(image) else pil_to_uint8(image)


def load_for_device(path: str | Path) -> torch.Tensor:
    """What a worker hands to :func:`decode_batch` for ``decoder=device``: the encoded bytes of a
    plain JPEG (decoded later on the device), or the uint8 [3, H, W] pixels of anything else
    (decoded here by PIL, so every decoder sees PIL's pixels)."""
    data = read_encoded(path)
    with Image.open(io.BytesIO(data.numpy())) as image:
        return data if plain_jpeg(image) else pil_to_uint8(image)


def uint8_to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> float in [0, 1], like ``ToTensor`` on a PIL image."""
    return image.float().div_(255)


def is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 2 and (int(data[0]), int(data[1])) == JPEG_MAGIC


def decode_batch(data: Sequence[torch.Tensor], device: torch.device | str) -> list[torch.Tensor | OSError]:
    """Decode many images on ``device``: JPEGs in one batched call (nvjpeg on CUDA), other
    formats on the CPU and then moved; decoded uint8 [3, H, W] tensors are only moved. An image
    that cannot be decoded comes back as the ``OSError`` saying why, in its place, so the caller
    decides what to do with it."""
    device = torch.device(device)
    # Already-decoded pixels (uint8 [3, H, W], see load_for_device) only move.
    out: list[torch.Tensor | OSError | None] = [d.to(device) if d.dim() == 3 else None for d in data]
    jpegs = [i for i, d in enumerate(data) if d.dim() == 1 and is_jpeg(d)]
    decode_jpeg = backend().decode_jpeg
    if jpegs:
        try:
            decoded = decode_jpeg([data[i] for i in jpegs], device)
        except (RuntimeError, ValueError):
            decoded = None  # one bad image fails the whole call: find it image by image
        for n, i in enumerate(jpegs):
            if decoded is not None:
                out[i] = decoded[n]
                continue
            try:
                out[i] = decode_jpeg(data[i], device)
            except (RuntimeError, ValueError) as e:
                out[i] = OSError(str(e))
    for i, item in enumerate(out):
        if item is None:
            try:
                out[i] = decode_tensor(data[i]).to(device)
            except OSError as e:
                out[i] = e
    return out  # type: ignore[return-value]


@dataclass
class EncodedPlace:
    """K images of one place as encoded bytes, with what is needed to decode them later."""

    data: list[torch.Tensor]
    paths: list[str]
    seed: int  # the place's transform seed
    transform: Callable[[torch.Tensor], torch.Tensor]
    bad_image_policy: str = "fail"

    def __len__(self) -> int:
        return len(self.data)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        return EncodedBatch([self]).to(device, non_blocking)


@dataclass
class EncodedBatch:
    """A batch of places still encoded; ``.to(device)`` decodes and transforms it on the device
    and returns the images [P*K, 3, H, W], places consecutive (as ``collate_places`` does)."""

    places: list[EncodedPlace]

    def __len__(self) -> int:
        return sum(len(p) for p in self.places)

    def pin_memory(self) -> EncodedBatch:
        return self  # the decoders copy the bytes to the device themselves

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        flat = [d for p in self.places for d in p.data]
        decoded = decode_batch(flat, device)
        images, at = [], 0
        for place in self.places:
            mine = decoded[at : at + len(place)]
            at += len(place)
            mine = _replace_bad(mine, place)
            # The same seeding as the worker-side decoders, so every decoder sees the same augmentation.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(place.seed)
                images += [place.transform(image) for image in mine]
        return torch.stack(images)


# Undecodable images met while decoding on the device (the main process), logged once each;
# the worker-side decoders keep theirs in GSVCitiesDataset.bad_images.
BAD_IMAGES_ON_DEVICE: set[str] = set()


def _replace_bad(images: list, place: EncodedPlace) -> list[torch.Tensor]:
    bad = [i for i, image in enumerate(images) if isinstance(image, OSError)]
    if not bad:
        return images
    first = bad[0]
    if place.bad_image_policy == "fail":
        raise OSError(
            f"cannot decode training image '{place.paths[first]}' ({images[first]}); remove or replace it, "
            "or set dataset.bad_image_policy=skip to use another image of the same place"
        )
    good = [image for image in images if not isinstance(image, OSError)]
    if not good:
        raise OSError(f"no image of the place with images {place.paths[:3]} could be decoded; fix the files")
    for n, i in enumerate(bad):
        if place.paths[i] not in BAD_IMAGES_ON_DEVICE:
            BAD_IMAGES_ON_DEVICE.add(place.paths[i])
            log.warning("skipping undecodable image %s (%s); %d bad so far", place.paths[i], images[i], len(BAD_IMAGES_ON_DEVICE))
        images[i] = good[n % len(good)]  # another image of the same place
    return images
