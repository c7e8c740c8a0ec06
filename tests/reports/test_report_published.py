"""One source of published numbers: published_results.csv, read by reports.published; the BoQ paper's
table is its rows whose source is the BoQ README."""

from __future__ import annotations

from importlib import resources

import pytest

from vprlab.reports.paper import paper_results, paper_table
from vprlab.reports.published import published_for, published_results

HEADER = "model,method,backbone,descriptor_dim,eval_size,benchmark,R@1,R@5,R@10,R@20,source,note\n"


def test_the_package_ships_one_published_results_file():
    shipped = sorted(p.name for p in resources.files("vprlab").joinpath("resources").iterdir() if p.name.endswith(".csv"))
    assert shipped == ["published_results.csv"]
    rows = published_results()
    assert all(r["source"] for r in rows)
    # Every BoQ README row is a paper row (under the paper's model name), every other row is not.
    boq = [r for r in rows if r["source"].startswith("BoQ README")]
    assert len(paper_results()) == len(boq) == 32 and len(rows) > len(boq)


def test_the_paper_rows_are_read_from_the_published_file_by_source(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(
        HEADER
        + 'boq_resnet50_16384,BoQ,resnet50,16384,384,Pitts30k-test,11.0,22.0,33.0,44.0,"BoQ README (test)",\n'
        + 'boq_resnet50_16384,BoQ,resnet50,16384,384,MSLS-val,55.0,66.0,,,"another paper (test)",\n'
        + 'mixvpr_resnet50_4096,MixVPR,resnet50,4096,320,Pitts30k-test,91.6,95.5,96.4,,"MixVPR README (test)",\n'
    )
    rows = published_results(path)
    assert [r["R@1"] for r in rows] == [11.0, 55.0, 91.6] and rows[1]["R@10"] is None and rows[2]["R@20"] is None
    assert published_for(rows, "mixvpr_resnet50_4096", "pitts30k_test")["R@5"] == 95.5
    paper = paper_results(path)
    assert [(r["model"], r["benchmark"], r["R@20"]) for r in paper] == [("boq_resnet50", "Pitts30k-test", 44.0)]


def test_the_paper_table_shows_the_shipped_boq_readme_numbers():
    table = paper_table([{"benchmark": "pitts30k_test", "R@1": 90.0, "R@5": 95.0, "R@10": 96.0}], model="boq_resnet50")
    pitts = table[table["benchmark"] == "Pitts30k-test"].iloc[0]
    assert (pitts["paper R@1"], pitts["ours R@1"], pitts["Δ R@1"]) == (92.4, 90.0, pytest.approx(90.0 - 92.4))
    assert len(table) == 15  # the 15 benchmarks the README gives for BoQ-ResNet50
