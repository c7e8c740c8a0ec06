"""issue 21 items 1 and 7 in `vprlab report`: a benchmark measured on other image counts than published
is marked in every table (paper, compare, seeds, collect) and named under it; `--model` picks the
paper's numbers, never the runs, and refuses to set a released model against another's paper rows."""

from __future__ import annotations

import json

from test_report_grouping import _config, _eval_row, _evaluate_folder, write_train_run

from vprlab.evaluation.results import SUBSET_MARK
from vprlab.reports.cli import main as report

ST_LUCIA = {"num_db": 20, "num_queries": 10, "expected_num_db": 1549, "expected_num_queries": 1464}
NOTE = "st_lucia: evaluated on 20 database images and 10 queries; published: 1,549 and 1,464"


def test_paper_report_marks_a_subset_and_says_which_under_the_table(tmp_path):
    folder = _evaluate_folder(tmp_path / "outputs" / "reproduce_boq_resnet50" / "runs" / "t", [
        {**_eval_row("boq_resnet50_16384", "st_lucia", 0.0), **ST_LUCIA},
        {**_eval_row("boq_resnet50_16384", "pitts30k_test", 90.0), "num_db": 10000, "num_queries": 6816,
         "expected_num_db": 10000, "expected_num_queries": 6816},
    ])
    assert report(["paper", str(folder.parent.parent), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "paper_boq_resnet50.md").read_text()
    assert f"| St-Lucia | 100.0 | 0.0{SUBSET_MARK} | -100.0 |" in text
    assert "| Pitts30k-test | 92.4 | 90.0 | -2.4 |" in text  # the full benchmark: no mark
    assert NOTE in text and "not comparable with published ones" in text
    latex = (tmp_path / "rep" / "paper_boq_resnet50.tex").read_text()
    assert r"St-Lucia & 100.0 & 0.0$^\dagger$" in latex and r"st\_lucia: evaluated on 20 database images" in latex
    # evaluate.py's results.md of the same rows carries the mark too.
    assert f"0.00{SUBSET_MARK}" in (folder / "results.md").read_text() and NOTE in (folder / "results.md").read_text()


def test_training_runs_on_a_subset_are_marked_in_compare_seeds_and_collect(tmp_path):
    root = tmp_path / "sweep"
    for seed in (1, 2):
        config = _config(seed=seed, out=str(root / f"s{seed}"), num_layers=2)
        config["benchmark"] = {"st_lucia": {"name": "st_lucia", "expected_num_db": 1549, "expected_num_queries": 1464}}
        run = write_train_run(root / f"s{seed}", config, [10.0, 20.0 + seed], bench="st_lucia")
        with (run / "metrics.jsonl").open("a") as f:  # what the trainer logs with each evaluation
            f.write(json.dumps({"step": 6, "epoch": 2, "st_lucia/R@1": 20.0 + seed, "st_lucia/num_db": 20,
                                "st_lucia/num_queries": 10}) + "\n")
    for kind in ("methods", "seeds", "collect"):
        assert report([kind, str(root), "--out", str(tmp_path / kind)]) == 0
        text = next((tmp_path / kind).glob("*.md")).read_text() if kind != "collect" else (tmp_path / kind / "runs.md").read_text()
        assert SUBSET_MARK in text and NOTE in text, kind
    assert f"21.5 ± 0.7{SUBSET_MARK}" in (tmp_path / "methods" / "report.md").read_text()


def test_paper_model_comes_from_the_runs_and_a_contradicting_one_is_refused(tmp_path, capsys):
    folder = _evaluate_folder(tmp_path / "outputs" / "reproduce_boq_dinov2" / "runs" / "t",
                              [_eval_row("boq_dinov2_12288", "pitts30k_test", 93.0)])
    runs = str(folder.parent.parent)
    assert report(["paper", runs, "--out", str(tmp_path / "rep")]) == 0  # no --model: the runs' released model decides
    assert "| Pitts30k-test | 93.7 | 93.0 | -0.7 |" in (tmp_path / "rep" / "paper_boq_dinov2.md").read_text()
    assert report(["paper", runs, "--model", "boq_resnet50", "--out", str(tmp_path / "rep")]) == 2
    assert "the runs evaluated boq_dinov2_12288, whose paper numbers are boq_dinov2's; pass --model boq_dinov2" in capsys.readouterr().err
    assert not (tmp_path / "rep" / "paper_boq_resnet50.md").exists()
