"""Peak memory of one job, also when several jobs run in one process (a Hydra sweep with the basic
launcher runs every job in the same Python process).

- CUDA: the peak of memory allocated by torch on the device (``torch.cuda.max_memory_allocated``),
  with the peak statistics reset when the job starts, so an earlier job's peak never shows.
- CPU: the process's resident set size (RSS) sampled by a background thread every ``interval``
  seconds while the job runs (Linux ``/proc/self/statm``). The process-wide ``ru_maxrss`` cannot be
  reset, so it would report the largest job of a sweep for every later job. The sampled peak is the
  RSS of the whole process during this job: memory an earlier job still holds counts (``start_mb``
  says how much there was when the job began); a spike shorter than ``interval`` can be missed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

KIND_CUDA = "cuda_allocated"
KIND_RSS = "cpu_rss_sampled"


def current_rss_bytes() -> int | None:
    """The process's resident set size now, or None where this platform does not say (not Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PeakMemory:
    """``with PeakMemory(device) as peak: <job>`` then ``peak.peak_mb`` / ``peak.start_mb`` / ``peak.kind``."""

    def __init__(self, device: torch.device | str, interval: float = 0.05) -> None:
        self.device = torch.device(device)
        self.interval = float(interval)
        self.kind = KIND_CUDA if self.device.type == "cuda" else KIND_RSS
        self._peak = 0
        self._start: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exited = False

    def __enter__(self) -> PeakMemory:
        if self.kind == KIND_CUDA:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = current_rss_bytes()
        if self._start is None:
            return self
        self._peak = self._start
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="vprlab-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._update()

    def _update(self) -> None:
        rss = current_rss_bytes()
        if rss is not None and rss > self._peak:
            self._peak = rss

    def __exit__(self, *exc: Any) -> None:
        if self.kind == KIND_CUDA:  # the job's peak, kept: a later job resets the device's counter
            torch.cuda.synchronize(self.device)
            self._peak = torch.cuda.max_memory_allocated(self.device)
            self._exited = True
            return
        if self._thread is not None:
            self._update()
            self._stop.set()
            self._thread.join()
            self._thread = None

    @property
    def peak_mb(self) -> float:
        """The peak so far (MiB); NaN where it cannot be measured."""
        if self.kind == KIND_CUDA:
            peak = self._peak if self._exited else torch.cuda.max_memory_allocated(self.device)
            return peak / 2**20
        if self._start is None:
            return float("nan")
        self._update()
        return self._peak / 2**20

    @property
    def start_mb(self) -> float:
        """What the process (CPU) or torch on the device (CUDA) held when the job began (MiB)."""
        return float("nan") if self._start is None else self._start / 2**20
