"""Many runs -> one pandas table, read from the files each run leaves in its folder.

A run folder is any folder with ``metrics.jsonl`` (train.py runs, next to their resolved
``config.yaml``), ``results.json``/``results.csv`` (evaluate.py runs) or a W&B offline run
(``wandb/offline-run-*``, read when there is no metrics.jsonl). The table has one row per run and
benchmark: what was trained (aggregator, its settings, seed, sweep job), the recalls of the reported
epoch, descriptor size, parameters, throughput and peak memory.

Which runs may be averaged: every row carries ``setting``, a hash of the run's full resolved
configuration without the seed and the run-specific keys of :data:`RUN_SPECIFIC` (paths, names,
loader workers, logging...). Rows with the same ``setting`` differ in nothing but the seed; the
configuration keys that differ between the collected runs are columns of their own (their names are
in ``runs.attrs["config_keys"]``). evaluate.py rows are identified by the evaluated weights:
model name, checkpoint hash, image size, protocol and precision.

Failed jobs are listed, never dropped: a run folder whose run raised holds ``error.txt`` (train.py and
evaluate.py write it), and a job folder with a config (``.hydra/config.yaml``) but no results is a job
that stopped without a record (killed, out of memory, or still running). Such folders are listed in
``runs.attrs["failed"]`` (job, folder, error) and the reports print them; the rows of a failed run that
got as far as an evaluation carry ``status`` "failed: <error>".

Which epoch a training run reports (one rule for the whole table, :data:`EPOCH_RULES`): ``last``, the
last evaluation of the run, or ``best``, the evaluation where the monitored metric
(``trainer.monitor``, default R@1 on the first benchmark) was best: what ``best.ckpt`` holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vprlab.evaluation.results import read_results
from vprlab.tracking.logger import read_metrics
from vprlab.utils.config import flatten_keys
from vprlab.utils.run_status import ERROR_FILE, read_run_error

log = logging.getLogger(__name__)

_RECALL = re.compile(r"^(?P<bench>.+)/(?P<metric>R@\d+)$")
# Per-benchmark values that the trainer logs next to the recalls.
_BENCH_EXTRAS = {"descriptor_dim": "descriptor_dim", "extract_img_per_s": "eval_img_per_s", "num_queries": "num_eval_queries",
                 "num_db": "num_db"}
# Aggregator settings worth a column of their own even when they do not vary.
AGGREGATOR_KEYS = ("num_layers", "num_queries", "proj_channels", "row_dim", "num_clusters", "out_channels", "p")
EPOCH_RULES = {
    "last": "the last evaluated epoch of each run",
    "best": "the epoch with the best monitored metric of each run (trainer.monitor; what best.ckpt holds)",
}
# Keys of the resolved config that name or place a run, or change how it runs but not what it computes:
# they never split a setting. An exact key, or a prefix ending in ".".
RUN_SPECIFIC = (
    "seed", "ckpt_path", "task_name", "allow_unsafe_pickle", "paths.", "logger.", "hydra.",
    "dataset.num_workers", "dataset.persistent_workers", "dataset.pin_memory", "dataset.prefetch_factor",
    "trainer.log_every_n_steps", "trainer.checkpoint_every_n_steps", "trainer.eval_batch_size", "trainer.progress",
    "results_dir", "cache", "cache_dir", "progress", "num_workers", "batch_size", "visualize.",
)
# evaluate.py rows: the evaluated weights and how they were evaluated.
EVAL_IDENTITY = ("model", "checkpoint_hash", "image_size", "protocol", "precision")
# Columns that say what was trained or evaluated, for tables without a ``setting`` column.
IDENTITY_COLUMNS = ("backbone", "aggregator", "lr", "weight_decay", "max_epochs", "train_image_size", *EVAL_IDENTITY)


def is_run_specific(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RUN_SPECIFIC) or "strict_counts" in key


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-3}}`` -> ``{"optimizer.lr": 1e-3}``; lists become JSON text."""
    if isinstance(config, dict) and not config:
        return {}
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten_keys(config, prefix).items()}


def setting_of(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(short hash, the keys it covers) of a flattened config without the seed and run-specific keys."""
    kept = {k: v for k, v in sorted(config.items()) if not is_run_specific(k)}
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return digest, kept


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (``root`` itself included), sorted by path: folders holding
    metrics.jsonl, results.json/.csv of evaluate.py, or a W&B offline run."""
    root = Path(root)
    found = set()
    for pattern, up in (("metrics.jsonl", 1), ("results.json", 1), ("results.csv", 1), ("offline-run-*", 2)):
        for path in root.rglob(pattern):
            folder = path.parents[up - 1]
            if up == 2 and path.parent.name != "wandb":
                continue
            if ".hydra" not in folder.parts:
                found.add(folder)
    return sorted(found)


# Written by `vprlab report` beside runs.csv: the failed jobs (job, run_dir, error), read back with it.
FAILED_CSV = "failed_jobs.csv"
NO_RECORD = ("no results and no error recorded: the job is still running, or was stopped from outside "
             "(killed, out of memory, a time limit); see its log in that folder")


def find_failed(root: str | Path, runs: list[Path] | None = None) -> list[dict[str, str]]:
    """Job folders under ``root`` that failed: those holding ``error.txt``, and those with a Hydra config
    (``.hydra/config.yaml``) but no results (not in ``runs``, the folders :func:`find_runs` found);
    ``{"job", "run_dir", "error"}`` each, sorted by path."""
    root = Path(root)
    runs = find_runs(root) if runs is None else runs
    with_results = set(runs)
    folders = {p.parent for p in root.rglob(ERROR_FILE)} | {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    failed = []
    for folder in sorted(folders):
        if ".hydra" in folder.parts:
            continue
        error = read_run_error(folder)
        if error is None and folder in with_results:
            continue
        failed.append({"job": _job_name(folder, root), "run_dir": str(folder), "error": error or NO_RECORD})
    return failed


def failed_job_lines(failed: list[dict[str, str]]) -> list[str]:
    return [f"  {f['job']}: failed: {f['error']}" for f in failed]


def failed_jobs_text(failed: list[dict[str, str]], markdown: bool = True) -> str:
    """The failed jobs as a Markdown section (``markdown``) or as lines for the terminal; "" for none."""
    if not failed:
        return ""
    head = (f"{len(failed)} job{'s' if len(failed) > 1 else ''} failed; the tables hold only what a failed run "
            "evaluated before it stopped:")
    if not markdown:
        return "\n".join([head, *failed_job_lines(failed)])
    cells = [(f["job"].replace("|", "\\|"), " ".join(f["error"].split()).replace("|", "\\|")) for f in failed]
    return "\n".join(["## Failed jobs", "", head, "", "| job | error |", "|---|---|",
                      *(f"| {job} | failed: {error} |" for job, error in cells)]) + "\n"


def _read_config(folder: Path) -> dict[str, Any]:
    """The resolved config.yaml train.py writes; evaluate.py runs have only Hydra's copy."""
    for path in (folder / "config.yaml", folder / ".hydra" / "config.yaml"):
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    return {}


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


def _evaluations(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every evaluation in the history: ``{"epoch": e, "step": s, "metrics": {bench: {R@1: ..}}}``
    (epoch 0 = before training), in logging order."""
    events = []
    for row in history:
        metrics: dict[str, dict[str, Any]] = {}
        for key, value in row.items():
            match = _RECALL.match(key)
            if match:
                metrics.setdefault(match["bench"], {})[match["metric"]] = _number(value)
        if not metrics:
            continue
        for key, value in row.items():
            bench, _, name = key.rpartition("/")
            if bench in metrics and name in _BENCH_EXTRAS:
                metrics[bench][_BENCH_EXTRAS[name]] = _number(value)
        events.append({"epoch": int(_number(row.get("epoch", 0)) or 0), "step": row.get("step", row.get("_step")), "metrics": metrics})
    return events


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def pick_evaluation(events: list[dict[str, Any]], rule: str, monitor: str | None) -> dict[str, Any] | None:
    """The evaluation a run reports under ``rule`` (:data:`EPOCH_RULES`)."""
    if rule not in EPOCH_RULES:
        raise ValueError(f"epoch rule {rule!r}: use one of {', '.join(EPOCH_RULES)}")
    if not events:
        return None
    if rule == "last":
        return events[-1]
    trained = [e for e in events if e["epoch"] > 0] or events
    bench, _, metric = (monitor or "").partition("/")
    if not bench:
        bench, metric = next(iter(trained[0]["metrics"])), "R@1"
    scored = [(e["metrics"].get(bench, {}).get(metric), i) for i, e in enumerate(trained)]
    scored = [(v, i) for v, i in scored if _finite(v)]
    if not scored:
        return trained[-1]
    best_value = max(v for v, _ in scored)
    return trained[next(i for v, i in scored if v == best_value)]  # the first epoch reaching it, like best.ckpt


def _run_values(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-level values: model size, training throughput, peak memory, steps, epochs, wall time."""
    run: dict[str, Any] = {}
    train_speed, times = [], []
    for row in history:
        if "time" in row:
            times.append(row["time"])
        if "train/img_per_s" in row:
            train_speed.append(_number(row["train/img_per_s"]))
        for key, value in row.items():
            value = _number(value)
            name = key.rpartition("/")[2]
            if key == "model/descriptor_dim":
                run["descriptor_dim"] = value
            elif key in ("model/params", "model/trainable_params", "model/aggregator_params"):
                run[name] = value
            elif key == "system/peak_mem_mb":
                run["peak_mem_mb"] = value
            elif key == "system/peak_mem_kind":
                run["peak_mem_kind"] = value
            elif key == "epoch":
                run["epochs"] = max(run.get("epochs", 0), int(value))
    if train_speed:
        # The median ignores the slow first steps (allocations, first-batch caches).
        run["train_img_per_s"] = float(pd.Series(train_speed, dtype=float).median())
    if len(times) > 1:
        run["wall_time_s"] = times[-1] - times[0]
    if history:
        run["steps"] = max(int(r.get("step", r.get("_step", 0)) or 0) for r in history)
    return run


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


def _published_counts(config: dict[str, Any], bench: str) -> dict[str, Any]:
    """The published image counts of benchmark ``bench`` in a training run's config (for subset flags)."""
    nodes = config.get("benchmark") or {}
    node = next((n for k, n in nodes.items() if isinstance(n, dict) and (n.get("name") or k) == bench), None) if isinstance(nodes, dict) else None
    return {k: node.get(k) for k in ("expected_num_db", "expected_num_queries") if node and node.get(k) is not None}


def _monitor(config: dict[str, Any]) -> str | None:
    monitor = (config.get("trainer") or {}).get("monitor")
    if monitor:
        return str(monitor)
    benchmarks = config.get("benchmark") or {}
    return f"{next(iter(benchmarks))}/R@1" if isinstance(benchmarks, dict) and benchmarks else None


def read_run(folder: str | Path, root: str | Path | None = None, use_wandb: bool = True, epoch: str = "last") -> list[dict[str, Any]]:
    """The rows (one per benchmark) of one run folder; ``epoch``: which evaluation of a training
    run is reported (:data:`EPOCH_RULES`)."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent
    config = _read_config(folder)
    flat = flatten_config(config)
    base = {"run_dir": str(folder), "job": _job_name(folder, root), **_config_columns(config)}

    metrics_path = folder / "metrics.jsonl"
    wandb_run = _offline_wandb(folder) if use_wandb else None
    if wandb_run is not None:
        base["wandb_group"] = wandb_run.get("run", {}).get("group")
        base["wandb_name"] = wandb_run.get("run", {}).get("name")
        if not config:
            flat = flatten_config(wandb_run.get("config") or {})
    history: list[dict[str, Any]] = []
    if metrics_path.is_file():
        history = read_metrics(metrics_path)
    elif wandb_run is not None:
        history = wandb_run["history"]

    rows = []
    if history:
        setting, _ = setting_of(flat)
        base.update(_run_values(history))
        chosen = pick_evaluation(_evaluations(history), epoch, _monitor(config))
        train_base = {**base, "kind": "train", "setting": setting, "_config": flat, "epoch_rule": epoch}
        if chosen is not None:
            for bench, values in chosen["metrics"].items():
                rows.append({**train_base, "benchmark": bench, "epoch": chosen["epoch"], **_published_counts(config, bench), **values})
        else:  # started, but never evaluated (or diverged before the first evaluation)
            rows.append({**train_base, "benchmark": None})
        max_epochs = base.get("max_epochs")
        finished = base.get("epochs") is not None and max_epochs is not None and base["epochs"] >= max_epochs
        error = read_run_error(folder)
        for row in rows:
            row["status"] = f"failed: {error}" if error else "complete" if finished else "incomplete"
    # evaluate.py runs: one row per (model, benchmark) in results.json (or .csv), identified by the weights.
    for result in read_results(folder):
        if str(result.get("status") or "").startswith("skipped"):  # evaluate.py skip_missing=true: no numbers
            continue
        identity = {k: result.get(k) for k in EVAL_IDENTITY}
        setting, _ = setting_of({f"eval.{k}": v for k, v in identity.items()})
        row = {"run_dir": str(folder), "job": _job_name(folder, root), "kind": "evaluate", "setting": setting,
               "_config": {f"eval.{k}": v for k, v in identity.items()}, "epoch_rule": "evaluated checkpoint",
               "status": "complete", "seed": None}
        rows.append({**row, **{k: v for k, v in result.items() if v is not None}})
    return rows


def collect_runs(root: str | Path, use_wandb: bool = True, epoch: str = "last") -> pd.DataFrame:
    """One row per (run, benchmark) for every run folder under ``root``; ``epoch``: which evaluation of
    each training run is reported (:data:`EPOCH_RULES`, the same rule for every run).

    The configuration keys that differ between the runs (seed and :data:`RUN_SPECIFIC` keys aside)
    become columns, listed in ``runs.attrs["config_keys"]``."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no run folder '{root}'; pass the sweep folder (e.g. outputs/train/multiruns/<time>)")
    if root.is_file():
        return read_runs_table(root, epoch)
    if epoch not in EPOCH_RULES:
        raise ValueError(f"epoch rule {epoch!r}: use one of {', '.join(EPOCH_RULES)}")
    folders = find_runs(root)
    rows = [row for folder in folders for row in read_run(folder, root, use_wandb=use_wandb, epoch=epoch)]
    failed = find_failed(root, folders)
    if not rows:
        if failed:
            raise FileNotFoundError("\n".join([f"no results under '{root}'; {'every job' if len(failed) > 1 else 'its one job'} failed:",
                                                *failed_job_lines(failed)]))
        raise FileNotFoundError(
            f"no runs under '{root}' (a run folder holds metrics.jsonl of train.py, results.json/.csv of evaluate.py, "
            "or a W&B offline run)"
        )
    # The same weights evaluated again (another evaluate.py run): the newest rows count once.
    rows = _dedupe_evaluations(rows)
    configs = [row.pop("_config") for row in rows]
    varying = varying_keys(configs)
    for row, config in zip(rows, configs):
        for key in varying:
            row[key] = config.get(key, "-")
    runs = pd.DataFrame(rows)
    runs.attrs["config_keys"] = varying
    runs.attrs["epoch_rule"] = epoch
    runs.attrs["failed"] = failed
    return runs


def read_runs_table(path: Path, epoch: str = "last") -> pd.DataFrame:
    """A ``runs.csv`` that an earlier report wrote, as the run table (the run folders need not exist any
    more). Its epoch rule is fixed: a table without an ``epoch_rule`` column was written before the rule
    existed, when the recalls were those of each run's last evaluation, so it can only be read as ``last``."""
    if path.suffix != ".csv":
        raise ValueError(f"{path} is a file but not a runs.csv; pass a folder of runs or a runs.csv of an earlier report")
    runs = pd.read_csv(path)
    if "epoch_rule" not in runs.columns:
        runs["epoch_rule"] = "last"
        runs = runs.drop(columns=["best R@1"], errors="ignore")  # the maximum over epochs: another rule, not reported
    rules = set(runs["epoch_rule"].dropna()) & set(EPOCH_RULES)
    if rules and rules != {epoch}:
        raise ValueError(f"{path} reports the epoch rule {', '.join(sorted(rules))}; collect the run folders again for --epoch {epoch}")
    keys = [c for c in runs.columns if ("." in c and not c.startswith("R@")) or c in IDENTITY_COLUMNS]
    runs.attrs["config_keys"] = [k for k in keys if runs[k].astype(str).nunique() > 1]
    runs.attrs["epoch_rule"] = epoch
    # The failed jobs the report that wrote this runs.csv listed (FAILED_CSV beside it).
    failed_csv = path.with_name(FAILED_CSV)
    runs.attrs["failed"] = pd.read_csv(failed_csv, dtype=str).fillna("").to_dict("records") if failed_csv.is_file() else []
    return runs


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Config keys (seed and run-specific keys aside) whose value is not the same in every config;
    a key missing from a config counts as a value of its own."""
    keys = sorted({k for config in configs for k in config if not is_run_specific(k)})
    missing = object()
    return [k for k in keys if len({json.dumps(c.get(k, missing), default=str) if c.get(k, missing) is not missing else "<missing>"
                                    for c in configs}) > 1]


def _dedupe_evaluations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if row.get("kind") == "evaluate":
            latest[(row["setting"], row.get("benchmark"))] = i
    return [row for i, row in enumerate(rows) if row.get("kind") != "evaluate" or latest[(row["setting"], row.get("benchmark"))] == i]
