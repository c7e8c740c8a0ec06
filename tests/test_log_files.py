"""A training run redirected to a file (`python train.py ... > run.log 2>&1`, SLURM output) gives a
readable log: no progress bar redrawn with carriage returns, no line longer than 200 characters."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, tiny_train_overrides


def test_a_training_log_file_has_no_carriage_returns_and_no_long_lines(tiny_synthetic, tmp_path):
    overrides = [o for o in tiny_train_overrides(tiny_synthetic.root.parent, tmp_path) if not o.startswith("paths.output_dir")]
    # As a user runs it: no VPRLAB_PROGRESS (the suite sets 0), so the file decides; a progress line
    # at every step so that the tiny run logs some.
    env = {k: v for k, v in os.environ.items() if k != "VPRLAB_PROGRESS"}
    env.update(WANDB_MODE="offline", PYTHONUNBUFFERED="1", VPRLAB_PROGRESS_INTERVAL="0")
    log_file = tmp_path / "run.log"
    with open(log_file, "w") as out:
        result = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *overrides, "trainer.max_epochs=1", "logger=none",
             f"paths.log_dir={tmp_path / 'logs'}"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600, check=False,
        )
    text = log_file.read_text(encoding="utf-8", errors="replace")
    assert result.returncode == 0, text[-3000:]
    lines = text.split("\n")
    assert "\r" not in text
    assert max(len(line) for line in lines) <= 200, max(lines, key=len)
    assert any("[vprlab.progress]" in line and "epoch 1/1: " in line and "loss=" in line for line in lines), text[-3000:]
    assert "Recall@k before / after training" in text and "…" not in text
    assert "suggested max number of worker" not in text
