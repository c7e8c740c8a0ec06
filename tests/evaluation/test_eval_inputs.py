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


def test_skip_missing_with_nothing_here_writes_the_skipped_rows_and_paper_table_then_exits_2(tmp_path, monkeypatch):
    """issue 21 item 5: no benchmark present. No model is loaded; results files list each skipped benchmark
    and why, the paper table marks them skipped, and the error names what is missing and how to get it
    without suggesting a benchmark that is itself missing; evaluate.py exits 2 (a user error)."""
    import subprocess
    import sys

    from conftest import REPO

    from vprlab.utils.errors import MissingFileError

    _never_load(monkeypatch)
    for env in ("PITTS30K_ROOT", "ST_LUCIA_ROOT"):
        monkeypatch.delenv(env, raising=False)
    overrides = ["benchmark=[pitts30k_test,st_lucia]", "skip_missing=true", "compare_with_paper=boq_resnet50"]
    with pytest.raises(MissingFileError) as caught:
        run_evaluation(_cfg(tmp_path / "nodata", tmp_path, *overrides))
    message = str(caught.value)
    assert "none of the 2 selected benchmarks is here" in message and "pass e.g. benchmark=[pitts30k_test]" not in message
    assert "  - pitts30k_test: benchmark root" in message and "PITTS30K_ROOT" in message
    assert "  - st_lucia: benchmark root" in message and "ST_LUCIA_ROOT" in message
    rows = {r["benchmark"]: r for r in read_results(tmp_path)}
    assert set(rows) == {"pitts30k_test", "st_lucia"}
    assert all(r["status"].startswith("skipped: data missing (benchmark root") and r["model"] == "resnet18-GeM-untrained"
               for r in rows.values())
    paper = (tmp_path / "paper_comparison_boq_resnet50.md").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in paper.splitlines() if line.startswith("| ")}
    assert "| skipped | 92.4 |" in lines["pitts30k_test"] and "| skipped |" in lines["st_lucia"]
    assert "- st_lucia: data missing (benchmark root" in paper

    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *overrides, *TINY_MODEL, f"paths.data_dir={tmp_path / 'nodata'}",
         f"paths.output_dir={tmp_path / 'cli'}", f"paths.log_dir={tmp_path / 'cli'}"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "none of the 2 selected benchmarks is here" in result.stderr
    assert {r["benchmark"] for r in read_results(tmp_path / "cli")} == {"pitts30k_test", "st_lucia"}
