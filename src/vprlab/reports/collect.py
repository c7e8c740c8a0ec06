"""Many runs -> one pandas table, read from the files each run leaves in its folder.

A run folder is any folder with a ``config.yaml`` (the resolved config train.py writes) and at least
one of ``metrics.jsonl`` (training runs), ``results.json``/``results.csv`` (evaluate.py runs) or a
W&B offline run (``wandb/offline-run-*``, read when there is no metrics.jsonl). The table has one row
per run and benchmark: what was trained (aggregator, its settings, seed, sweep job), the final
recalls, descriptor size, parameters, throughput and peak memory.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vprlab.evaluation.results import read_results
from vprlab.tracking.logger import read_metrics

log = logging.getLogger(__name__)

_RECALL = re.compile(r"^(?P<bench>.+)/(?P<metric>R@\d+)$")
# Per-benchmark values that the trainer logs next to the recalls.
_BENCH_EXTRAS = {"descriptor_dim": "descriptor_dim", "extract_img_per_s": "eval_img_per_s", "num_queries": "num_eval_queries"}
# Aggregator settings worth a column of their own (others stay in the config).
AGGREGATOR_KEYS = ("num_layers", "num_queries", "proj_channels", "row_dim", "num_clusters", "out_channels", "p")


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    found = []
    for config in sorted(root.rglob("config.yaml")):
        folder = config.parent
        if folder.name == ".hydra":  # Hydra's own copy of the unresolved config
            continue
        has_outputs = (
            (folder / "metrics.jsonl").is_file() or (folder / "results.json").is_file()
            or (folder / "results.csv").is_file() or any((folder / "wandb").glob("offline-run-*"))
        )
        if has_outputs:
            found.append(folder)
    return found


def _aggregator_name(target: str | None) -> str | None:
    return target.rsplit(".", 1)[-1].lower() if target else None


def _job_name(folder: Path, root: Path) -> str:
    """The sweep job's folder name (its overrides), or the path below ``root`` for single runs."""
    try:
        relative = folder.relative_to(root)
    except ValueError:
        return folder.name
    return str(relative) if str(relative) != "." else folder.name


def _config_columns(config: dict[str, Any]) -> dict[str, Any]:
    backbone = config.get("backbone") or {}
    aggregator = config.get("aggregator") or {}
    logger = config.get("logger") or {}
    row = {
        "backbone": backbone.get("model_name") or _aggregator_name(backbone.get("_target_")),
        "aggregator": _aggregator_name(aggregator.get("_target_")),
        "seed": config.get("seed"),
        "group": logger.get("group"),
        "lr": (config.get("optimizer") or {}).get("lr"),
        "weight_decay": (config.get("optimizer") or {}).get("weight_decay"),
        "max_epochs": (config.get("trainer") or {}).get("max_epochs"),
        "train_image_size": "x".join(map(str, backbone.get("train_image_size") or [])) or None,
    }
    for key in AGGREGATOR_KEYS:
        if key in aggregator:
            row[f"aggregator.{key}"] = aggregator[key]
    return row


def _number(value: Any) -> Any:
    """metrics.jsonl writes non-finite floats as strings ("nan")."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _rows_from_history(history: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per-benchmark final values, run-level values) from metrics rows in logging order."""
    final: dict[str, dict[str, Any]] = {}
    best: dict[str, float] = {}
    run: dict[str, Any] = {}
    train_speed, times = [], []
    for row in history:
        if "time" in row:
            times.append(row["time"])
        if "train/img_per_s" in row:
            train_speed.append(_number(row["train/img_per_s"]))
        for key, value in row.items():
            value = _number(value)
            match = _RECALL.match(key)
            if match:
                bench, metric = match["bench"], match["metric"]
                final.setdefault(bench, {})[metric] = value
                if metric == "R@1" and isinstance(value, (int, float)) and not math.isnan(value):
                    best[bench] = max(best.get(bench, -math.inf), value)
                continue
            bench, _, name = key.rpartition("/")
            if name in _BENCH_EXTRAS and bench and not bench.startswith(("train", "model", "system")):
                final.setdefault(bench, {})[_BENCH_EXTRAS[name]] = value
            elif key in ("model/descriptor_dim",):
                run["descriptor_dim"] = value
            elif key in ("model/params", "model/trainable_params", "model/aggregator_params"):
                run[name] = value
            elif key == "system/peak_mem_mb":
                run["peak_mem_mb"] = value
            elif key == "train/steps" or key == "_step":
                run["steps"] = value
            elif key == "epoch":
                run["epochs"] = value
    for bench, value in best.items():
        final[bench]["best R@1"] = value
    if train_speed:
        # The median ignores the slow first steps (allocations, first-batch caches).
        run["train_img_per_s"] = float(pd.Series(train_speed, dtype=float).median())
    if len(times) > 1:
        run["wall_time_s"] = times[-1] - times[0]
    if history:
        run["steps"] = max(int(r.get("step", r.get("_step", 0)) or 0) for r in history)
    return final, run


def _offline_wandb(folder: Path) -> dict[str, Any] | None:
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    if not runs:
        return None
    try:
        from vprlab.tracking.wandb_offline import read_offline_run

        return read_offline_run(runs[-1])
    except Exception as e:  # noqa: BLE001 - a report should not fail on one unreadable W&B file
        log.warning("could not read W&B offline run %s (%s: %s)", runs[-1], type(e).__name__, e)
        return None


def read_run(folder: str | Path, root: str | Path | None = None, use_wandb: bool = True) -> list[dict[str, Any]]:
    """The rows (one per benchmark) of one run folder."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent
    config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    base = {"run_dir": str(folder), "job": _job_name(folder, root), **_config_columns(config)}

    metrics_path = folder / "metrics.jsonl"
    wandb_run = _offline_wandb(folder) if use_wandb else None
    if wandb_run is not None:
        base["wandb_group"] = wandb_run.get("run", {}).get("group")
        base["wandb_name"] = wandb_run.get("run", {}).get("name")
    history: list[dict[str, Any]] = []
    if metrics_path.is_file():
        history = read_metrics(metrics_path)
    elif wandb_run is not None:
        history = wandb_run["history"]
    final, run = _rows_from_history(history)
    base.update(run)

    rows = [{**base, "benchmark": bench, **values} for bench, values in final.items()]
    # evaluate.py runs: one row per benchmark in results.json (or .csv).
    for result in read_results(folder):
        result = {k: v for k, v in result.items() if k not in ("model",)}
        rows.append({**base, **{k: v for k, v in result.items() if v is not None}})
    if not rows:  # started, but never evaluated (or diverged before the first evaluation)
        rows.append({**base, "benchmark": None})
    max_epochs = base.get("max_epochs")
    finished = not history or (run.get("epochs") is not None and max_epochs is not None and run["epochs"] >= max_epochs)
    status = "complete" if finished else "incomplete"
    for row in rows:
        row.setdefault("status", status)
    return rows


def collect_runs(root: str | Path, use_wandb: bool = True) -> pd.DataFrame:
    """One row per (run, benchmark) for every run folder under ``root``."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no run folder '{root}'; pass the sweep folder (e.g. outputs/train/multiruns/<time>)")
    rows = [row for folder in find_runs(root) for row in read_run(folder, root, use_wandb=use_wandb)]
    if not rows:
        raise FileNotFoundError(f"no runs under '{root}' (a run folder has config.yaml and metrics.jsonl or results.csv)")
    return pd.DataFrame(rows)
