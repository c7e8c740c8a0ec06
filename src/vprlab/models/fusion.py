"""Inference-only folding of eval-mode BatchNorm into the convolution before it.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * gamma / sqrt(var + eps)`` and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``: one pass over the activations less per
convolution. The result equals the unfolded network up to float32 rounding (a few 1e-8 on BoQ-ResNet50
descriptors); with channels_last, ResNet50-BoQ evaluation on a CPU runs about 1.2x faster (1 thread).

Only pairs whose order in the forward pass is known are folded: consecutive ``Conv2d -> BatchNorm2d``
children of an ``nn.Sequential`` (its forward is its order) and the ``convN -> bnN`` pairs of
torchvision's ``BasicBlock`` / ``Bottleneck``. Anything else is left as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
        and bn.running_mean is not None and conv.out_channels == bn.num_features
    )


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every eval-mode BatchNorm2d of ``model`` that directly follows its convolution in a
    known forward order (see the module docstring), replacing it with ``nn.Identity``. Returns the count.

    For inference only: the folded model must not train (its BatchNorm layers are gone). Raises a
    ValueError on a model in train mode."""
    if any(m.training for m in model.modules()):
        raise ValueError("fold_batchnorm is for inference: call model.eval() first (a training model keeps its BatchNorm)")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, (BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
                if conv is not None and bn is not None and _foldable(conv, bn):
                    setattr(module, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                    setattr(module, f"bn{i}", nn.Identity())
                    folded += 1
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                conv, bn = module._modules[first], module._modules[second]
                if _foldable(conv, bn):
                    module._modules[first] = fuse_conv_bn_eval(conv, bn)
                    module._modules[second] = nn.Identity()
                    folded += 1
    return folded
