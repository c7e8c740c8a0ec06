"""BoQ: "A Place is Worth a Bag of Learnable Queries" (Ali-bey et al., CVPR 2024).

Parameter names follow the released checkpoints (``proj_c``, ``norm_input``, ``boqs.{i}.*``, ``fc``)
so that they load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 64  # BoQ uses proj_channels // 64 attention heads everywhere


def num_attention_heads(channels: int) -> int:
    """Number of heads BoQ uses for ``channels``-wide attention (at least one), validated."""
    heads = max(1, channels // HEAD_DIM)
    if channels % heads:
        lower, upper = channels // HEAD_DIM * HEAD_DIM, (channels // HEAD_DIM + 1) * HEAD_DIM
        raise ValueError(
            f"proj_channels={channels} is not divisible by its number of attention heads {heads} "
            f"(proj_channels // {HEAD_DIM}); use a multiple of {HEAD_DIM} such as {lower} or {upper}, "
            f"or a value below {HEAD_DIM} (one head)"
        )
    return heads


class BoQBlock(nn.Module):
    """One BoQ layer: a transformer encoder over the image tokens, then learnable queries that
    cross-attend to the encoded tokens."""

    def __init__(self, channels: int, num_queries: int) -> None:
        super().__init__()
        heads = num_attention_heads(channels)
        self.encoder = nn.TransformerEncoderLayer(
            d_model=channels, nhead=heads, dim_feedforward=4 * channels, dropout=0.0, batch_first=True
        )
        self.queries = nn.Parameter(torch.randn(1, num_queries, channels))
        # The queries' self-attention depends only on the weights, not on the image.
        self.self_attn = nn.MultiheadAttention(channels, num_heads=heads, batch_first=True)
        self.norm_q = nn.LayerNorm(channels)
        self.cross_attn = nn.MultiheadAttention(channels, num_heads=heads, batch_first=True)
        self.norm_out = nn.LayerNorm(channels)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens [B, N, D] -> (encoded tokens [B, N, D], block output [B, Q, D], attention [B, Q, N])."""
        tokens = self.encoder(tokens)
        queries = self.queries.expand(tokens.shape[0], -1, -1)
        queries = self.norm_q(queries + self.self_attn(queries, queries, queries, need_weights=False)[0])
        out, attn = self.cross_attn(queries, tokens, tokens, need_weights=True, average_attn_weights=True)
        return tokens, self.norm_out(out), attn


class BoQ(nn.Module):
    """Bag-of-Queries aggregator: feature map [B, C, H, W] -> L2-normalised descriptor
    [B, proj_channels * row_dim] plus the ``num_layers`` cross-attention maps [B, num_queries, H*W].

    ``proj_channels=None`` uses ``in_channels // 2`` (the width of both released models).
    """

    def __init__(
        self,
        in_channels: int,
        proj_channels: int | None = 512,
        num_queries: int = 64,
        num_layers: int = 2,
        row_dim: int = 32,
    ) -> None:
        super().__init__()
        if proj_channels is None:  # half the backbone width: ResNet50 1024 -> 512, DINOv2-B 768 -> 384
            proj_channels = in_channels // 2
        for name, value in dict(
            in_channels=in_channels, proj_channels=proj_channels, num_queries=num_queries,
            num_layers=num_layers, row_dim=row_dim,
        ).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BoQ {name} must be a positive integer, got {value!r}")
        num_attention_heads(proj_channels)  # validate before building anything
        self.in_channels = in_channels
        self.proj_channels = proj_channels
        self.num_queries = num_queries
        self.num_layers = num_layers
        self.row_dim = row_dim

        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(BoQBlock(proj_channels, num_queries) for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    @property
    def descriptor_dim(self) -> int:
        return self.proj_channels * self.row_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens = self.proj_c(x).flatten(2).transpose(1, 2)  # [B, N, D]
        tokens = self.norm_input(tokens)
        outputs, attentions = [], []
        for block in self.boqs:
            tokens, out, attn = block(tokens)
            outputs.append(out)
            attentions.append(attn)
        out = torch.cat(outputs, dim=1)  # [B, L*Q, D]
        out = self.fc(out.transpose(1, 2))  # [B, D, row_dim]
        descriptor = F.normalize(out.flatten(1), p=2, dim=-1)  # channel-major: d * row_dim + r
        return descriptor, attentions
