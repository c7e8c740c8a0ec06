"""Per-job peak memory: a job's peak is its own, not the largest of an earlier job in the process."""

from __future__ import annotations

import contextlib
import math
import mmap
import sys
import time

import numpy as np
import pytest
import torch

from vprlab.utils.memory import KIND_RSS, PeakMemory, current_rss_bytes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc/self/statm")


@contextlib.contextmanager
def _resident(megabytes: int):
    """``megabytes`` of fresh resident memory while the block is open: an anonymous mapping of its
    own (not malloc, which in a long test process may hand out pages that are already resident),
    every page written; unmapped on exit."""
    block = mmap.mmap(-1, megabytes * 2**20)
    view = np.frombuffer(block, dtype=np.uint8)
    view[:] = 1
    try:
        yield
    finally:
        del view
        block.close()


@linux_only
def test_cpu_peak_is_per_job_while_ru_maxrss_is_not():
    import resource

    with PeakMemory("cpu", interval=0.01) as first, _resident(400):
        time.sleep(0.05)
    with PeakMemory("cpu", interval=0.01) as second:
        time.sleep(0.05)
    assert first.kind == second.kind == KIND_RSS
    # The first job held 400 MiB more than it started with; the second held nothing extra.
    assert first.peak_mb - first.start_mb > 350
    assert second.peak_mb - second.start_mb < 50
    assert second.peak_mb < first.peak_mb - 300
    # What the trainer used to report: the process-wide maximum, the same for both jobs.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= first.peak_mb - 1


@linux_only
def test_rss_is_the_process_resident_size():
    rss = current_rss_bytes()
    with _resident(100):
        assert current_rss_bytes() - rss > 90 * 2**20


def test_unmeasurable_platform_gives_nan(monkeypatch):
    monkeypatch.setattr("vprlab.utils.memory.current_rss_bytes", lambda: None)
    with PeakMemory("cpu") as peak:
        pass
    assert math.isnan(peak.peak_mb) and math.isnan(peak.start_mb)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_is_reset_per_job():
    with PeakMemory("cuda") as first:
        x = torch.ones(256 * 2**20, dtype=torch.uint8, device="cuda")
        del x
    with PeakMemory("cuda") as second:
        y = torch.ones(2**20, dtype=torch.uint8, device="cuda")
        del y
    assert first.peak_mb - first.start_mb >= 255
    assert second.peak_mb - second.start_mb < 10
