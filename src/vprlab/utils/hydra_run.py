"""The Hydra callback that tells :func:`vprlab.utils.errors.run_hydra_app` the run has started.

Its own module because it subclasses Hydra's ``Callback``: ``vprlab.utils.errors`` (imported by every
entry point, ``import vprlab`` included) must not import Hydra.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback

from vprlab.utils.errors import mark_task_started


class MarkRunStarted(Callback):
    """Hydra callback (``hydra.callbacks`` of train.yaml / evaluate.yaml): the command line is composed and
    the run (or the sweep) starts; from here on an exit with status 1 is a failure, not a Hydra usage
    error. Marked before launching, so a sweep job that fails on a launcher (SLURM) keeps status 1; a
    sweep job whose own overrides do not compose then also exits 1, as Hydra does."""

    def on_run_start(self, config: Any = None, **kwargs: Any) -> None:
        mark_task_started()

    on_multirun_start = on_run_start
