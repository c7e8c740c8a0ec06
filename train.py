"""Train a VPR model: `python train.py backbone=dinov2 aggregator=boq dataset.root=/data/gsv-cities`."""

from __future__ import annotations

import signal
import sys

import hydra
from omegaconf import DictConfig

from vprlab.engine.trainer import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    result = train(cfg)
    if result["interrupted"]:
        # Conventional exit status for a job ended by a signal (143 for SIGTERM, 130 for SIGINT).
        sys.exit(128 + signal.Signals[result["interrupted"]].value)
    print(f"run folder:   {result['run_dir']}")
    print(f"checkpoints:  {result['checkpoints']}")
    print(f"metrics file: {result['metrics_file']}")
    if result["wandb_dir"]:
        print(f"W&B run:      {result['wandb_dir']}  (offline runs upload with `wandb sync {result['wandb_dir']}`)")
    # The value Optuna sweeps optimise.
    return result["best_metric"] if result["monitor"] else None


if __name__ == "__main__":
    main()
