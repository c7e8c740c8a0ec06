"""EDTformer (Jin, Lu, Hu, Yuan and Liu, "EDTformer: An Efficient Decoder Transformer for Visual Place
Recognition", IEEE TCSVT 2025; github.com/Tong-Jin01/EDTformer).

The class token and the patch tokens of the backbone ([B, 1 + H*W, C]) pass a Linear and become the
memory of a small decoder: ``num_queries`` learned queries go through ``num_layers`` simplified
decoder blocks (post-norm self-attention, then post-norm cross-attention to the memory; no
feed-forward). The queries' outputs [B, Q, C] are projected along the channels (Linear C ->
``channel_dim``) and then along the queries (Linear Q -> ``row_dim``); the descriptor is that
[channel_dim, row_dim] matrix flattened (index ``d * row_dim + r``) and L2-normalised.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vprlab.models.aggregators._common import check_positive_int, l2_flatten, map_and_class_token
from vprlab.models.spec import Aggregator, AggregatorSpec


class DecoderBlock(nn.Module):
    """EDTformer's simplified decoder block: ``x = norm1(x + SA(x)); x = norm2(x + CA(x, memory))``
    (dropout on both attention outputs while training)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)  # torch's name
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, need_weights=False)[0]))
        return self.norm2(x + self.dropout2(self.multihead_attn(x, memory, memory, need_weights=False)[0]))


class EDTformer(Aggregator):
    """(feature map [B, C, H, W], class token [B, C]) -> L2-normalised descriptor
    [B, channel_dim * row_dim].

    Defaults are the released model's: 64 queries, 2 decoder blocks with 16 heads, dropout 0.1,
    channel_dim 256 x row_dim 16 = 4096. The backbone must return its class token
    (``return_cls_token=true``; EDTformer's DINOv2 also applies its final norm).
    """

    spec = AggregatorSpec(
        name="edtformer", paper="Jin et al., TCSVT 2025", descriptor="`channel_dim` x `row_dim`",
        needs_cls_token=True, hint="pretrained=edtformer_dinov2_4096",
        small={"num_queries": 4, "num_layers": 1, "num_heads": 2, "channel_dim": 4, "row_dim": 2, "dropout": 0.0},
    )

    @staticmethod
    def output_dim(in_channels: int, channel_dim: int, row_dim: int, **args: Any) -> int:
        return channel_dim * row_dim

    def __init__(
        self,
        in_channels: int,
        num_queries: int = 64,
        num_layers: int = 2,
        num_heads: int = 16,
        channel_dim: int = 256,
        row_dim: int = 16,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive_int(
            "EDTformer", in_channels=in_channels, num_queries=num_queries, num_layers=num_layers,
            num_heads=num_heads, channel_dim=channel_dim, row_dim=row_dim,
        )
        if in_channels % num_heads:
            raise ValueError(f"EDTformer in_channels={in_channels} is not divisible by num_heads={num_heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"EDTformer dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.num_queries = num_queries
        self.channel_dim = channel_dim
        self.row_dim = row_dim
        self.input_proj = nn.Linear(in_channels, in_channels)
        self.layers = nn.ModuleList(DecoderBlock(in_channels, num_heads, dropout) for _ in range(num_layers))
        self.queries = nn.Parameter(torch.randn(1, num_queries, in_channels) * 1e-6)  # EDTformer's init
        self.channel_proj = nn.Linear(in_channels, channel_dim)
        self.row_proj = nn.Linear(num_queries, row_dim)

    def forward(self, x: Any) -> torch.Tensor:
        features, token = map_and_class_token(x, self.in_channels, "EDTformer")
        tokens = torch.cat([token[:, None], features.flatten(2).transpose(1, 2)], dim=1)  # [B, 1 + N, C]
        memory = self.input_proj(tokens)
        out = self.queries.expand(features.shape[0], -1, -1)
        for layer in self.layers:
            out = layer(out, memory)
        out = self.channel_proj(out)  # [B, Q, channel_dim]
        out = self.row_proj(out.transpose(1, 2))  # [B, channel_dim, row_dim]
        return l2_flatten(out)
