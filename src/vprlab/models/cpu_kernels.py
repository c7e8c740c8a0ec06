"""Faster fp32 matrix products on the CPU where no gradient is needed.

PyTorch runs ``nn.Linear`` on the CPU through MKL's sgemm. On AMD EPYC CPUs (and some others)
MKL takes a generic code path and reaches about half the speed oneDNN gets on the same cores:
measured on the 2-core AMD EPYC (AVX-512) development machine, a 6400x512 @ 512x2048 product
runs at 89 GMAC/s through MKL and 161 GMAC/s through oneDNN (the library PyTorch already uses
for convolutions). :func:`linear` sends fp32 CPU products that need no gradient to oneDNN's
linear kernel (the one ``torch.compile`` uses on CPUs) and everything else to ``F.linear``:
inference, and in training the frozen layers, whose products autograd does not record.

``VPRLAB_ONEDNN_LINEAR`` = ``auto`` (default: on for x86-64 CPUs, where it was measured),
``1`` (on everywhere) or ``0`` (off). The kernel is a private PyTorch operator, so it is
checked against ``F.linear`` once per process and dropped if it is missing or disagrees.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@functools.cache
def onednn_linear_available() -> bool:
    switch = os.environ.get("VPRLAB_ONEDNN_LINEAR", "auto").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return False
    if switch == "auto" and platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # measured on x86-64 only; Arm CPUs have their own fast BLAS (Accelerate, ACL)
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            g = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(*s, generator=g) for s in ((5, 3, 16), (8, 16), (8,)))
            ok = torch.allclose(op(x, w, b, "relu", [None], ""), F.linear(x, w, b).relu(), atol=1e-5)
    except (RuntimeError, TypeError) as e:
        log.info("oneDNN linear kernel unusable (%s); using F.linear", e)
        return False
    if not ok:
        log.warning("oneDNN linear kernel disagrees with F.linear; using F.linear")
    return ok


def use_onednn(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """Whether :func:`linear` takes the oneDNN path: fp32 on the CPU, no autocast, and nothing
    for autograd to record (no grad mode, or neither ``x`` nor ``params`` requires grad: the
    frozen blocks of a backbone during training)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *params)):
        return False
    return onednn_linear_available()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (then ReLU if asked), through oneDNN where :func:`use_onednn`."""
    if use_onednn(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [None] if relu else [], "")
    out = F.linear(x, weight, bias)
    return out.relu_() if relu else out


def _onednn_forward(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, module.weight, module.bias)


@contextlib.contextmanager
def onednn_linears(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside the block, every ``nn.Linear`` of ``model`` computes through :func:`linear`
    (oneDNN where :func:`use_onednn`, ``F.linear`` otherwise); afterwards they are as before.
    Descriptor extraction and CPU training wrap the model in it: a ViT backbone is mostly
    linear layers, and in training its frozen blocks need no autograd. Nested uses are fine
    (an already patched layer is left to the outer block)."""
    patched = []
    if enabled and onednn_linear_available():
        for module in model.modules():
            # Exactly nn.Linear: subclasses (quantised, LoRA, NonDynamicallyQuantizableLinear's
            # users that read .weight differently) keep their own forward.
            if type(module) is nn.Linear and "forward" not in vars(module):
                module.forward = functools.partial(_onednn_forward, module)
                patched.append(module)
    try:
        yield model
    finally:
        for module in patched:
            del module.forward
