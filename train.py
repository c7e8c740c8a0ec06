"""Train a VPR model: `python train.py backbone=dinov2 aggregator=boq dataset.root=/data/gsv-cities` (see docs/training.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vprlab.commands.train import run_training
from vprlab.utils.errors import exit_on_user_error, run_hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # A configuration or data mistake: one paragraph on stderr, exit status 2 (VPRLAB_DEBUG=1: traceback).
    # A run that raises leaves <run folder>/error.txt (run_training); a diverged one returns -inf to a sweep.
    with exit_on_user_error("train.py"):
        return run_training(cfg)


if __name__ == "__main__":
    # Exit 2 on Hydra's command-line errors too (an unknown key or option); VPRLAB_DEBUG=1: full tracebacks.
    run_hydra_app(main)
