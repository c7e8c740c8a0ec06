"""When and what the training loop saves, in one object (after timm's CheckpointSaver and
dinov2's PeriodicCheckpointer); the loop only says where it is.

Files in ``ckpt_dir``:

- ``last.ckpt``: the newest resumable state. Written every ``every_n_steps`` steps (optional),
  when a stop signal arrives (mid-epoch, resumable), and at the end of every epoch.
- ``last.prev.ckpt``: the ``last.ckpt`` before the newest one ("previous good"), so that a damaged
  ``last.ckpt`` (a bad disk, a copy cut short) still leaves a checkpoint to resume from.
  ``ckpt_path=auto`` (:func:`vprlab.engine.resume.load_resume_checkpoint`) falls back to it.
- ``best.ckpt``: the epoch-end state with the best value of the monitored metric so far.
- ``epoch012_msls_val-R@1=85.1351.ckpt`` (with ``save_top_k`` > 1): the epoch-end states of the
  ``save_top_k`` best epochs by the monitored metric, as Lightning's ``ModelCheckpoint(save_top_k=k)``
  keeps them for BoQ, MixVPR and SALAD (an epoch enters when fewer than k are kept or when it is
  strictly better than the worst kept one, which is then deleted). The list travels in every
  checkpoint (``top_checkpoints``), so a resumed run keeps selecting among the same files.

Rank rules: only the main rank (rank 0) writes files, builds checkpoint dicts or decides what is
"best". Other ranks call the same methods at the same points of the loop, and these return at
once: they never call ``state_fn`` and never look at metrics (under DDP only rank 0 evaluates).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vprlab.engine.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PREVIOUS = "last.prev.ckpt"
BEST = "best.ckpt"
_NEXT = "last.next.ckpt"  # the new last.ckpt, complete on disk before the rotation renames

StateFn = Callable[[], dict[str, Any]]


class Checkpointer:
    """Owns the checkpoint decisions of a training run.

    ``state_fn`` arguments are zero-argument callables that build the checkpoint dict; they are
    called only when a file is about to be written (so only on the main rank), and at most once
    per call of a method here.

    - :meth:`after_step`: periodic ``last.ckpt`` every ``every_n_steps`` steps (0/None = never);
    - :meth:`on_stop`: ``last.ckpt`` when the run stops on SIGTERM / SIGINT
      (:class:`vprlab.engine.interrupt.StopOnSignal`);
    - :meth:`after_epoch`: ``best.ckpt`` when ``monitor`` improves, the top-k files
      (``save_top_k`` > 1), then ``last.ckpt``.

    With ``keep_previous``, each write of ``last.ckpt`` first completes the new file on disk, then
    keeps the existing ``last.ckpt`` as ``last.prev.ckpt`` (a hard link) and renames the new file to ``last.ckpt``
    (both atomic renames in one folder).
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        *,
        is_main: bool,
        every_n_steps: int | None = None,
        monitor: str | None = None,
        mode: str = "max",
        keep_previous: bool = True,
        save_top_k: int = 1,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"Checkpointer mode={mode!r}: use 'max' (recalls) or 'min' (losses)")
        if int(save_top_k) != save_top_k or save_top_k < 1:
            raise ValueError(f"trainer.save_top_k={save_top_k!r}: a whole number >= 1 (1 = best.ckpt only)")
        self.ckpt_dir = Path(ckpt_dir)
        self.is_main = bool(is_main)
        self.every_n_steps = int(every_n_steps or 0)
        self.monitor = monitor
        self.mode = mode
        self.keep_previous = keep_previous
        self._best = -math.inf if mode == "max" else math.inf
        self.save_top_k = int(save_top_k)
        # The kept top-k epochs, best first: {"value", "epoch", "file"} (plain types: stored in checkpoints).
        self._top: list[dict[str, Any]] = []
        # False when last.ckpt on disk is known to be damaged (the run resumed from last.prev.ckpt):
        # the next write then replaces it instead of rotating it over the good previous one.
        self._last_is_good = True

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / LAST

    @property
    def previous_path(self) -> Path:
        return self.ckpt_dir / PREVIOUS

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / BEST

    @property
    def best_metric(self) -> float:
        """The best monitored value so far (-inf / +inf before any). Decided on the main rank only:
        on other ranks it stays what it was at the start (or at resume)."""
        return self._best

    @property
    def top_checkpoints(self) -> list[dict[str, Any]]:
        """The kept top-k epochs, best first (empty with ``save_top_k`` = 1)."""
        return [dict(entry) for entry in self._top]

    def resume(self, path: str | os.PathLike | None, best_metric: float, top_checkpoints: list | None = None) -> None:
        """Continue from the checkpoint at ``path`` whose ``best_metric`` was ``best_metric`` and whose
        top-k list was ``top_checkpoints``. Every rank calls this (every rank loads the checkpoint).
        Top-k files that no longer exist are forgotten."""
        self._best = float(best_metric)
        self._top = [dict(e) for e in (top_checkpoints or []) if (self.ckpt_dir / str(e["file"])).is_file()]
        if path is not None and Path(path) == self.previous_path:
            self._last_is_good = False

    # -- the points of the loop -------------------------------------------------------------

    def after_step(self, step: int, state_fn: StateFn) -> bool:
        """After optimizer step number ``step`` (1-based): the periodic ``last.ckpt``.
        Returns whether a file was written."""
        if not (self.is_main and self.every_n_steps and step % self.every_n_steps == 0):
            return False
        self._write_last(state_fn())
        return True

    def on_stop(self, state_fn: StateFn) -> bool:
        """The run stops on a signal (every rank agreed to stop at this step): a resumable
        ``last.ckpt``, possibly mid-epoch. Returns whether a file was written."""
        if not self.is_main:
            return False
        path = self._write_last(state_fn())
        log.info("stop requested: wrote %s", path.name)
        return True

    def after_epoch(self, epoch_done: int, metrics: dict[str, dict[str, Any]], state_fn: StateFn) -> bool:
        """At the end of epoch ``epoch_done`` (1-based) with this epoch's evaluation ``metrics``
        (``{benchmark: {metric: value}}``, empty when it did not evaluate): ``best.ckpt`` if the
        monitored metric improved, then ``last.ckpt``. Returns whether this epoch is a new best.

        Only the main rank decides "best" (and writes); other ranks return False without looking
        at ``metrics``.
        """
        if not self.is_main:
            return False
        current = self.lookup(metrics)
        is_best = current is not None and (current > self._best if self.mode == "max" else current < self._best)
        if is_best:
            self._best = current
        enters_top = current is not None and not math.isnan(current) and self.save_top_k > 1 and self._enters_top(current)
        state = state_fn()  # after the update: every file records the new best_metric and top-k list
        evicted = []
        if enters_top:
            entry = {"value": float(current), "epoch": int(epoch_done), "file": self._top_name(epoch_done, current)}
            self._top.append(entry)
            self._top.sort(key=lambda e: e["value"], reverse=self.mode == "max")  # stable: ties keep the older first
            evicted = self._top[self.save_top_k:]
            self._top = self._top[: self.save_top_k]
        if self.save_top_k > 1:
            state["top_checkpoints"] = self.top_checkpoints
        if is_best:
            save_checkpoint(self.best_path, state)
            log.info("epoch %d: new best %s = %.4g (%s)", epoch_done, self.monitor, current, self.best_path.name)
        if enters_top:
            self._write_top(self.ckpt_dir / entry["file"], state, same_as_best=is_best)
            for old in evicted:
                (self.ckpt_dir / old["file"]).unlink(missing_ok=True)
            log.info("epoch %d: kept in the top %d by %s (%s)", epoch_done, self.save_top_k, self.monitor, entry["file"])
        self._write_last(state)
        return is_best

    def _enters_top(self, value: float) -> bool:
        """Lightning's rule: a free place, or strictly better than the worst kept value."""
        if len(self._top) < self.save_top_k:
            return True
        worst = self._top[-1]["value"]
        return value > worst if self.mode == "max" else value < worst

    def _top_name(self, epoch_done: int, value: float) -> str:
        metric = str(self.monitor).replace("/", "-")
        return f"epoch{epoch_done:03d}_{metric}={value:.4f}.ckpt"

    def _write_top(self, path: Path, state: dict[str, Any], *, same_as_best: bool) -> None:
        """The top-k file; a hard link to the ``best.ckpt`` just written when it is the same state."""
        if same_as_best:
            try:
                path.unlink(missing_ok=True)
                os.link(self.best_path, path)
                return
            except OSError:
                pass  # no hard links on this file system: a copy
        save_checkpoint(path, state)

    def lookup(self, metrics: dict[str, dict[str, Any]]) -> float | None:
        """The monitored value (``monitor`` = 'benchmark/metric') in ``metrics``; None without
        a monitor or metrics. A monitor naming a benchmark that was not evaluated is an error."""
        if not self.monitor or not metrics:
            return None
        bench, _, name = self.monitor.partition("/")
        if bench not in metrics:
            raise KeyError(f"trainer.monitor={self.monitor!r}: no benchmark named {bench!r}; evaluated: {', '.join(metrics)}")
        return float(metrics[bench][name])

    # -- writing ---------------------------------------------------------------------------

    def _write_last(self, state: dict[str, Any]) -> Path:
        last = self.last_path
        if self.keep_previous and self._last_is_good and last.is_file():
            # New file complete first; then the current last.ckpt becomes last.prev.ckpt through a
            # hard link (last.ckpt itself stays in place), and the new file replaces last.ckpt in one
            # rename: a process killed at any moment leaves a complete last.ckpt. Where the file
            # system has no hard links, two renames (an instant without last.ckpt, when
            # last.prev.ckpt exists and resume.load_resume_checkpoint falls back to it).
            staged = save_checkpoint(self.ckpt_dir / _NEXT, state)
            linked = self.ckpt_dir / (PREVIOUS + ".link")
            try:
                linked.unlink(missing_ok=True)
                os.link(last, linked)
                os.replace(linked, self.previous_path)
            except OSError:
                os.replace(last, self.previous_path)
            os.replace(staged, last)
        else:
            save_checkpoint(last, state)
        self._last_is_good = True
        return last

