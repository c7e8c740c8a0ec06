"""progress_bar: a tqdm bar on a terminal, plain log lines (never a carriage return) elsewhere."""

from __future__ import annotations

import io
import logging

import pytest
from tqdm.auto import tqdm

from vprlab.utils import progress
from vprlab.utils.progress import LogProgress, bars_wanted, progress_bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("setting", "tty", "bars"), [
    (None, True, True), (None, False, False), ("auto", False, False),
    ("0", True, False), ("off", True, False), ("1", False, True), ("true", False, True),
])
def test_bars_only_on_a_terminal_unless_the_variable_says_otherwise(monkeypatch, setting, tty, bars):
    if setting is None:
        monkeypatch.delenv("VPRLAB_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("VPRLAB_PROGRESS", setting)
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    assert bars_wanted() is bars
    bar = progress_bar(range(3), desc="x")
    assert isinstance(bar, tqdm if bars else LogProgress)
    bar.close()


def test_off_a_terminal_the_loop_logs_lines_with_the_postfix_and_no_carriage_return(monkeypatch, caplog):
    monkeypatch.delenv("VPRLAB_PROGRESS", raising=False)
    monkeypatch.setenv("VPRLAB_PROGRESS_INTERVAL", "0")  # a line at every step
    stderr = _Stream(False)
    monkeypatch.setattr("sys.stderr", stderr)
    seen = []
    with caplog.at_level(logging.INFO, logger="vprlab.progress"):
        bar = progress_bar(range(4), desc="epoch 3/12", initial=0, total=4)
        for i in bar:
            seen.append(i)
            bar.set_postfix(loss=f"{0.5 - i / 10:.4f}")
    assert seen == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == "vprlab.progress"]
    assert lines[0].startswith("epoch 3/12: 1/4 it (25%)") and lines[0].endswith("loss=0.5000")
    assert lines[3].startswith("epoch 3/12: 4/4 it (100%)")
    assert lines[-1].startswith("epoch 3/12: 4/4 it (100%)") and "in all" in lines[-1]  # the closing line
    assert all("\r" not in line and "\n" not in line and len(line) < 200 for line in lines)
    assert stderr.getvalue() == ""  # nothing drawn on stderr


def test_lines_come_every_interval_and_short_loops_stay_silent(caplog):
    clock = _Clock()
    with caplog.at_level(logging.INFO, logger="vprlab.progress"), \
            LogProgress(desc="synthetic database", total=100, unit="img", interval=30, clock=clock) as bar:
        for _ in range(10):
            clock.now += 1.0
            bar.update(10)
    assert not caplog.records  # 10 s in all: no line

    with caplog.at_level(logging.INFO, logger="vprlab.progress"):
        bar = LogProgress(range(96), desc="epoch 3/12", initial=0, interval=30, clock=clock)
        for _ in bar:
            clock.now += 1.0  # 1 it/s: a line at 30, 60 and 90 s, then the closing one
            bar.set_postfix(loss="0.41")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert lines[0] == "epoch 3/12: 30/96 it (31%), 1.0 it/s, 0:30 elapsed, 1:06 left, loss=0.41"
    assert lines[-1] == "epoch 3/12: 96/96 it (100%), 1.0 it/s, 1:36 in all, loss=0.41"


def test_resumed_loops_count_from_initial_and_unknown_totals_have_no_percentage():
    clock = _Clock()
    bar = LogProgress(desc="epoch 2/3", total=9, initial=4, interval=30, clock=clock)
    clock.now = 10.0
    bar.update(5)
    assert bar.line() == "epoch 2/3: 9/9 it (100%), 2.0 s/it, 0:10 elapsed"
    unknown = LogProgress(iter(range(5)), desc="resize", unit="img", interval=30, clock=clock)
    assert unknown.total is None and unknown.line() == "resize: 0 img"


def test_without_logging_configured_lines_go_to_stderr(monkeypatch):
    logger = logging.getLogger("vprlab.progress")
    monkeypatch.setattr(logger, "hasHandlers", lambda: False)
    stderr = _Stream(False)
    monkeypatch.setattr("sys.stderr", stderr)
    bar = LogProgress(range(2), desc="search", unit="db", interval=0)
    list(bar)
    out = stderr.getvalue()
    assert out.splitlines()[0].startswith("search: 1/2 db (50%)") and "\r" not in out


def test_disabled_shows_nothing_but_still_counts(monkeypatch):
    monkeypatch.setenv("VPRLAB_PROGRESS_INTERVAL", "0")
    bar = progress_bar(range(3), enabled=False)
    assert list(bar) == [0, 1, 2]
    bar.set_postfix(loss=1)  # the trainer calls it on every rank


def test_the_interval_variable_is_read_safely(monkeypatch):
    monkeypatch.setenv("VPRLAB_PROGRESS_INTERVAL", "bad")
    assert progress.log_interval() == progress.DEFAULT_INTERVAL_S
    monkeypatch.setenv("VPRLAB_PROGRESS_INTERVAL", "-5")
    assert progress.log_interval() == 0.0
