"""Train a VPR model: `python train.py backbone=dinov2 aggregator=boq dataset.root=/data/gsv-cities`."""

from __future__ import annotations

import logging
import math
import signal
import sys

import hydra
from omegaconf import DictConfig

from vprlab.engine.trainer import train
from vprlab.utils.errors import exit_on_user_error, run_hydra_app
from vprlab.utils.run_status import record_failure

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        # A configuration or data mistake: one paragraph on stderr, exit status 2 (VPRLAB_DEBUG=1: traceback).
        # A run that raises leaves <run folder>/error.txt: reports list the failed job with its error.
        with exit_on_user_error("train.py"), record_failure(lambda: cfg.paths.output_dir):
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
    # The value Optuna sweeps optimise.
    return result["best_metric"] if result["monitor"] else None


if __name__ == "__main__":
    # Exit 2 on Hydra's command-line errors too (an unknown key or option); VPRLAB_DEBUG=1: full tracebacks.
    run_hydra_app(main)
