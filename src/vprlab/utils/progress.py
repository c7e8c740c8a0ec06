"""The one progress display of vprlab: a tqdm bar on a terminal, plain log lines everywhere else.

A bar redraws itself with carriage returns; written to a file (``train.py > run.log 2>&1``, SLURM
output, CI) every redraw glues onto the same line, and the log ends up with lines of thousands of
characters. So a bar is drawn only where it can be redrawn in place:

- stderr is a terminal: a tqdm bar (unless ``VPRLAB_PROGRESS=0``);
- otherwise: every ``VPRLAB_PROGRESS_INTERVAL`` seconds (default 30) one plain line through
  ``logging`` (logger ``vprlab.progress``, so it also lands in Hydra's ``<task>.log``), e.g.
  ``epoch 3/12: 40/96 it (42%), 12.3 it/s, 0:03 elapsed, 0:05 left, loss=0.4100``,
  and a last line when the loop ends (only for loops that already logged a line: short loops stay silent).

Environment variables:

``VPRLAB_PROGRESS``
    unset (or ``auto``): bars on a terminal, log lines elsewhere.
    ``0`` (also ``false``/``no``/``off``): never a bar, log lines only (the test suite sets it).
    ``1`` (also ``true``/``yes``/``on``): always bars, even into a file.
``VPRLAB_PROGRESS_INTERVAL``
    seconds between two log lines of one loop (default 30; 0 logs every update).

Without logging configured (no handler anywhere, e.g. a plain ``python -c``) the lines go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("vprlab.progress")

DEFAULT_INTERVAL_S = 30.0
_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}


def bars_wanted() -> bool:
    """Whether a progress loop draws a tqdm bar (True) or logs plain lines (False); see the module docstring."""
    setting = os.environ.get("VPRLAB_PROGRESS", "").strip().lower()
    if setting in _OFF:
        return False
    if setting in _ON:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def log_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("VPRLAB_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LogProgress:
    """The part of tqdm's interface vprlab uses (iteration, ``update``, ``set_postfix``, ``close``,
    ``with``), reported as periodic log lines instead of a bar. Never writes a carriage return."""

    def __init__(
        self, iterable: Iterable | None = None, desc: str = "", total: int | None = None, initial: int = 0,
        unit: str = "it", interval: float | None = None, clock: Any = time.monotonic,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.total = total
        self.n = self.initial = int(initial)
        self.unit = unit
        self.interval = log_interval() if interval is None else float(interval)
        self.postfix: dict[str, Any] = {}
        self._clock = clock
        self._start = self._last = clock()
        self._logged = False
        self._closed = False

    # --- tqdm's interface ----------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress display was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self._clock()
        if now - self._last >= self.interval:
            self._emit(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = {"": s} if s else {}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def write(self, s: str) -> None:
        log.info(s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._logged:  # a closing line only for loops long enough to have reported already
            self._emit(self._clock(), done=True)

    # --- the line ------------------------------------------------------------------------------
    def line(self, now: float | None = None, done: bool = False) -> str:
        """``desc: n/total unit (pct%), rate, elapsed, left, postfix`` as one line."""
        now = self._clock() if now is None else now
        elapsed = now - self._start
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        parts = [count + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        done_here = self.n - self.initial
        if done_here > 0 and elapsed > 0:
            rate = done_here / elapsed
            parts.append(f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}")
            parts.append(f"{_duration(elapsed)} {'in all' if done else 'elapsed'}")
            if self.total and not done and self.n < self.total:
                parts.append(f"{_duration((self.total - self.n) / rate)} left")
        parts += [f"{k}={v}" if k else str(v) for k, v in self.postfix.items()]
        text = ", ".join(parts)
        return f"{self.desc}: {text}" if self.desc else text

    def _emit(self, now: float, done: bool = False) -> None:
        self._last = now
        self._logged = True
        message = self.line(now, done).replace("\r", " ").replace("\n", " ")
        if log.hasHandlers():
            log.info(message)
        else:  # logging not configured (a bare script): INFO would be dropped
            print(message, file=sys.stderr, flush=True)


def progress_bar(
    iterable: Iterable | None = None, desc: str = "", total: int | None = None, initial: int = 0,
    enabled: bool = True, unit: str = "it",
) -> tqdm | LogProgress:
    """The one progress display of vprlab: a tqdm bar on a terminal, periodic log lines elsewhere
    (see the module docstring for ``VPRLAB_PROGRESS``). ``enabled=False`` (other DDP ranks, callers
    that asked for no progress) shows nothing at all."""
    if not enabled:
        return tqdm(iterable, total=total, initial=initial, disable=True)
    if not bars_wanted():
        return LogProgress(iterable, desc=desc, total=total, initial=initial, unit=unit)
    return tqdm(
        iterable, desc=desc or None, total=total, initial=initial, dynamic_ncols=True,
        leave=False, unit=unit, mininterval=0.5,
    )
