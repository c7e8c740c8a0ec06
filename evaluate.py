"""Evaluate a checkpoint: `python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt benchmark=[msls_val,pitts30k_test,nordland]` (see docs/evaluation.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vprlab.commands.evaluate import run_evaluation
from vprlab.config.checks import validate_evaluate_values
from vprlab.utils.errors import exit_on_user_error, run_hydra_app
from vprlab.utils.run_status import record_failure


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    # A configuration or data mistake: one paragraph on stderr, exit status 2 (VPRLAB_DEBUG=1: traceback).
    # A run that raises leaves <run folder>/error.txt: reports list the failed job with its error.
    with exit_on_user_error("evaluate.py"), record_failure(lambda: cfg.paths.output_dir):
        validate_evaluate_values(cfg)  # before the model is built or a benchmark read
        return run_evaluation(cfg)


if __name__ == "__main__":
    # Exit 2 on Hydra's command-line errors too (an unknown key or option); VPRLAB_DEBUG=1: full tracebacks.
    run_hydra_app(main)
