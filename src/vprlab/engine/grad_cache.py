"""Gradient caching: the loss of a whole P x K batch in the memory of one chunk of it.

Metric learning with a miner needs every descriptor of the batch in one loss (the hard pairs are
found across the whole batch), so gradient accumulation over smaller batches is a different
training. Gradient caching (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", 2021) keeps the training and bounds the memory:

1. forward every chunk of ``chunk_size`` images without autograd and keep only the descriptors
   (B x D floats, a few MB even for 640 x 16384);
2. compute the loss (miner included) on the whole batch from those descriptors, as leaves that
   require grad, and back-propagate it to them: the gradient of the loss w.r.t. each descriptor;
3. forward every chunk again, with autograd, and back-propagate from its cached descriptor
   gradients (``descriptors.backward(grad)``); parameter gradients add up over the chunks.

By the chain rule the parameter gradients equal those of the full-batch step when the model
treats the images of a batch independently (LayerNorm ViTs such as DINOv2, BoQ, and everything in
eval-mode normalisation). The price is one extra forward pass per step (about +30-40% compute);
only one chunk's activations are alive at a time.

Randomness: each chunk's second forward replays the random-number state of its first (dropout,
stochastic depth), and the generators end where a single forward would have left them.
BatchNorm in train mode: running statistics are updated once per chunk (the first, no-grad
pass is undone), and every chunk is normalised with its own batch statistics: with BatchNorm the
gradients are those of ``B / chunk_size`` smaller batches' normalisation, not the full batch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn


def _rng_snapshot(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_restore(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _norm_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, saved copy) of every batch-norm running statistic, to undo the no-grad pass's update."""
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.training and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                if buffer is not None:
                    saved.append((buffer, buffer.clone()))
    return saved


def grad_cache_backward(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]],
    chunk_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
    frozen_prefix: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Forward ``images`` through ``model`` in chunks, take ``loss_fn`` on the whole batch and leave the
    parameter gradients of that loss in ``.grad`` (added to what is there), as
    ``scale(loss_fn(model(images), labels)[0]).backward()`` would. Returns ``(loss, stats)``.

    ``scale`` is the GradScaler's ``scale`` under fp16 (the cached gradients are then scaled, and so are
    the parameter gradients, as ``scaler.unscale_`` expects). A DDP ``model`` all-reduces only after
    the last chunk (``no_sync`` before).

    ``frozen_prefix``: keep the output of the backbone's frozen part from the first pass (when ``model``
    has ``forward_frozen``, as VPRModel does, and its backbone supports the split) instead of
    recomputing it. Pass False for a wrapped model (DDP, torch.compile) that must be called as a whole.
    """
    if chunk_size < 1:
        raise ValueError(f"trainer.grad_cache_chunk={chunk_size} must be at least 1 image (or null to turn it off)")
    chunks = images.split(chunk_size)
    device = images.device
    # 1. Descriptors without autograd; remember each chunk's random state for the replay. A model whose
    # backbone has a frozen part (VPRModel.forward_frozen) keeps that part's output (a DINOv2-B at 280:
    # 1.2 MB per image), so that the second pass recomputes the trained blocks only.
    split = getattr(model, "forward_frozen", None) is not None and frozen_prefix
    states, cached, frozen = [], [], []
    norm_buffers = _norm_buffers(model)
    with torch.no_grad():
        for chunk in chunks:
            with autocast():
                prefix = model.forward_frozen(chunk) if split else None
                if prefix is not None:
                    frozen.append(prefix)
                states.append(_rng_snapshot(device))
                cached.append(model.forward_from_frozen(prefix) if prefix is not None else model(chunk))
    after_first_pass = _rng_snapshot(device)
    for buffer, saved in norm_buffers:  # the second pass updates the running statistics once
        buffer.copy_(saved)

    # 2. The loss on the whole batch, back to the descriptors.
    descriptors = torch.cat(cached).detach().requires_grad_(True)
    del cached
    loss, stats = loss_fn(descriptors, labels)
    scale(loss).backward()
    grads = descriptors.grad.split(chunk_size)

    # 3. Each chunk again with autograd, backward from its cached descriptor gradients.
    no_sync = getattr(model, "no_sync", None)
    for i, (chunk, grad) in enumerate(zip(chunks, grads)):
        _rng_restore(states[i], device)
        last = i == len(chunks) - 1
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            with autocast():
                out = model.forward_from_frozen(frozen[i]) if frozen else model(chunk)
            out.backward(grad.to(out.dtype))
    _rng_restore(after_first_pass, device)
    return loss.detach(), stats
