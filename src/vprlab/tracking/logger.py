"""Experiment tracking: a W&B run plus a local metrics file that never depends on the network.

Every call to :meth:`RunLogger.log` appends one JSON line to ``metrics.jsonl`` in the run
folder (flushed immediately), then forwards the same numbers to W&B if a run is open.
A W&B failure (not installed, unreachable, crashing) only produces a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


class RunLogger:
    def __init__(
        self,
        run_dir: str | Path,
        config: dict | None = None,
        *,
        mode: str | None = None,
        project: str = "vprlab",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.enabled = enabled  # False: log nothing anywhere (DDP ranks other than 0)
        self._file = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.metrics_path, "a", buffering=1)
        self.summary: dict[str, Any] = {}
        self.wandb_run = None
        self.wandb_dir: Path | None = None
        mode = mode or os.environ.get("WANDB_MODE", "offline")
        if mode not in WANDB_MODES:
            raise ValueError(f"logger.mode={mode!r} is not a W&B mode; use one of {', '.join(WANDB_MODES)}")
        if enabled and mode != "disabled":
            self._init_wandb(config, mode=mode, project=project, entity=entity, group=group, name=name, tags=tags)

    def _init_wandb(self, config: dict | None, **kwargs: Any) -> None:
        try:
            import wandb

            self.wandb_run = wandb.init(
                dir=str(self.run_dir), config=config, reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off"), **kwargs,
            )
            self.wandb_dir = Path(self.wandb_run.dir).parent
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            log.warning("W&B could not start (%s: %s); training goes on, metrics are in %s", type(e).__name__, e, self.metrics_path)
            self.wandb_run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._file is None:
            return
        clean = {k: _plain(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self.wandb_run is not None:
            try:
                self.wandb_run.log(clean, step=step)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B log failed (%s); metrics are still written to %s", e, self.metrics_path)

    def update_summary(self, values: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in values.items()}
        self.summary.update(clean)
        if self.wandb_run is not None:
            try:
                self.wandb_run.summary.update(clean)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B summary update failed (%s)", e)

    def finish(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception as e:  # noqa: BLE001
                log.warning("W&B finish failed (%s)", e)
            self.wandb_run = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | Path) -> list[dict]:
    """Read a metrics.jsonl file back (a torn last line from a crash is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
