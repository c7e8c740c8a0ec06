"""CricaVPR's multi-scale convolutional adapter (Lu et al., CVPR 2024, github.com/Lu-Feng/CricaVPR):
a small bottleneck added to the feed-forward branch of every DINOv2 block, so that a frozen ViT can
be adapted to place recognition by training only the adapters.

For the normalised tokens ``y`` [B, 1 + N, C] that the block's MLP reads (the output of ``norm2``):

1. ``h = relu(down(y))``: a Linear from C to ``hidden`` channels (384 for ViT-B);
2. the N patch rows of ``h``, laid out as their [hidden, grid_h, grid_w] grid, go through three
   parallel branches of Conv2d + BatchNorm (eps 1e-3) + ReLU: a 1x1 convolution, a 1x1 reduction
   followed by a 3x3 convolution, and a 1x1 reduction followed by a 5x5 convolution (zero-padded,
   stride 1), whose outputs are concatenated back to ``hidden`` channels;
3. the class-token row of ``h`` is put back in front, ``h`` is added to the whole sequence (so the
   class row becomes ``2 h_cls``), and ``up`` (a Linear back to C) gives the adapter's output;
4. the block then adds ``layer_scale_2(mlp(y) + scale * adapter(y))`` to its input, ``scale`` = 0.2.

:func:`adapted_block` runs a timm ViT block with its ``adapter`` that way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: CricaVPR's sizes for ViT-B (768 channels): hidden width, 1x1 branch, (reduction, output) of the 3x3
#: and 5x5 branches; the three branch outputs add up to the hidden width.
CRICAVPR_ADAPTER = {"hidden": 384, "branch1x1": 192, "branch3x3": (24, 96), "branch5x5": (24, 96)}
ADAPTER_SCALE = 0.2
_BN_EPS = 1e-3


class ConvBNReLU(nn.Sequential):
    """Conv2d (with bias, stride 1, zero padding keeping the size) -> BatchNorm2d(eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS)
        self.relu = nn.ReLU()


class ConvAdapter(nn.Module):
    """Tokens [B, 1 + N, dim] of a grid_h x grid_w patch grid -> the adapter's output [B, 1 + N, dim]
    (already multiplied by ``scale``); see the module docstring for the steps."""

    def __init__(
        self,
        dim: int = 768,
        hidden: int = 384,
        branch1x1: int = 192,
        branch3x3: tuple[int, int] = (24, 96),
        branch5x5: tuple[int, int] = (24, 96),
        scale: float = ADAPTER_SCALE,
    ) -> None:
        super().__init__()
        if branch1x1 + branch3x3[1] + branch5x5[1] != hidden:
            raise ValueError(
                f"the adapter's branch outputs ({branch1x1} + {branch3x3[1]} + {branch5x5[1]}) must add up to its "
                f"hidden width {hidden}: the patch rows and the residual are added"
            )
        self.hidden = hidden
        self.scale = float(scale)
        self.branch1x1 = ConvBNReLU(hidden, branch1x1, 1)
        self.branch3x3 = nn.Sequential(ConvBNReLU(hidden, branch3x3[0], 1), ConvBNReLU(branch3x3[0], branch3x3[1], 3))
        self.branch5x5 = nn.Sequential(ConvBNReLU(hidden, branch5x5[0], 1), ConvBNReLU(branch5x5[0], branch5x5[1], 5))
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)  # registered last, as in the release
        nn.init.zeros_(self.up.weight)  # a new adapter changes nothing until it is trained (CricaVPR's init)
        nn.init.zeros_(self.up.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        batch, length, _ = tokens.shape
        grid_h, grid_w = grid
        if length != 1 + grid_h * grid_w:
            raise ValueError(f"the adapter expects 1 class token + {grid_h}x{grid_w} patch tokens, got {length} tokens")
        h = F.relu(self.down(tokens))
        patches = h[:, 1:].transpose(1, 2).reshape(batch, self.hidden, grid_h, grid_w)
        convolved = torch.cat([self.branch1x1(patches), self.branch3x3(patches), self.branch5x5(patches)], dim=1)
        out = torch.cat([h[:, :1], convolved.flatten(2).transpose(1, 2)], dim=1) + h
        return self.scale * self.up(out)


def adapted_block(block: nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """One timm ViT block (``norm1``, ``attn``, ``ls1``, ``drop_path1``, ``norm2``, ``mlp``, ``ls2``,
    ``drop_path2``) with its ``adapter`` in the feed-forward branch, inside the second LayerScale."""
    tokens = tokens + block.drop_path1(block.ls1(block.attn(block.norm1(tokens))))
    normed = block.norm2(tokens)
    return tokens + block.drop_path2(block.ls2(block.mlp(normed) + block.adapter(normed, grid)))
