"""train.py and evaluate.py as a user runs them: Hydra picks the run folder, nothing else changes."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, tiny_train_overrides


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "VPRLAB_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_train_then_evaluate_from_the_command_line(tiny_synthetic, tmp_path):
    overrides = [o for o in tiny_train_overrides(tiny_synthetic.root.parent, tmp_path) if not o.startswith("paths.output_dir")]
    train = _run([str(REPO / "train.py"), *overrides, "trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    run_dirs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert f"run folder:   {run_dir}" in train.stdout
    assert "Recall@k before / after training" in train.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()  # Hydra's own record of the command

    evaluate = _run([
        str(REPO / "evaluate.py"), f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "benchmark=[synthetic]",
        f"paths.data_dir={tiny_synthetic.root.parent}", f"paths.log_dir={tmp_path / 'logs'}", "num_workers=0",
    ], cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "synthetic" in evaluate.stdout and "R@1" in evaluate.stdout
    assert list((tmp_path / "logs" / "evaluate" / "runs").glob("*/results.csv"))


def test_bad_override_fails_with_hydra_message(tmp_path):
    result = _run([str(REPO / "train.py"), "backbone=resnet5O", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2  # a user error, as documented (Hydra itself exits 1)
    assert "Could not find 'backbone/resnet5O'" in result.stderr and "resnet50" in result.stderr


def test_misspelled_key_is_rejected_before_training(tmp_path):
    result = _run([str(REPO / "train.py"), "trainer.max_epoch=3", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Could not override 'trainer.max_epoch'" in result.stderr and "not in struct" in result.stderr


def test_evaluate_py_command_line_errors_exit_2_with_hydra_message(tmp_path):
    typo = _run([str(REPO / "evaluate.py"), "batch_sise=8", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert typo.returncode == 2 and "Could not override 'batch_sise'" in typo.stderr


def test_train_help_says_recipe_is_evaluate_only(tmp_path):
    result = _run([str(REPO / "train.py"), "--help"], cwd=tmp_path)
    assert result.returncode == 0
    groups = result.stdout.split("== Config ==")[0]
    assert "recipe: reproduce_boq" in groups  # Hydra lists every group of conf/ ...
    assert "(recipe: evaluation recipes for evaluate.py only, `python evaluate.py recipe=<option>`; train.py refuses" in groups


def test_train_py_refuses_a_recipe_added_with_plus(tmp_path):
    """Hydra answers `recipe=...` with "use +recipe=..."; that must not fine-tune the recipe's released model."""
    result = _run([str(REPO / "train.py"), "+recipe=reproduce_boq_resnet50", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("train.py: configuration error: recipe=reproduce_boq_resnet50 is evaluation-only")
    assert "python evaluate.py recipe=reproduce_boq_resnet50" in result.stderr
    assert not (tmp_path / "train").exists() or not list((tmp_path / "train").rglob("*.ckpt"))
