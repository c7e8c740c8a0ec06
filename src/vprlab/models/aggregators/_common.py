"""Steps every aggregator shares: reading the backbone output, validating arguments, GeM pooling
and the final flatten + L2 normalisation.

Descriptors leave every aggregator in float32, whatever autocast did inside: the loss, the
retrieval index and the descriptor cache then always see the same dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from torch import nn

from vprlab.models.spec import Aggregator


def check_positive_int(owner: str, **values: Any) -> None:
    """Raise a ValueError naming ``owner.name`` unless every value is a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner} {name} must be a positive integer, got {value!r}")


def feature_map(x: Any, owner: str) -> torch.Tensor:
    """The backbone's feature map [B, C, H, W], checked.

    A backbone built with ``return_cls_token=true`` returns ``(feature map, class token)``; only
    aggregators that use the class token (SALAD) accept that, so the others say what to change.
    """
    if isinstance(x, (tuple, list)):
        raise ValueError(
            f"{owner} takes a feature map [B, C, H, W], but the backbone returns a tuple of {len(x)} "
            "tensors (feature map, class token); set backbone.return_cls_token=false, or use an aggregator "
            "that reads the class token (aggregator=salad)"
        )
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{owner} takes a feature map [B, C, H, W], got {shape}")
    return x


def map_and_class_token(x: Any, in_channels: int, owner: str, hint: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(feature map [B, C, H, W], class token [B, C]) from a backbone built with ``return_cls_token=true``,
    checked against ``in_channels``; an error says what to set (``hint``: e.g. "experiment=salad_dinov2")."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(
            f"{owner} needs the backbone's class token as well as its feature map, but the backbone returned "
            f"{'a single tensor' if isinstance(x, torch.Tensor) else type(x).__name__}; set "
            "backbone.return_cls_token=true (DINOv2 or timm ViT backbones)" + (f" or use {hint}" if hint else "")
        )
    features, token = x
    features = feature_map(features, owner)
    check_channels(features, in_channels, owner)
    if token.shape != (features.shape[0], in_channels):
        raise ValueError(f"{owner} expects a class token of shape [B, {in_channels}], got {tuple(token.shape)}")
    return features, token


def check_channels(x: torch.Tensor, in_channels: int, owner: str) -> None:
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{owner} was built for {in_channels} input channels (aggregator in_channels) but the feature map "
            f"has {x.shape[1]} (shape {tuple(x.shape)}); build it with in_channels={x.shape[1]} "
            "(build_model passes backbone.out_channels)"
        )


def l2_flatten(x: torch.Tensor) -> torch.Tensor:
    """Flatten everything but the batch axis and L2-normalise each row, in float32."""
    return F.normalize(x.flatten(1).float(), p=2.0, dim=1)


def gem_pool(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean over the spatial axes: [B, C, H, W] -> [B, C], (mean(clamp(x, eps)^p))^(1/p).

    Computed in float32: x^p overflows fp16 for ordinary activations and p = 3 amplifies bf16 rounding.
    """
    x = x.float()
    if isinstance(p, torch.Tensor):
        p = p.float()
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def init_features(features: Any, owner: str) -> torch.Tensor:
    """What the trainer's ``init_aggregator_from_data`` passes (a tensor [N, C, H, W], or a list of
    per-image backbone outputs) as one float32 tensor [N, C, H, W]."""
    if isinstance(features, (list, tuple)):
        if not features:
            raise ValueError(f"{owner}.init_from_features got no features; the training set is empty")
        features = torch.cat([feature_map(f, owner) for f in features])
    return feature_map(features, owner).float()


def full_precision(x: torch.Tensor):
    """A context in which autocast is off on ``x``'s device, for the numerically sensitive steps
    (softmax over assignments, Sinkhorn iterations, residual sums); the inputs still need ``.float()``."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class GlobalPool(Aggregator):
    """Parameter-free global pooling: feature map [B, C, H, W] -> L2-normalised ``pool`` [B, C].
    Subclasses say only how they reduce the spatial axes (and declare their ``spec``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        check_positive_int(type(self).__name__, in_channels=in_channels)
        self.in_channels = in_channels

    @staticmethod
    def output_dim(in_channels: int, **args: Any) -> int:
        return in_channels

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = type(self).__name__
        x = feature_map(x, owner)
        check_channels(x, self.in_channels, owner)
        return l2_flatten(self.pool(x.float()))


def region_bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive [start, end) ranges covering 0..size: boundaries at ``round(i * size / parts)``
    (Python's rounding), each range at least one cell (ranges of a side shorter than ``parts`` repeat a
    cell). A 16-cell side (DINOv2 at 224) gives CricaVPR's slices: 0:8, 8:16 and 0:5, 5:11, 11:16."""
    starts = [min(round(i * size / parts), size - 1) for i in range(parts)]
    return [(start, max(round((i + 1) * size / parts), start + 1)) for i, start in enumerate(starts)]


def cross_image_encoder(dim: int, heads: int, ff_dim: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    """CricaVPR's / SuperVLAD's cross-image encoder: ``layers`` post-norm TransformerEncoderLayers (GELU,
    LayerNorm eps 1e-5) built with ``batch_first=False`` and fed [B, T, C] token sets, so that attention
    runs along the batch axis: token t of each image attends to token t of every image of the batch
    (:func:`encode_across_batch`)."""
    check_positive_int("cross-image encoder", dim=dim, heads=heads, ff_dim=ff_dim, layers=layers)
    if dim % heads:
        raise ValueError(f"cross-image encoder: {dim} channels do not split into {heads} heads; use a divisor of {dim}")
    layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, activation="gelu", batch_first=False)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def encode_across_batch(encoder: nn.TransformerEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """[B, T, C] tokens -> the encoder's output [B, T, C], sequence = the B images (in float32)."""
    with full_precision(tokens):
        return encoder(tokens.float())


class CrossImageAggregator(Aggregator):
    """Base of the aggregators with an optional cross-image encoder (``self.encoder``, None without):
    with it, ``mixes_batch`` is true."""

    encoder: nn.TransformerEncoder | None

    def set_encoder(self, enabled: bool, dim: int, heads: int, ff_dim: int, layers: int, dropout: float) -> None:
        self.encoder = cross_image_encoder(dim, heads, ff_dim, layers, dropout) if enabled else None

    @property
    def mixes_batch(self) -> bool:  # type: ignore[override]
        return self.encoder is not None
