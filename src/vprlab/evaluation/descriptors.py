"""Turn a list of image files into one float32 descriptor matrix.

This is the only place where descriptors leave the model during evaluation;
retrieval, recall and any caching read the array returned here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vprlab.data.decoding import decode_tensor, plain_jpeg, read_encoded, uint8_to_float
from vprlab.evaluation.settings import EvalSettings
from vprlab.models.cpu_kernels import onednn_linears
from vprlab.models.spec import mixes_batch
from vprlab.utils.io import NpyRowWriter
from vprlab.utils.progress import progress_bar

_AMP_DTYPES: dict[str, torch.dtype | None] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": None,
    "float32": None,
    "none": None,
}


def resolve_amp_dtype(amp_dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept a torch dtype or a config string ("bf16", "fp16", "fp32"/"none"); None means no autocast."""
    if amp_dtype is None or isinstance(amp_dtype, torch.dtype):
        return None if amp_dtype == torch.float32 else amp_dtype
    key = str(amp_dtype).strip().lower().removeprefix("torch.")
    if key not in _AMP_DTYPES:
        raise ValueError(
            f"unknown amp_dtype {amp_dtype!r}; use one of {sorted(_AMP_DTYPES)} or a torch dtype"
        )
    return _AMP_DTYPES[key]


class ImagePathDataset(Dataset):
    """Opens each path with PIL (converted to RGB) and applies ``transform``.

    When ``transform`` starts with ``ToTensor`` (the eval transform does), plain RGB or grey
    JPEGs are decoded by libjpeg-turbo straight into a tensor instead (TorchCodec or
    torchvision.io, :mod:`vprlab.data.decoding`): the same pixels PIL decodes, divided by 255
    as ``ToTensor`` does, so the descriptors are bit-identical and decoding is about 1.5x
    faster. JPEGs with an EXIF orientation (which TorchCodec would apply and PIL does not),
    other modes and other formats keep the PIL path.
    """

    def __init__(self, image_paths: Sequence[str | os.PathLike], transform: Callable) -> None:
        self.image_paths = [str(p) for p in image_paths]
        self.transform = transform
        steps = getattr(transform, "transforms", None)
        self._after_to_tensor = (
            T.Compose(steps[1:]) if isinstance(transform, T.Compose) and steps and type(steps[0]) is T.ToTensor else None
        )

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.image_paths[index]
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"image {path} (index {index}) does not exist; check the benchmark root "
                "and that the dataset was fully downloaded/extracted"
            )
        try:
            with Image.open(path) as image:
                if self._after_to_tensor is not None and plain_jpeg(image):
                    return self._after_to_tensor(uint8_to_float(decode_tensor(read_encoded(path))))
                image = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise OSError(
                f"cannot read image {path} (index {index}): {error}; the file is corrupt or "
                "not an image, re-download it or remove it from the benchmark"
            ) from error
        return self.transform(image)


@dataclass(frozen=True)
class ExtractionResult:
    descriptors: np.ndarray  # float32 [N, D]
    seconds: float  # wall time of the whole pass, image decoding included
    images_per_second: float


def _descriptor_from_output(output: object) -> torch.Tensor:
    # Aggregators may return (descriptor, attention maps); the descriptor comes first.
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"the model returned {shape}; descriptor extraction needs model(x) to return a "
            "[batch, descriptor_dim] tensor (or a tuple whose first item is one)"
        )
    return output


def collate_images(batch: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One tensor [B, 3, H, W] when every image has the same size; otherwise the list itself
    (native-size evaluation: CosPlace, NetVLAD, MegaLoc), which :func:`_forward_images` groups by size."""
    if all(t.shape == batch[0].shape for t in batch):
        return torch.stack(batch)
    return list(batch)


def _forward_images(model: nn.Module, images: torch.Tensor | list[torch.Tensor], device: torch.device,
                    channels_last: bool, whole_batch: bool = False) -> np.ndarray:
    """Descriptors of one loader batch, in order; a list of images of several sizes runs as one
    forward per size (images of one size batched together), except for a model whose descriptors
    depend on the whole batch (``whole_batch``), which refuses such a batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    if isinstance(images, torch.Tensor):
        groups[tuple(images.shape[1:])] = list(range(images.shape[0]))
    else:
        for index, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(index)
    if whole_batch and len(groups) > 1:
        raise ValueError(
            f"a batch holds images of {len(groups)} sizes {sorted(groups)}, but this model's descriptors depend on the "
            "other images of their batch (a cross-image encoder), so the batch cannot be split by size; evaluate it "
            "at one image size (its published preprocessing resizes every image) or with batch_size=1"
        )
    out: np.ndarray | None = None
    for indices in groups.values():
        batch = images if isinstance(images, torch.Tensor) else torch.stack([images[i] for i in indices])
        batch = batch.to(device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        descriptors = _descriptor_from_output(model(batch)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(images), descriptors.shape[1]), dtype=np.float32)
        out[indices] = descriptors
    assert out is not None
    return out


def _is_channels_last(model: nn.Module) -> bool:
    """Whether the model's first convolution weight is stored NHWC (and so wants NHWC inputs)."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def extract_descriptors_timed(
    model: nn.Module,
    image_paths: Sequence[str | os.PathLike],
    transform: Callable,
    settings: EvalSettings | None = None,
    desc: str = "",
    writer: NpyRowWriter | None = None,
) -> ExtractionResult:
    """Like :func:`extract_descriptors`, and also reports the end-to-end throughput.

    The model is moved to ``device`` and put in eval mode for the pass; its
    previous train/eval mode is restored afterwards (training loops call this
    mid-epoch).

    ``settings``: batch size, workers, device, autocast dtype and progress bar (default: :class:`EvalSettings`).
    With ``writer`` (an :class:`~vprlab.utils.io.NpyRowWriter` for ``len(image_paths)`` rows) the
    descriptors are written batch by batch into its ``.npy`` (renamed into place when complete) and
    returned memory-mapped: a database larger than RAM (SF-XL) never sits in memory.
    """
    settings = settings if settings is not None else EvalSettings()
    batch_size, device = int(settings.batch_size), torch.device(settings.device)
    if len(image_paths) == 0:
        raise ValueError(f"no images to extract descriptors from ({desc or 'empty path list'})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype = resolve_amp_dtype(settings.amp_dtype)

    loader = DataLoader(
        ImagePathDataset(image_paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=int(settings.num_workers),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        collate_fn=collate_images,
    )
    was_training = model.training
    model.to(device).eval()
    # Images follow the model's memory format: a model converted with .to(memory_format=channels_last)
    # (evaluate.py channels_last=true, trainer.channels_last=true) gets NHWC batches.
    channels_last = _is_channels_last(model)
    whole_batch = mixes_batch(model)
    chunks: list[np.ndarray] = []
    start = time.perf_counter()
    try:
        with (
            writer if writer is not None else contextlib.nullcontext(),
            torch.inference_mode(),
            torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None),
            onednn_linears(model, enabled=device.type == "cpu" and dtype is None),  # fp32 CPU: oneDNN GEMMs
            progress_bar(desc=desc, total=len(image_paths), unit="img", enabled=bool(settings.progress)) as bar,
        ):
            for images in loader:
                descriptors = _forward_images(model, images, device, channels_last, whole_batch)
                if writer is not None:
                    writer.write(descriptors)
                else:
                    chunks.append(descriptors)
                bar.update(len(images))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if writer is not None:
        descriptors = writer.result
    else:
        descriptors = np.ascontiguousarray(np.concatenate(chunks, axis=0), dtype=np.float32)
    return ExtractionResult(
        descriptors=descriptors,
        seconds=seconds,
        images_per_second=len(image_paths) / seconds if seconds > 0 else float("inf"),
    )


def extract_descriptors(
    model: nn.Module, image_paths: Sequence[str | os.PathLike], transform: Callable,
    settings: EvalSettings | None = None, desc: str = "",
) -> np.ndarray:
    """Run ``model`` over the images in order; returns float32 descriptors [len(image_paths), D]."""
    return extract_descriptors_timed(model, image_paths, transform, settings, desc).descriptors
