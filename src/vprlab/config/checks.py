"""Checks that run before anything heavy is built, so a typo fails in a second, not after
the model has been downloaded and the dataset indexed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vprlab.config.composition import check_component_keys, group_choice
from vprlab.models.backbones.dinov2 import check_image_size
from vprlab.models.spec import Aggregator, component_class
from vprlab.utils.errors import ConfigError, MissingFileError


def _lookup(cfg: Any, key: str) -> tuple[bool, Any]:
    """(whether dotted ``key`` is in ``cfg``, its value)."""
    node: Any = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return False, None
        node = node.get(part)
    return True, node


def _sizes(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _number(cfg: Any, key: str, *, integer: bool = False, minimum: float | None = None, above: float | None = None,
            optional: bool = False, hint: str = "") -> None:
    """Check the value at dotted ``key`` of ``cfg`` (absent keys pass): a number (an integer with
    ``integer``), at least ``minimum`` / greater than ``above``, or null when ``optional``."""
    found, node = _lookup(cfg, key)
    if not found:
        return
    value = node
    if value is None:
        if optional:
            return
        raise ConfigError(f"{key} is not set; {hint or 'give it a value'}")
    kind = ("an integer" if integer else "a number") + (f" >= {minimum:g}" if minimum is not None else "") + (
        f" > {above:g}" if above is not None else "")
    ok = not isinstance(value, bool) and (isinstance(value, int) if integer else isinstance(value, (int, float)))
    ok = ok and (integer or math.isfinite(float(value)))
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above)
    if not ok:
        raise ConfigError(f"{key}={value!r} must be {kind}{' or null' if optional else ''}" + (f"; {hint}" if hint else ""))


def _sizes_key(cfg: Any, key: str) -> None:
    """An image size: a positive integer or [height, width] of positive integers (or null)."""
    found, node = _lookup(cfg, key)
    if not found:
        return
    if node is None:
        return
    values = [node] if not hasattr(node, "__len__") or isinstance(node, str) else list(node)
    if not 1 <= len(values) <= 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(f"{key}={node!r} must be a positive integer or [height, width] of positive integers, e.g. [320, 320]")


def _recall_ks(cfg: Any, key: str) -> None:
    found, node = _lookup(cfg, key)
    if not found:
        return
    values = [node] if isinstance(node, int) else (list(node) if node is not None and not isinstance(node, str) else None)
    if not values or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in values):
        raise ConfigError(f"{key}={node!r} must be a non-empty list of positive integers, e.g. [1, 5, 10]")


def _image_size_keys(cfg: Any) -> list[str]:
    keys = ["backbone.train_image_size", "backbone.eval_image_size", "dataset.image_size"]
    return keys + [f"benchmark.{name}.image_size" for name, bench in (cfg.get("benchmark") or {}).items() if bench is not None]


def validate_train_values(cfg: DictConfig) -> None:
    """Numbers that cannot work (a negative learning rate, a batch of no places, zero epochs...),
    found from the config alone, before the model or the data are built."""
    _number(cfg, "optimizer.lr", above=0, hint="the learning rate is a positive number, e.g. optimizer.lr=2e-4")
    _number(cfg, "optimizer.backbone_lr", above=0, optional=True, hint="null uses optimizer.lr")
    _number(cfg, "optimizer.weight_decay", minimum=0)
    _number(cfg, "optimizer.momentum", minimum=0)
    _number(cfg, "dataset.places_per_batch", integer=True, minimum=2, hint="a metric-learning batch needs at least 2 places")
    _number(cfg, "dataset.img_per_place", integer=True, minimum=1)
    _number(cfg, "dataset.num_workers", integer=True, minimum=0)
    _number(cfg, "trainer.max_epochs", integer=True, minimum=1)
    _number(cfg, "trainer.eval_batch_size", integer=True, minimum=1)
    _number(cfg, "trainer.log_every_n_steps", integer=True, minimum=1)
    _number(cfg, "trainer.eval_every_n_epochs", integer=True, minimum=1)
    _number(cfg, "trainer.grad_clip", minimum=0, optional=True, hint="null (or 0) means no clipping")
    _number(cfg, "trainer.checkpoint_every_n_steps", integer=True, minimum=1, optional=True, hint="null: once per epoch")
    _number(cfg, "trainer.max_nonfinite_steps", integer=True, minimum=1)
    _number(cfg, "trainer.num_threads", integer=True, minimum=1, optional=True, hint="null: torch's default thread count")
    _number(cfg, "trainer.grad_cache_chunk", integer=True, minimum=1, optional=True,
            hint="images per gradient-caching chunk; null: the plain step")
    _recall_ks(cfg, "trainer.recall_ks")
    for key in _image_size_keys(cfg):
        _sizes_key(cfg, key)


def validate_evaluate_values(cfg: DictConfig) -> None:
    """evaluate.py's numbers, checked before the model is built or a benchmark read."""
    _number(cfg, "batch_size", integer=True, minimum=1)
    _number(cfg, "num_workers", integer=True, minimum=0)
    _number(cfg, "db_chunk_size", integer=True, minimum=1, optional=True, hint="null searches the database at once")
    _number(cfg, "submission_top_k", integer=True, minimum=1)
    _recall_ks(cfg, "recall_ks")
    for key in _image_size_keys(cfg):
        _sizes_key(cfg, key)
    dtype = cfg.get("cache_dtype")
    if dtype is not None and dtype not in ("float32", "float16"):
        raise ConfigError(f"cache_dtype={dtype!r} must be float32 or float16")


def refuse_evaluation_recipe(cfg: DictConfig) -> None:
    """``train.py +recipe=<name>``: the recipes of conf/recipe/ are evaluation setups (a released model,
    its paper's benchmarks, ``compare_with_paper``) that only evaluate.py composes; train.py refuses
    one instead of silently fine-tuning its released model. Found by Hydra's record of the group, or,
    without one, by the evaluation-only key a recipe sets."""
    recipe = group_choice(cfg, "recipe")
    if not recipe and "compare_with_paper" not in cfg:
        return
    what = f"recipe={recipe}" if recipe else f"compare_with_paper={cfg.get('compare_with_paper')}"
    raise ConfigError(
        f"{what} is evaluation-only (conf/recipe/ and compare_with_paper belong to evaluate.py); train.py "
        f"does not train with it. Evaluate with `python evaluate.py {'recipe=' + recipe if recipe else what}`; to "
        "fine-tune a released model use `python train.py pretrained=<name>` (`vprlab models list`)"
    )


def check_monitor(monitor: Any, validated: list[str]) -> None:
    """``trainer.monitor`` must name a benchmark that is validated (``validated``: their names; none: nothing
    is validated, nothing to refuse). Checked with the config (a sweep checks every job) and again by the trainer
    on the benchmarks it built."""
    if not monitor or not validated:
        return
    bench = str(monitor).partition("/")[0]
    if bench not in validated:
        raise ConfigError(
            f"trainer.monitor={monitor} names benchmark {bench!r}, which is not validated "
            f"(benchmark={validated}); add it to benchmark=[...] or set trainer.monitor=<benchmark>/R@1 "
            "for one of them (null: R@1 on the first)"
        )


def validate_train_config(cfg: DictConfig) -> None:
    refuse_evaluation_recipe(cfg)  # +recipe=... (evaluate.py's group) would silently fine-tune its released model
    validate_train_values(cfg)
    check_component_keys(cfg)  # keys vs the classes' __init__ (a swapped preset)
    validate_model_sizes(cfg)
    validate_aggregator_needs(cfg)
    benchmarks = (cfg.get("benchmark") or {}).items()
    check_monitor((cfg.get("trainer") or {}).get("monitor"),
                  [str(node.get("name") or key) for key, node in benchmarks if node is not None])
    root = cfg.dataset.get("root")
    if root is not None and not Path(root).exists():
        raise MissingFileError(
            f"dataset root '{root}' does not exist. For GSV-Cities, download it "
            "(https://www.kaggle.com/datasets/amaralibey/gsv-cities) and pass dataset.root=/path/to/gsv-cities; "
            "for the built-in synthetic data run `make quickstart` (or `vprlab synth`) first."
        )


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
                raise ConfigError(f"{where}: {e}") from None


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
        raise ConfigError(
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
                raise ConfigError(
                    f"{gives} but {owner} is built for {expected[0]}x{expected[1]} (aggregator.{h_arg}, {w_arg}); use "
                    f"{[expected[0] * stride, expected[1] * stride]} or set aggregator.{h_arg}={grid[0]} "
                    f"aggregator.{w_arg}={grid[1]}{hint}"
                )
        if spec.min_map_size:
            h_arg, w_arg = spec.min_map_size
            least = (int(args[h_arg]), int(args[w_arg]))
            if grid[0] < least[0] or grid[1] < least[1]:
                keys = f"aggregator.{h_arg}" if h_arg == w_arg else f"aggregator.{h_arg}, {w_arg}"
                raise ConfigError(
                    f"{gives} but {owner} needs at least {least[0]}x{least[1]} ({keys}); use images of at least "
                    f"{[least[0] * stride, least[1] * stride]} or a smaller {keys.replace(', ', ' / aggregator.')}{hint}"
                )
        if spec.more_positions_than:
            bound = int(args[spec.more_positions_than])
            if grid[0] * grid[1] <= bound:
                raise ConfigError(
                    f"{gives}, {grid[0] * grid[1]} positions, but {owner} needs more than "
                    f"aggregator.{spec.more_positions_than}={bound}; use larger images or a smaller "
                    f"aggregator.{spec.more_positions_than}{hint}"
                )
