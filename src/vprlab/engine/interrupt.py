"""Turn SIGTERM / SIGINT into a request to stop at the next step boundary.

SLURM preemption sends SIGTERM (then SIGKILL after a grace period); Ctrl-C sends SIGINT.
Inside :class:`StopOnSignal` the first such signal only sets ``requested``; the loop
checks it after each step, writes a resumable checkpoint and returns. A second SIGINT
restores the default behaviour, so an impatient user can still break out at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = signum
        log.warning("%s received: saving a resumable checkpoint at the end of this step", signal.Signals(signum).name)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
