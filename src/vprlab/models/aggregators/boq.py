"""BoQ: "A Place is Worth a Bag of Learnable Queries" (Ali-bey et al., CVPR 2024).

Parameter names follow the released checkpoints (``proj_c``, ``norm_input``, ``boqs.{i}.*``, ``fc``)
so that they load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models.aggregators._common import check_channels, feature_map, l2_flatten
from vprlab.models.cpu_kernels import linear, use_onednn
from vprlab.models.spec import Aggregator, AggregatorSpec

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

        self._context_cache: tuple[tuple, torch.Tensor] | None = None
        self._query_proj_cache: tuple[tuple, torch.Tensor] | None = None

    def query_context(self) -> torch.Tensor:
        """The queries after their self-attention and ``norm_q``: [1, Q, D]. It depends only on
        the weights, so it is computed once per batch rather than once per image."""
        q = self.queries
        return self.norm_q(q + self.self_attn(q, q, q, need_weights=False)[0])

    def _query_context(self) -> torch.Tensor:
        # In eval mode without autograd the context is cached, keyed on every parameter it reads
        # (storage and in-place version: optimizer steps, load_state_dict and .to() all change it).
        if self.training or torch.is_grad_enabled():
            self._context_cache = None
            return self.query_context()
        params = (self.queries, *self.self_attn.parameters(), *self.norm_q.parameters())
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if self._context_cache is None or self._context_cache[0] != key:
            with torch.autocast(self.queries.device.type, enabled=False):
                self._context_cache = (key, self.query_context())
        return self._context_cache[1]

    def forward(
        self, tokens: torch.Tensor, return_attention: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """tokens [B, N, D] -> (encoded tokens [B, N, D], block output [B, Q, D], attention [B, Q, N] or None).

        Without attention maps the cross-attention runs as fused scaled-dot-product attention;
        fp32 CPU inference then also takes :meth:`_cpu_inference` (oneDNN matrix products)."""
        if not return_attention and not self.training and not torch.is_grad_enabled() and use_onednn(tokens) and self._plain_encoder():
            return self._cpu_inference(tokens)
        tokens = self.encoder(tokens)
        context = self._query_context()
        queries = context.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        out, attn = self.cross_attn(
            queries, tokens, tokens, need_weights=return_attention, average_attn_weights=True
        )
        return tokens, self.norm_out(out), attn

    def _plain_encoder(self) -> bool:
        """The encoder is the post-norm ReLU layer BoQ builds (what :meth:`_cpu_inference` computes)."""
        enc = self.encoder
        return not enc.norm_first and enc.activation_relu_or_gelu == 1 and enc.self_attn.batch_first

    def _cpu_inference(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """The same block written with :func:`vprlab.models.cpu_kernels.linear` (oneDNN) and fused
        attention; equal to the module path up to float32 rounding (tested to 1e-5)."""
        enc, heads = self.encoder, self.encoder.self_attn.num_heads
        b, _, d = tokens.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, heads, L, D / heads]
            return x.unflatten(-1, (heads, d // heads)).transpose(1, 2)

        def merge(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).flatten(2)

        # Encoder layer (post-norm): x = norm1(x + SA(x)); x = norm2(x + FF(x)).
        attn = enc.self_attn
        q, k, v = linear(tokens, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        sa = merge(F.scaled_dot_product_attention(split(q), split(k), split(v)))
        x = enc.norm1(tokens + linear(sa, attn.out_proj.weight, attn.out_proj.bias))
        ff = linear(linear(x, enc.linear1.weight, enc.linear1.bias, relu=True), enc.linear2.weight, enc.linear2.bias)
        x = enc.norm2(x + ff)

        # Cross-attention of the (cached) projected queries to the encoded tokens.
        cross = self.cross_attn
        kv = linear(x, cross.in_proj_weight[d:], cross.in_proj_bias[d:])
        k, v = kv.chunk(2, dim=-1)
        q = self._projected_query().expand(b, -1, -1)
        out = merge(F.scaled_dot_product_attention(split(q), split(k), split(v)))
        out = linear(out, cross.out_proj.weight, cross.out_proj.bias)
        return x, self.norm_out(out), None

    def _projected_query(self) -> torch.Tensor:
        """The cross-attention's query projection of the query context: [1, Q, D]. Constant in
        eval, so cached like the context, keyed on the context's key and the projection weights."""
        context = self._query_context()
        cross, d = self.cross_attn, context.shape[-1]
        key = (self._context_cache[0], *((p.data_ptr(), p._version, p.dtype) for p in (cross.in_proj_weight, cross.in_proj_bias)))
        if self._query_proj_cache is None or self._query_proj_cache[0] != key:
            self._query_proj_cache = (key, F.linear(context, cross.in_proj_weight[:d], cross.in_proj_bias[:d]))
        return self._query_proj_cache[1]


class BoQ(Aggregator):
    """Bag-of-Queries aggregator: feature map [B, C, H, W] -> L2-normalised descriptor
    [B, proj_channels * row_dim] plus the ``num_layers`` cross-attention maps [B, num_queries, H*W].

    ``proj_channels=None`` uses ``in_channels // 2`` (the width of both released models).
    """

    spec = AggregatorSpec(
        name="boq", paper="Ali-bey et al., CVPR 2024", descriptor="`proj_channels` (default channels / 2) x `row_dim`",
        small={"proj_channels": 16, "num_queries": 4, "num_layers": 1, "row_dim": 2},
    )

    @staticmethod
    def output_dim(in_channels: int, proj_channels: int | None, row_dim: int, **args) -> int:
        return (proj_channels or in_channels // 2) * row_dim

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

    # VPRModel.forward asks for the descriptor alone, which enables the fused attention path.
    returns_attention = True

    def forward(self, x: torch.Tensor, return_attention: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Descriptor and the per-block attention maps (an empty list when ``return_attention`` is False)."""
        x = feature_map(x, "BoQ")
        check_channels(x, self.in_channels, "BoQ")
        tokens = self.proj_c(x).flatten(2).transpose(1, 2)  # [B, N, D]
        tokens = self.norm_input(tokens)
        outputs, attentions = [], []
        for block in self.boqs:
            tokens, out, attn = block(tokens, return_attention)
            outputs.append(out)
            if attn is not None:
                attentions.append(attn)
        out = torch.cat(outputs, dim=1)  # [B, L*Q, D]
        out = self.fc(out.transpose(1, 2))  # [B, D, row_dim]
        descriptor = l2_flatten(out)  # channel-major: d * row_dim + r; float32
        return descriptor, attentions
