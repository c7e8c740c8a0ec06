"""evaluate.py checks every input before loading a model: all missing benchmarks and weights files are
listed at once; skip_missing=true evaluates the present ones and says which were skipped."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import compose_config

import vprlab.commands.evaluate as evaluate_command
from vprlab.commands.benchmarks import benchmark_table
from vprlab.commands.evaluate import run_evaluation
from vprlab.data.benchmarks import load_benchmark
from vprlab.evaluation.results import read_results

TINY_MODEL = ["backbone=resnet18_small", "backbone.eval_image_size=[48,64]", "aggregator=gem"]


def _cfg(data_dir, out, *extra):
    return compose_config("evaluate", [
        f"paths.data_dir={data_dir}", f"paths.output_dir={out}", f"paths.log_dir={out}", "num_workers=0",
        "batch_size=16", "cache=false", *TINY_MODEL, *extra,
    ])


def _never_load(monkeypatch):
    def fail(cfg):
        raise AssertionError("a model was loaded although inputs are missing")

    monkeypatch.setattr(evaluate_command, "load_model_for_eval", fail)


def test_every_missing_input_is_listed_before_any_model_is_loaded(tiny_synthetic, tmp_path, monkeypatch):
    _never_load(monkeypatch)
    monkeypatch.delenv("PITTS30K_ROOT", raising=False)
    monkeypatch.delenv("NORDLAND_ROOT", raising=False)
    cfg = _cfg(tiny_synthetic.root.parent, tmp_path, "benchmark=[synthetic,pitts30k_test,nordland]",
               f"ckpt_path={tmp_path / 'gone.ckpt'}")
    with pytest.raises(FileNotFoundError) as caught:
        run_evaluation(cfg)
    message = str(caught.value)
    assert message.startswith("3 inputs of this evaluation are missing (nothing was loaded):")
    assert f"ckpt_path={tmp_path / 'gone.ckpt'}: no such file" in message
    assert "benchmark pitts30k_test: benchmark root" in message and "set PITTS30K_ROOT=<folder>" in message
    assert "data: Pittsburgh 30k + GSV-Cities lists" in message
    assert "benchmark nordland:" in message and "set NORDLAND_ROOT=<folder>" in message
    assert "benchmark synthetic" not in message


def test_missing_benchmarks_suggest_skip_missing(tiny_synthetic, tmp_path, monkeypatch):
    _never_load(monkeypatch)
    monkeypatch.delenv("PITTS30K_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)1 input of this evaluation is missing.*skip_missing=true"):
        run_evaluation(_cfg(tiny_synthetic.root.parent, tmp_path, "benchmark=[synthetic,pitts30k_test]"))


def test_skip_missing_evaluates_the_present_ones_and_records_the_skipped(tiny_synthetic, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PITTS30K_ROOT", raising=False)
    metrics = run_evaluation(_cfg(tiny_synthetic.root.parent, tmp_path, "benchmark=[synthetic,pitts30k_test]", "skip_missing=true"))
    assert set(metrics) == {"synthetic"}
    assert "skipped (data missing, skip_missing=true): pitts30k_test" in capsys.readouterr().out
    rows = {r["benchmark"]: r for r in read_results(tmp_path)}
    assert rows["synthetic"]["status"] == "evaluated" and rows["synthetic"]["R@1"] is not None
    assert rows["pitts30k_test"]["status"].startswith("skipped: data missing (benchmark root")
    assert rows["pitts30k_test"].get("R@1") is None
    # The report reads the evaluated row and leaves the skipped one out.
    from vprlab.reports import collect_runs

    assert list(collect_runs(tmp_path)["benchmark"]) == ["synthetic"]


def test_custom_folder_with_npy_lists_of_any_prefix(tiny_synthetic, tmp_path):
    source = tiny_synthetic.root / "benchmark" if (tiny_synthetic.root / "benchmark").is_dir() else None
    bench_root = tmp_path / "mine"
    shutil.copytree(source, bench_root)
    for path in bench_root.glob("synthetic_*.npy"):
        path.rename(bench_root / path.name.replace("synthetic_", "mydata_"))
    loaded = load_benchmark(format="auto", root=bench_root, name="custom")
    reference = load_benchmark(format="npy", root=source, name="synthetic")
    assert loaded.num_db == reference.num_db and loaded.num_queries == reference.num_queries
    assert all(np.array_equal(a, b) for a, b in zip(loaded.positives, reference.positives))
    for path in bench_root.glob("mydata_*.npy"):
        shutil.copy(path, bench_root / path.name.replace("mydata_", "other_"))
    with pytest.raises(ValueError, match=r"several sets of \.npy lists \(mydata, other\); choose one with \+benchmark\.custom\.prefix"):
        load_benchmark(format="auto", root=bench_root, name="custom")


def test_benchmarks_listing_says_present_and_complete(tiny_synthetic, tmp_path):
    rows = {row["name"]: row for row in benchmark_table(tiny_synthetic.root.parent)}
    assert rows["synthetic"]["status"] == "complete"
    assert rows["pitts30k_test"]["status"] == "missing" or "PITTS30K_ROOT" in __import__("os").environ
    assert all(rows[name]["env"] for name in rows)
