"""Experiment tracking: a W&B run plus a local metrics file that never depends on the network.

Every call to :meth:`RunLogger.log` appends one JSON line to ``metrics.jsonl`` in the run
folder (flushed immediately), then forwards the same numbers to W&B if a run is open.
A W&B failure (not installed, unreachable, crashing) only produces a warning.

A resumed run (``resume_step``) continues the same file: rows the interrupted run wrote after
the checkpoint it resumes from (``step > resume_step``) are dropped, and a value already in the
file for a step is not written again, so every (step, key) appears once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from vprlab.utils.io import atomic_write_text

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
        resume_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.enabled = enabled  # False: log nothing anywhere (DDP ranks other than 0)
        self._file = None
        self._written: set[tuple[Any, str]] = set()  # (step, key) already in the file from before a resume
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.metrics_path.is_file():
                self._rewind(int(resume_step))
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

    def _rewind(self, resume_step: int) -> None:
        """Keep the rows up to ``resume_step`` (what the resumed checkpoint had seen) and remember
        their (step, key) pairs; the rows of the interrupted run after it are logged again."""
        rows = read_metrics(self.metrics_path)
        kept = [row for row in rows if not isinstance(row.get("step"), int) or row["step"] <= resume_step]
        if len(kept) < len(rows):
            log.info("resuming at step %d: dropped %d rows of %s written after that step by the interrupted run",
                     resume_step, len(rows) - len(kept), self.metrics_path)
        atomic_write_text(self.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))
        self._written = {(row.get("step"), key) for row in kept for key in row if key not in ("step", "time")}

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._file is None:
            return
        clean = {k: _plain(v) for k, v in metrics.items() if (step, k) not in self._written}
        if not clean:
            return
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
