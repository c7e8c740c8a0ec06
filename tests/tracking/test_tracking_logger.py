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


def test_a_resumed_logger_drops_the_rows_after_its_checkpoint_and_writes_each_value_once(tmp_path):
    with RunLogger(tmp_path, mode="disabled") as logger:
        logger.log({"model/params": 10}, step=0)
        for step in range(1, 7):
            logger.log({"train/loss": 1 / step, "epoch": 1 + (step - 1) // 3}, step=step)
        logger.log({"val/R@1": 50.0, "epoch": 1}, step=3)
        logger.log({"system/peak_mem_mb": 1.0}, step=6)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "tor')  # a torn line from a kill
    # Resume from the checkpoint at step 3: steps 4..6 are trained (and logged) again.
    with RunLogger(tmp_path, mode="disabled", resume_step=3) as logger:
        logger.log({"model/params": 10}, step=0)  # already there: not written again
        for step in range(4, 7):
            logger.log({"train/loss": 2 / step, "epoch": 2}, step=step)
        logger.log({"system/peak_mem_mb": 2.0}, step=6)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], sorted(k for k in r if k not in ("step", "time"))) for r in rows] == [
        (0, ["model/params"]), (1, ["epoch", "train/loss"]), (2, ["epoch", "train/loss"]), (3, ["epoch", "train/loss"]),
        (3, ["epoch", "val/R@1"]), (4, ["epoch", "train/loss"]), (5, ["epoch", "train/loss"]), (6, ["epoch", "train/loss"]),
        (6, ["system/peak_mem_mb"]),
    ]
    assert [r["train/loss"] for r in rows if r["step"] >= 4 and "train/loss" in r] == [2 / 4, 2 / 5, 2 / 6]
    assert rows[-1]["system/peak_mem_mb"] == 2.0
