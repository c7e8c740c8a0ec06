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
    validate_model_sizes(cfg)
    root = cfg.dataset.get("root")
    if root is not None and not Path(root).exists():
        raise FileNotFoundError(
            f"dataset root '{root}' does not exist. For GSV-Cities, download it "
            "(https://www.kaggle.com/datasets/amaralibey/gsv-cities) and pass dataset.root=/path/to/gsv-cities; "
            "for the built-in synthetic data run `make quickstart` (or `python -m vprlab.data.synthetic`) first."
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
