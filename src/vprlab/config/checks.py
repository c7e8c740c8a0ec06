"""Checks that run before anything heavy is built, so a typo fails in a second, not after
the model has been downloaded and the dataset indexed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vprlab.config.composition import check_component_keys
from vprlab.models.backbones.dinov2 import check_image_size
from vprlab.models.spec import Aggregator, component_class


def _sizes(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def validate_train_config(cfg: DictConfig) -> None:
    check_component_keys(cfg)  # keys vs the classes' __init__ (a swapped preset)
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
    """Image sizes against the backbone's patch size (DINOv2 needs multiples of 14), as its class declares."""
    backbone_cls = component_class(cfg.backbone)
    patch = backbone_cls.config_patch_size(cfg.backbone) if hasattr(backbone_cls, "config_patch_size") else None
    if not patch:
        return
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


def _image_sizes(cfg: DictConfig) -> list[tuple[str, tuple[int, int]]]:
    """Where the model sees images: (config key, (height, width)) for the training, evaluation and
    benchmark sizes that are set."""
    backbone = cfg.get("backbone") or {}
    places = [("backbone.train_image_size", backbone.get("train_image_size")),
              ("backbone.eval_image_size", backbone.get("eval_image_size"))]
    for name, bench in (cfg.get("benchmark") or {}).items():
        if bench is not None and bench.get("image_size") is not None:
            places.append((f"benchmark.{name}.image_size", bench.get("image_size")))
    found = []
    for where, value in places:
        sizes = _sizes(value)
        if sizes:
            found.append((where, (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])))
    return found


def validate_aggregator_needs(cfg: DictConfig) -> None:
    """Backbone x aggregator pairs that cannot work, found from the configs and what the two classes
    declare (``spec`` on the aggregator, ``config_stride`` / ``config_cls_token`` on the backbone):
    a class token the backbone does not return, a feature map of another size than the aggregator is
    built for, smaller than it needs, or with too few positions."""
    aggregator, backbone = cfg.get("aggregator") or {}, cfg.get("backbone") or {}
    agg_cls, backbone_cls = component_class(aggregator), component_class(backbone)
    if not (isinstance(agg_cls, type) and issubclass(agg_cls, Aggregator) and "spec" in vars(agg_cls)):
        return  # not a declared aggregator: the build reports what is wrong
    spec, owner = agg_cls.spec, agg_cls.__name__
    hint = f" or use {spec.hint}" if spec.hint else ""
    args = agg_cls.config_args(aggregator)
    has_token = (backbone_cls.config_cls_token(backbone) if hasattr(backbone_cls, "config_cls_token")
                 else bool(backbone.get("return_cls_token", False)))
    if spec.needs_cls_token and not has_token:
        raise ValueError(
            f"aggregator={spec.name} needs the backbone's class token but backbone.return_cls_token is not true; "
            f"set backbone.return_cls_token=true (DINOv2 or timm ViT backbones){hint}"
        )
    stride = backbone_cls.config_stride(backbone) if hasattr(backbone_cls, "config_stride") else None
    if stride is None:
        return  # timm: known once the model is built
    for where, (height, width) in _image_sizes(cfg):
        grid = (height // stride, width // stride)
        gives = f"{where}={[height, width]} gives {grid[0]}x{grid[1]} feature maps (stride {stride})"
        if spec.fixed_map_size:
            h_arg, w_arg = spec.fixed_map_size
            expected = (int(args[h_arg]), int(args[w_arg]))
            if grid != expected:
                raise ValueError(
                    f"{gives} but {owner} is built for {expected[0]}x{expected[1]} (aggregator.{h_arg}, {w_arg}); use "
                    f"{[expected[0] * stride, expected[1] * stride]} or set aggregator.{h_arg}={grid[0]} "
                    f"aggregator.{w_arg}={grid[1]}{hint}"
                )
        if spec.min_map_size:
            h_arg, w_arg = spec.min_map_size
            least = (int(args[h_arg]), int(args[w_arg]))
            if grid[0] < least[0] or grid[1] < least[1]:
                keys = f"aggregator.{h_arg}" if h_arg == w_arg else f"aggregator.{h_arg}, {w_arg}"
                raise ValueError(
                    f"{gives} but {owner} needs at least {least[0]}x{least[1]} ({keys}); use images of at least "
                    f"{[least[0] * stride, least[1] * stride]} or a smaller {keys.replace(', ', ' / aggregator.')}{hint}"
                )
        if spec.more_positions_than:
            bound = int(args[spec.more_positions_than])
            if grid[0] * grid[1] <= bound:
                raise ValueError(
                    f"{gives}, {grid[0] * grid[1]} positions, but {owner} needs more than "
                    f"aggregator.{spec.more_positions_than}={bound}; use larger images or a smaller "
                    f"aggregator.{spec.more_positions_than}{hint}"
                )
