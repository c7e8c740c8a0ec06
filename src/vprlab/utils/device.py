"""Where and in which precision models run: the one switch shared by training and evaluation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = {"32": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "16": torch.float16}


def resolve_precision(name: Any, device: torch.device) -> str:
    """``auto``: bf16 where the GPU supports it, fp32 elsewhere (CPU bf16 autocast is slow on most CPUs)."""
    if str(name) != "auto":
        return str(name)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "32"


@dataclass
class Precision:
    """One switch: bf16 needs no scaler, fp16 gets a GradScaler, fp32 neither."""

    name: str
    dtype: torch.dtype | None
    device_type: str

    @classmethod
    def from_config(cls, name: Any, device: torch.device) -> "Precision":
        key = resolve_precision(name, device)
        if key not in PRECISIONS:
            raise ValueError(f"trainer.precision={name!r} is not supported; use one of auto, 32, bf16, fp16")
        dtype = PRECISIONS[key]
        if dtype is torch.float16 and device.type != "cuda":
            raise ValueError("trainer.precision=fp16 needs a CUDA device; on the CPU use bf16 or 32")
        return cls(key, dtype, device.type)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype is torch.float16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available here; use trainer.device=cpu or auto")
    return device
