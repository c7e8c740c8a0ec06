import json
import logging

import pytest

from vprlab.tracking import RunLogger, read_metrics
from vprlab.tracking.wandb_offline import read_offline_run


def test_local_metrics_file_without_wandb(tmp_path):
    with RunLogger(tmp_path, {"a": 1}, mode="disabled") as logger:
        logger.log({"train/loss": 1.5, "nan": float("nan")}, step=1)
        logger.log({"train/loss": 1.0}, step=2)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["train/loss"] == 1.5 and rows[0]["nan"] == "nan"
    assert logger.wandb_run is None


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "trai')
    assert read_metrics(path) == [{"step": 1}]


def test_wandb_failure_only_warns(tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        logger = RunLogger(tmp_path, {}, mode="online")
    assert "W&B could not start" in caplog.text and "unreachable" in caplog.text
    logger.log({"x": 1}, step=3)
    logger.finish()
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["x"] == 1


def test_unknown_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="logger.mode='onlin'"):
        RunLogger(tmp_path, {}, mode="onlin")


def test_offline_wandb_run_keeps_summary(tmp_path):
    with RunLogger(tmp_path, {"lr": 0.1}, mode="offline", project="vprlab-test") as logger:
        logger.log({"loss": 2.0}, step=1)
        logger.update_summary({"synthetic/R@1": 42.0})
        run_dir = logger.wandb_dir
    assert run_dir is not None and run_dir.exists()
    run = read_offline_run(next(run_dir.parent.glob("offline-run-*")))
    assert run["summary"]["synthetic/R@1"] == 42.0
    assert any(row.get("loss") == 2.0 for row in run["history"])
    assert run["config"]["lr"] == 0.1
