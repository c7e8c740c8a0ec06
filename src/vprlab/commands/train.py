"""What train.py runs: train the configured model (:func:`vprlab.engine.trainer.train`), record a run
that raises in ``<run folder>/error.txt``, turn a diverged run into the worst value a sweep can rank,
give an interrupted run the exit status of its signal, and print where the run's files are.

Both entry points enter here, at the same layer: ``train.py`` calls :func:`run_training`, ``evaluate.py``
calls :func:`vprlab.commands.evaluate.run_evaluation`; the engine below them never exits or prints
the run's summary.
"""

from __future__ import annotations

import logging
import math
import signal
import sys

from omegaconf import DictConfig

from vprlab.engine.trainer import train
from vprlab.utils.run_status import record_failure

log = logging.getLogger(__name__)


def run_training(cfg: DictConfig) -> float | None:
    """Train ``cfg`` (the composed train.yaml) and return the value Optuna sweeps optimise: the best
    monitored metric, None without a monitor, -inf for a run that diverged."""
    try:
        # A run that raises leaves <run folder>/error.txt: reports list the failed job with its error.
        with record_failure(lambda: cfg.paths.output_dir):
            result = train(cfg)
    except FloatingPointError as error:
        # A diverged run (the trainer's NaN guard) is one bad trial of a sweep, not the end of the sweep.
        # The returned metric is a recall, which sweeps maximise, so -inf ranks the trial last. (Not NaN:
        # hydra-optuna-sweeper 1.2/1.3 with Optuna 2.x stops the whole study on a NaN return.)
        log.warning("training diverged; returning -inf as this run's metric so the sweep goes on: %s", error)
        return -math.inf
    if result["interrupted"]:
        # Conventional exit status for a job ended by a signal (143 for SIGTERM, 130 for SIGINT).
        sys.exit(128 + signal.Signals[result["interrupted"]].value)
    print(f"run folder:   {result['run_dir']}")
    print(f"checkpoints:  {result['checkpoints']}")
    print(f"metrics file: {result['metrics_file']}")
    if result["wandb_dir"]:
        print(f"W&B run:      {result['wandb_dir']}")
        print("              (an offline run uploads with `wandb sync <that folder>`)")
    return result["best_metric"] if result["monitor"] else None
