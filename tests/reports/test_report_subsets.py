"""issue 21 items 1 and 7 in `vprlab report`: a benchmark measured on other image counts than published
is marked in every table (paper, compare, seeds, collect) and named under it; `--model` picks the
paper's numbers, never the runs, and refuses to set a released model against another's paper rows."""

from __future__ import annotations

import json

import pytest

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


def test_paper_report_of_any_published_model_lists_its_sources_and_says_no_published_number(tmp_path, capsys):
    """issue 23 item 2: `report paper` sets every published model (not only BoQ) against its own rows:
    Conv-AP's README gives R@1/R@5 (R@10 'not given'), Tokyo 24/7 has no Conv-AP number, and a published
    benchmark not measured here keeps '-'."""
    import csv

    folder = _evaluate_folder(tmp_path / "outputs" / "convap" / "runs" / "t", [
        _eval_row("convap_resnet50_2048", "nordland", 41.0), _eval_row("convap_resnet50_2048", "tokyo247", 70.0)])
    assert report(["paper", str(folder.parent.parent), "--out", str(tmp_path / "rep")]) == 0  # the runs' model decides
    text = (tmp_path / "rep" / "paper_convap_resnet50_2048.md").read_text()
    assert text.startswith("# Published numbers vs measured (convap_resnet50_2048)")
    assert "| Nordland\\* | 40.3 | 41.0 | +0.7 | 56.6 | 44.0 | -12.6 | not given | 45.0 |  | 1 | [1] |" in text
    assert "| Tokyo 24/7 |  | 70.0 |  |  | 73.0 |  |  | 74.0 |  | 1 | no published number |" in text
    assert "| Pitts30k-test | 90.6 | - | - | 95.1 | - | - | not given | - |  | - | [1] |" in text
    assert "- [1] GSV-Cities README (github.com/amaralibey/gsv-cities, README.md @77ffffc" in text
    with (tmp_path / "rep" / "paper_convap_resnet50_2048.csv").open(newline="") as f:
        back = {r["benchmark"]: r for r in csv.DictReader(f)}
    assert back["Tokyo 24/7"]["published"] == "no published number" and back["Tokyo 24/7"]["paper R@1"] == ""
    assert float(back["Nordland*"]["Δ R@1"]) == pytest.approx(0.7) and back["Nordland*"]["paper R@10"] == ""
    latex = (tmp_path / "rep" / "paper_convap_resnet50_2048.tex").read_text()
    assert r"Nordland$^*$ & 40.3 & 41.0 & +0.7 & 56.6 & 44.0 & -12.6 & not given & 45.0 &  & [1] \\" in latex
    assert r"Tokyo 24/7 &  & 70.0 &  &  & 73.0 &  &  & 74.0 &  & no published number \\" in latex
    assert "Published: [1] GSV-Cities README" in latex
    # A published name the file has no number for: every measured benchmark says so (no other model's rows).
    folder = _evaluate_folder(tmp_path / "outputs" / "netvlad" / "runs" / "t", [_eval_row("netvlad_vgg16_pitts30k", "pitts30k_test", 80.0)])
    assert report(["paper", str(folder.parent.parent), "--out", str(tmp_path / "rep2")]) == 0
    text = (tmp_path / "rep2" / "paper_netvlad_vgg16_pitts30k.md").read_text()
    assert "| Pitts30k-test |  | 80.0 |  |  | 83.0 |  |  | 84.0 |  | 1 | no published number |" in text and "BoQ" not in text
    # --model takes any published name; a name with no published numbers and no registry entry is refused.
    assert report(["paper", str(folder.parent.parent), "--model", "netvlad_vgg16_pitts30k", "--out", str(tmp_path / "rep3")]) == 0
    assert report(["paper", str(folder.parent.parent), "--model", "selavpr", "--out", str(tmp_path / "rep4")]) == 2
    assert "--model='selavpr': neither a published model nor a model of published_results.csv" in capsys.readouterr().err
