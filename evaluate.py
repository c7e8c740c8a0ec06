"""Evaluate a checkpoint: `python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt benchmark=[msls_val,pitts30k_test,nordland]` (see docs/evaluation.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vprlab.commands.evaluate import run_evaluation


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    return run_evaluation(cfg)


if __name__ == "__main__":
    main()
