"""Faults during training: NaN losses, corrupt images, SIGTERM and SIGKILL never lose finished work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, RESUMABLE_SCHEDULE, compose_config, tiny_train_overrides

from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.engine.checkpoint import load_checkpoint
from vprlab.engine.trainer import train
from vprlab.losses.metric import MinedMetricLoss
from vprlab.tracking import read_metrics


def _nan_on_steps(monkeypatch, bad_steps: set[int]):
    original = MinedMetricLoss.forward
    calls = {"n": 0}

    def forward(self, descriptors, labels):
        loss, stats = original(self, descriptors, labels)
        step, calls["n"] = calls["n"], calls["n"] + 1
        return (loss * float("nan") if step in bad_steps else loss), stats

    monkeypatch.setattr(MinedMetricLoss, "forward", forward)


def test_nan_steps_are_skipped_and_counted(monkeypatch, tiny_synthetic, tmp_path):
    _nan_on_steps(monkeypatch, {1, 2})
    result = train(compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path)))
    assert result["skipped_steps"] == 2 and result["step"] == 6
    weights = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["model"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert [r["train/skipped_steps"] for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r][-1] == 2


def test_persistent_nan_stops_and_keeps_the_last_good_checkpoint(monkeypatch, tiny_synthetic, tmp_path):
    _nan_on_steps(monkeypatch, set(range(3, 100)))  # epoch 1 (steps 0-2) is fine, epoch 2 diverges
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "trainer.max_nonfinite_steps=2"))
    with pytest.raises(FloatingPointError, match=r"2 steps in a row with non-finite loss.*last good checkpoint is untouched.*optimizer.lr"):
        train(cfg)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 1 and state["step"] == 3


def test_corrupt_jpeg_fails_by_name_or_is_skipped(tiny_synthetic):
    ds = GSVCitiesDataset(tiny_synthetic.gsv_root, tiny_synthetic.cities, img_per_place=2, min_img_per_place=4)
    broken = ds.place_image_paths(0)[0]
    original = open(broken, "rb").read()
    try:
        with open(broken, "wb") as f:
            f.write(original[:200])  # a truncated JPEG, as a crashed copy leaves it
        with pytest.raises(OSError, match=rf"cannot read training image '{broken}'.*bad_image_policy=skip"):
            for seed in range(20):  # some draw picks the broken image
                ds[(0, seed)]
        skipping = GSVCitiesDataset(tiny_synthetic.gsv_root, tiny_synthetic.cities, img_per_place=2,
                                    min_img_per_place=4, bad_image_policy="skip")
        for seed in range(20):
            images, labels = skipping[(0, seed)]
            assert images.shape[0] == 2 and labels.tolist() == [labels[0].item()] * 2
        assert skipping.bad_images == {str(broken)}
    finally:
        with open(broken, "wb") as f:
            f.write(original)


def _start_training(tiny_synthetic, run_dir, *extra) -> subprocess.Popen:
    overrides = [o for o in tiny_train_overrides(tiny_synthetic.root.parent, run_dir) if not o.startswith("paths.output_dir")]
    args = [sys.executable, str(REPO / "train.py"), *overrides, "trainer.max_epochs=3", *RESUMABLE_SCHEDULE,
            f"hydra.run.dir={run_dir}", "ckpt_path=auto", "logger=none", *extra]
    env = {**os.environ, "VPRLAB_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_steps(run_dir, steps: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.exists() and sum(1 for r in read_metrics(path) if "train/loss" in r) >= steps:
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"training did not reach step {steps}")


def _recalls(metrics):
    return {k: v for k, v in metrics["synthetic"].items() if k.startswith("R@")}


def test_sigterm_saves_a_resumable_checkpoint_and_resume_matches(trained_run, tiny_synthetic, tmp_path):
    uninterrupted, _ = trained_run
    run_dir = tmp_path / "run"
    proc = _start_training(tiny_synthetic, run_dir)
    _wait_for_steps(run_dir, 4, proc)  # inside epoch 2
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "stopped by SIGTERM" in out and "ckpt_path=auto" in out
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert 4 <= state["step"] < 9 and state["epoch"] == state["step"] // 3  # mid-run, resumable

    resumed = _start_training(tiny_synthetic, run_dir)  # same run folder, ckpt_path=auto
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert f"resumed from {run_dir / 'checkpoints' / 'last.ckpt'}" in out
    final = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert final["step"] == 9
    assert _recalls(final["history"][-1]["metrics"]) == _recalls(uninterrupted["metrics"])


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(trained_run, tiny_synthetic, tmp_path):
    uninterrupted, _ = trained_run
    run_dir = tmp_path / "run"
    proc = _start_training(tiny_synthetic, run_dir, "trainer.checkpoint_every_n_steps=1")
    _wait_for_steps(run_dir, 5, proc)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: only atomic writes protect the file
    proc.communicate(timeout=60)
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert state["step"] >= 4

    resumed = _start_training(tiny_synthetic, run_dir, "trainer.checkpoint_every_n_steps=1")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    final = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert _recalls(final["history"][-1]["metrics"]) == _recalls(uninterrupted["metrics"])
