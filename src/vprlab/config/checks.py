"""Checks that run before anything heavy is built, so a typo fails in a second, not after
the model has been downloaded and the dataset indexed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def _sizes(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def validate_train_config(cfg: DictConfig) -> None:
    from vprlab.config.composition import check_component_keys  # keys vs the classes' __init__ (a swapped preset)
    check_component_keys(cfg)
    validate_model_sizes(cfg)
    validate_aggregator_needs(cfg)
    root = cfg.dataset.get("root")
    if root is not None and not Path(root).exists():
        raise FileNotFoundError(
            f"dataset root '{root}' does not exist. For GSV-Cities, download it "
            "(https://www.kaggle.com/datasets/amaralibey/gsv-cities) and pass dataset.root=/path/to/gsv-cities; "
            "for the built-in synthetic data run `make quickstart` (or `vprlab synth`) first."
        )
    if int(cfg.trainer.max_epochs) < 1:
        raise ValueError(f"trainer.max_epochs={cfg.trainer.max_epochs} must be at least 1")


def validate_model_sizes(cfg: DictConfig) -> None:
    """Image sizes against the backbone's patch size (DINOv2 needs multiples of 14)."""
    target = str(cfg.backbone.get("_target_", ""))
    if "dinov2" not in target.lower():
        return
    from vprlab.models.backbones.dinov2 import check_image_size

    patch = 14
    places = [
        ("backbone.eval_image_size", cfg.backbone.get("eval_image_size")),
        ("dataset.image_size", (cfg.get("dataset") or {}).get("image_size")),
    ]
    for name, bench in (cfg.get("benchmark") or {}).items():
        if bench is not None:
            places.append((f"benchmark.{name}.image_size", bench.get("image_size")))
    for where, value in places:
        for size in _sizes(value):
            try:
                check_image_size(size, patch)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None


def _backbone_stride(backbone: DictConfig) -> int | None:
    """The output stride a backbone config gives, where it follows from the config alone."""
    target = str(backbone.get("_target_", "")).lower()
    if "dinov2" in target:
        return 14
    if "resnet" in target:
        return 16 if backbone.get("crop_last_block", True) else 32
    return None  # timm: known once the model is built


def validate_aggregator_needs(cfg: DictConfig) -> None:
    """Backbone x aggregator pairs that cannot work, found from the configs: SALAD without the
    backbone's class token, MixVPR sized for another feature map than the train / eval images give."""
    aggregator, backbone = cfg.get("aggregator") or {}, cfg.get("backbone") or {}
    target = str(aggregator.get("_target_", ""))
    if target.endswith("SALAD") and not backbone.get("return_cls_token", False):
        raise ValueError(
            "aggregator=salad needs the backbone's class token but backbone.return_cls_token is not true; "
            "set backbone.return_cls_token=true (DINOv2 or timm ViT backbones) or use experiment=salad_dinov2"
        )
    stride = _backbone_stride(backbone)
    if not target.endswith("MixVPR") or stride is None:
        return
    expected = (int(aggregator.get("in_h", 20)), int(aggregator.get("in_w", 20)))
    places = [("backbone.train_image_size", backbone.get("train_image_size")),
              ("backbone.eval_image_size", backbone.get("eval_image_size"))]
    for name, bench in (cfg.get("benchmark") or {}).items():
        if bench is not None and bench.get("image_size") is not None:
            places.append((f"benchmark.{name}.image_size", bench.get("image_size")))
    for where, value in places:
        sizes = _sizes(value)
        if not sizes:
            continue
        height, width = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes[:2]
        grid = (height // stride, width // stride)
        if grid != expected:
            raise ValueError(
                f"{where}={[height, width]} gives {grid[0]}x{grid[1]} feature maps (stride {stride}) but MixVPR "
                f"is built for {expected[0]}x{expected[1]} (aggregator.in_h, in_w); use "
                f"{[expected[0] * stride, expected[1] * stride]} or set aggregator.in_h={grid[0]} aggregator.in_w={grid[1]}"
            )
