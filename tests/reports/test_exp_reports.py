"""Reports from run tables: mean +- std over seeds, the aggregator comparison and the paper table."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from vprlab.reports import collect_runs
from vprlab.reports.paper import paper_report, paper_table
from vprlab.reports.tables import (
    methods_report,
    format_mean_std,
    mean_std,
    sweep_report,
)


def _runs() -> pd.DataFrame:
    rows = []
    for aggregator, dim, r1s in (("boq", 4096, (50.0, 54.0)), ("gem", 256, (30.0, 30.0)), ("avg", 256, (20.0,))):
        for seed, r1 in enumerate(r1s, start=1):
            rows.append({"run_dir": f"/runs/{aggregator}-{seed}", "aggregator": aggregator, "seed": seed, "benchmark": "synthetic",
                         "R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "descriptor_dim": dim, "params": 1000,
                         "train_img_per_s": 100.0, "eval_img_per_s": 300.0, "peak_mem_mb": 900.0,
                         "aggregator.num_layers": 2, "aggregator.num_queries": 8})
    return pd.DataFrame(rows)


def test_mean_std_over_seeds():
    table = mean_std(_runs(), ["aggregator"], extra=["descriptor_dim"]).set_index("aggregator")
    assert table.loc["boq", "R@1"] == 52.0 and table.loc["boq", "R@1 std"] == pytest.approx(2.8284, abs=1e-3)
    assert table.loc["avg", "n"] == 1 and table.loc["boq", "seeds"] == "1,2" and table.loc["avg", "R@1 std"] == 0.0
    shown = format_mean_std(table.reset_index()).set_index("aggregator")
    assert shown.loc["boq", "R@1"] == "52.0 ± 2.8" and shown.loc["avg", "R@1"] == "20.0"


def test_methods_report_writes_table_and_plot(tmp_path):
    paths = methods_report(_runs(), tmp_path)
    assert paths["png"].stat().st_size > 1000
    markdown = paths["markdown"].read_text()
    assert "r1_vs_dim.png" in markdown and "52.0 ± 2.8" in markdown and "| boq | synthetic |" in markdown


def test_sweep_report_heatmap(tmp_path):
    paths = sweep_report(_runs()[lambda d: d.aggregator == "boq"], tmp_path)
    assert paths["png"].is_file()
    assert "| 2 | 8 | 52.0 ± 2.8 |" in paths["markdown"].read_text()


def test_paper_table_lines_up_measured_with_published(tmp_path):
    measured = [{"benchmark": "pitts30k_test", "R@1": 90.4, "R@5": 96.5, "R@10": 97.0},
                {"benchmark": "synthetic", "R@1": 50.0, "R@5": 60.0, "R@10": 70.0}]
    table = paper_table(measured, "boq_resnet50").set_index("benchmark")
    assert table.loc["Pitts30k-test", "paper R@1"] == 92.4
    assert table.loc["Pitts30k-test", "Δ R@1"] == pytest.approx(-2.0)
    assert pd.isna(table.loc["MSLS-val", "ours R@1"]) and table.loc["synthetic", "ours R@1"] == 50.0
    paths = paper_report(measured, tmp_path)
    assert "| Pitts30k-test | 92.4 | 90.4 | -2.0 |" in paths["markdown"].read_text()
    latex = paths["latex"].read_text()
    assert r"\begin{tabular}" in latex and "Pitts30k-test & 92.4 & 90.4 & -2.0" in latex and r"$\Delta$" in latex


def test_collect_reads_train_and_evaluate_folders(tmp_path):
    train = tmp_path / "a"
    train.mkdir()
    (train / "config.yaml").write_text(yaml.safe_dump({
        "seed": 3, "logger": {"group": "g"}, "trainer": {"max_epochs": 1},
        "backbone": {"model_name": "resnet18"}, "aggregator": {"_target_": "vprlab.models.aggregators.GeM", "p": 3.0}}))
    lines = [{"step": 0, "model/descriptor_dim": 256, "model/params": 10},
             {"step": 2, "time": 1.0, "train/img_per_s": 50.0, "epoch": 1},
             {"step": 2, "time": 3.0, "b/R@1": 10.0, "b/R@5": 20.0, "b/extract_img_per_s": 80.0, "epoch": 1},
             {"step": 2, "system/peak_mem_mb": 512.0}]
    (train / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    evaluate = tmp_path / "b"
    evaluate.mkdir()
    (evaluate / "config.yaml").write_text("seed: 1\n")
    (evaluate / "results.json").write_text(json.dumps([{"model": "m", "benchmark": "pitts30k_test", "R@1": 91.0}]))
    (tmp_path / "a" / ".hydra").mkdir()
    (tmp_path / "a" / ".hydra" / "config.yaml").write_text("seed: 3\n")

    runs = collect_runs(tmp_path).set_index("benchmark")
    assert len(runs) == 2
    assert runs.loc["b", "aggregator"] == "gem" and runs.loc["b", "R@1"] == 10.0 and runs.loc["b", "descriptor_dim"] == 256
    assert runs.loc["b", "train_img_per_s"] == 50.0 and runs.loc["b", "eval_img_per_s"] == 80.0
    assert runs.loc["b", "peak_mem_mb"] == 512.0 and runs.loc["b", "status"] == "complete" and runs.loc["b", "group"] == "g"
    assert runs.loc["pitts30k_test", "R@1"] == 91.0
