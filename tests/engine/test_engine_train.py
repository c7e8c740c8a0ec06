"""End to end: a short BoQ training run on synthetic data, its outputs, and exact resume."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import RESUMABLE_SCHEDULE as SCHEDULE
from conftest import compose_config, requires_cuda, tiny_train_overrides

from vprlab.engine.checkpoint import load_checkpoint
from vprlab.engine.trainer import train
from vprlab.tracking import read_metrics
from vprlab.tracking.wandb_offline import read_offline_run


@pytest.fixture()
def full_run(trained_run):
    return trained_run


def test_training_writes_everything_a_run_needs(full_run):
    result, out = full_run
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["aggregator"]["num_queries"] == 8 and saved["paths"]["output_dir"] == str(out)

    rows = read_metrics(out / "metrics.jsonl")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 3 * 3  # 24 places / 8 per batch = 3 steps x 3 epochs, logged every step
    assert sum(losses[-3:]) < sum(losses[:3]), f"loss did not go down: {losses}"
    evals = [r for r in rows if "synthetic/R@1" in r]
    assert len(evals) == 4  # before training + every epoch
    assert evals[-1]["synthetic/R@1"] == result["metrics"]["synthetic"]["R@1"]

    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 3 and ckpt["step"] == 9 and ckpt["config"]["seed"] == 1
    assert set(ckpt) >= {"model", "optimizer", "scaler", "rng", "best_metric", "history"}
    best = load_checkpoint(out / "checkpoints" / "best.ckpt")
    assert best["best_metric"] == max(h["metrics"]["synthetic"]["R@1"] for h in ckpt["history"][1:])

    wandb_run = read_offline_run(result["wandb_dir"])
    assert wandb_run["summary"]["synthetic/R@1"] == result["metrics"]["synthetic"]["R@1"]
    assert "before/synthetic/R@1" in wandb_run["summary"]
    assert wandb_run["config"]["aggregator"]["num_queries"] == 8


def test_resume_continues_to_the_same_result(full_run, tiny_synthetic, tmp_path):
    result, out = full_run
    first = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "trainer.max_epochs=1", *SCHEDULE))
    train(first)
    resumed = compose_config("train", tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path, "trainer.max_epochs=3", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}", *SCHEDULE
    ))
    result2 = train(resumed)
    recalls = lambda r: {k: v for k, v in r["metrics"]["synthetic"].items() if k.startswith("R@")}
    assert recalls(result2) == recalls(result)
    a = load_checkpoint(out / "checkpoints" / "last.ckpt")["model"]
    b = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_dataset_root_is_a_clear_error(tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tmp_path / "nowhere", tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"dataset root '.*nowhere/synthetic/gsv' does not exist.*make quickstart"):
        train(cfg)


def test_dinov2_size_not_multiple_of_14_fails_before_building(tmp_path):
    cfg = compose_config("train", ["backbone=dinov2", "backbone.train_image_size=[320,320]", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="dataset.image_size: image size 320 is not a multiple of the DINOv2 patch size 14; use 322 or 308"):
        train(cfg)


def test_too_few_places_for_one_batch_fails_early(tiny_synthetic, tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "dataset.places_per_batch=64"))
    with pytest.raises(ValueError, match=r"dataset has 24 places .* fewer than dataset.places_per_batch=64"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_compiled_training_runs(tiny_synthetic, tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "trainer.compile=true", "trainer.max_epochs=1"))
    result = train(cfg)
    assert result["step"] == 3 and 0 <= result["metrics"]["synthetic"]["R@1"] <= 100


def test_decoding_on_the_device_trains_exactly_like_tensor_decoding_in_the_workers(tiny_synthetic, tmp_path):
    """dataset.decoder=device (nvjpeg on a GPU; here the CPU) changes who decodes, not what is learnt."""
    results = {}
    for decoder in ("torchvision", "device"):
        cfg = compose_config("train", tiny_train_overrides(
            tiny_synthetic.root.parent, tmp_path / decoder, f"dataset.decoder={decoder}", "trainer.max_epochs=1",
            "trainer.eval_before_training=false"))
        results[decoder] = train(cfg)
    assert results["device"]["step"] == 3
    assert results["device"]["weights_hash"] == results["torchvision"]["weights_hash"]
    recalls = {d: {k: v for k, v in r["metrics"]["synthetic"].items() if k.startswith("R@")} for d, r in results.items()}
    assert recalls["device"] == recalls["torchvision"] and len(recalls["device"]) == 4


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_on_cuda_with_device_decoding(tiny_synthetic, tmp_path, precision):
    cfg = compose_config("train", tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path, f"trainer.precision={precision}", "trainer.max_epochs=1",
        "trainer.device=cuda", "dataset.decoder=device", "trainer.channels_last=true"))
    result = train(cfg)
    assert result["step"] == 3 and result["skipped_steps"] == 0
    assert 0 <= result["metrics"]["synthetic"]["R@1"] <= 100


@pytest.mark.slow
def test_peak_memory_is_this_jobs_not_an_earlier_jobs(tiny_synthetic, tmp_path):
    """A sweep runs its jobs in one process: an earlier job's peak (here a 1 GiB block, freed) must not
    appear as this job's peak memory (ru_maxrss, the old measurement, would report it)."""
    import numpy as np

    from vprlab.utils.memory import KIND_RSS, current_rss_bytes

    if current_rss_bytes() is None:
        pytest.skip("RSS is read from /proc/self/statm (Linux)")
    before = current_rss_bytes() / 2**20
    block = np.ones(2**30, dtype=np.uint8)
    del block
    train(compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "trainer.max_epochs=1")))
    system = {k: v for r in read_metrics(tmp_path / "metrics.jsonl") for k, v in r.items() if k.startswith("system/")}
    assert system["system/peak_mem_kind"] == KIND_RSS
    assert system["system/start_mem_mb"] <= system["system/peak_mem_mb"] < before + 600


@pytest.mark.slow  # three short training runs: about 30 s on 2 CPU cores
def test_resume_from_an_older_checkpoint_writes_each_metrics_row_once(tiny_synthetic, tmp_path):
    """Train 2 epochs (1, then continued to 2), resume from the epoch-1 checkpoint to 2 again:
    the rows the first run wrote after epoch 1 are replaced, not duplicated."""
    import shutil
    from collections import Counter

    def run(epochs, *extra):
        cfg = compose_config("train", tiny_train_overrides(
            tiny_synthetic.root.parent, tmp_path, f"trainer.max_epochs={epochs}", "logger.mode=disabled", *SCHEDULE, *extra))
        return train(cfg)

    checkpoints = tmp_path / "checkpoints"
    run(1)
    shutil.copy(checkpoints / "last.ckpt", tmp_path / "epoch1.ckpt")
    run(2, f"ckpt_path={checkpoints / 'last.ckpt'}")
    before = read_metrics(tmp_path / "metrics.jsonl")
    run(2, f"ckpt_path={tmp_path / 'epoch1.ckpt'}")
    rows = read_metrics(tmp_path / "metrics.jsonl")

    def keys(rows):
        return Counter((r.get("epoch"), r["step"], k) for r in rows for k in r if k not in ("step", "time", "epoch"))

    counts = keys(rows)
    assert [key for key, n in counts.items() if n > 1] == []
    assert set(counts) == set(keys(before))  # the same rows as the uninterrupted history, none lost
    losses = [(r["epoch"], r["step"]) for r in rows if "train/loss" in r]
    assert losses == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]  # 3 steps per epoch, in order
    assert [r["step"] for r in rows if "synthetic/R@1" in r] == [0, 3, 6]
