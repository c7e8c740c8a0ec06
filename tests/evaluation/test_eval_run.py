"""evaluate.py's logic: a trained checkpoint re-evaluated gives the trainer's numbers, written to files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config

from vprlab.commands.evaluate import run_evaluation
from vprlab.engine.checkpoint import load_checkpoint
from vprlab.evaluation.results import read_results


def _eval_cfg(data_dir, out, *extra):
    return compose_config("evaluate", [
        "benchmark=[synthetic]", f"paths.data_dir={data_dir}", f"paths.output_dir={out}", f"paths.log_dir={out}",
        "num_workers=0", "batch_size=16", *extra,
    ])


def test_checkpoint_evaluation_matches_training_and_writes_results(trained_run, tiny_synthetic, tmp_path):
    result, run_dir = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    metrics = run_evaluation(_eval_cfg(tiny_synthetic.root.parent, tmp_path, f"ckpt_path={ckpt}"))
    for k in (1, 5, 10, 20):
        assert metrics["synthetic"][f"R@{k}"] == pytest.approx(result["metrics"]["synthetic"][f"R@{k}"])
    rows = read_results(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["benchmark"] == "synthetic" and row["image_size"] == "48x64"
    assert row["descriptor_dim"] == 32 * 4 and len(row["checkpoint_hash"]) == 12
    assert row["R@1"] == pytest.approx(metrics["synthetic"]["R@1"])
    assert json.loads((tmp_path / "results.json").read_text())  # both files are written
    assert (tmp_path / "results.csv").read_text().startswith("model,")


def test_bare_weights_evaluate_like_the_checkpoint(trained_run, tiny_synthetic, tmp_path):
    result, run_dir = trained_run
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    torch.save(state["model"], tmp_path / "weights.pth")
    arch = [
        "backbone=resnet18", "backbone.eval_image_size=[48,64]", "aggregator.proj_channels=32",
        "aggregator.num_queries=8", "aggregator.num_layers=1", "aggregator.row_dim=4",
    ]
    metrics = run_evaluation(_eval_cfg(tiny_synthetic.root.parent, tmp_path, f"weights_path={tmp_path / 'weights.pth'}", *arch))
    assert metrics["synthetic"]["R@1"] == pytest.approx(result["metrics"]["synthetic"]["R@1"])


def test_weights_for_another_model_name_the_keys(trained_run, tiny_synthetic, tmp_path):
    _, run_dir = trained_run
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    torch.save(state["model"], tmp_path / "weights.pth")
    cfg = _eval_cfg(tiny_synthetic.root.parent, tmp_path, f"weights_path={tmp_path / 'weights.pth'}", "backbone=resnet18", "aggregator=gem")
    with pytest.raises(ValueError, match=r"weights\.pth' do not match the configured model: missing keys \['aggregator\.p'\]"):
        run_evaluation(cfg)


def test_no_benchmark_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no benchmark selected"):
        run_evaluation(compose_config("evaluate", ["benchmark=[]", f"paths.output_dir={tmp_path}"]))


def test_channels_last_evaluation_feeds_nhwc_batches_and_gives_the_same_recalls(trained_run, tiny_synthetic, tmp_path, monkeypatch):
    from vprlab.models.vpr_model import VPRModel

    result, run_dir = trained_run
    formats = []
    real_forward = VPRModel.forward

    def spy(self, x, *args, **kwargs):
        formats.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return real_forward(self, x, *args, **kwargs)

    monkeypatch.setattr(VPRModel, "forward", spy)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    metrics = run_evaluation(_eval_cfg(tiny_synthetic.root.parent, tmp_path, f"ckpt_path={ckpt}", "channels_last=true", "cache=false"))
    assert formats and all(formats)
    for k in (1, 5, 10, 20):
        assert metrics["synthetic"][f"R@{k}"] == pytest.approx(result["metrics"]["synthetic"][f"R@{k}"])
