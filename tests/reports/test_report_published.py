"""One source of published numbers: published_results.csv, read by reports.published; the BoQ paper's
table is its rows whose source is the BoQ README."""

from __future__ import annotations

from importlib import resources

import pytest

from vprlab.pretrained import PUBLISHED_MODELS, published_model
from vprlab.reports.paper import paper_results, paper_table
from vprlab.reports.published import (
    paper_benchmark,
    published_all,
    published_for,
    published_problems,
    published_results,
)

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


def test_every_shipped_number_has_a_source_an_r1_and_a_benchmark_config():
    rows = published_results()
    assert published_problems(rows) == []
    assert all(row["source"].strip() and row["R@1"] is not None for row in rows)
    assert all(paper_benchmark(row["benchmark"]) == row["benchmark"] for row in rows)  # the paper's own spelling
    keys = [(row["model"], row["benchmark"], row["source"]) for row in rows]
    assert len(keys) == len(set(keys))


def test_every_shipped_model_is_a_published_name_with_its_methods_size():
    rows = published_results()
    unknown = sorted({row["model"] for row in rows} - set(PUBLISHED_MODELS))
    assert unknown == []
    for row in rows:
        spec = published_model(row["model"])
        assert (row["method"], int(row["descriptor_dim"])) == (spec.method, spec.descriptor_dim), row["model"]


def test_where_sources_agree_on_a_cell_the_methods_own_comes_first():
    """The rule: the first row of a model and benchmark is compared with; the method's own README or
    repository (its registry entry's repo) is kept first."""
    rows = published_results()
    for row in rows:
        if row["model"] in PUBLISHED_MODELS and len(published_all(rows, row["model"], row["benchmark"])) > 1:
            first = published_for(rows, row["model"], row["benchmark"])
            assert published_model(row["model"]).repo.lower() in first["source"].lower(), (row["model"], row["benchmark"])


def test_the_readme_rows_of_mixvpr_convap_salad_are_shipped():
    rows = published_results()
    assert published_for(rows, "mixvpr_resnet50_128", "msls_val")["R@1"] == 78.5
    convap = published_for(rows, "convap_resnet50_2048", "nordland")
    assert (convap["R@1"], convap["R@5"], convap["R@10"]) == (40.3, 56.6, None) and "gsv-cities" in convap["source"]
    salad = published_for(rows, "salad_dinov2_8448", "msls_challenge")
    assert (salad["R@1"], salad["R@10"]) == (75.0, 91.3) and "serizba/salad" in salad["source"]
    assert published_for(rows, "sfrs_vgg16_4096", "tokyo247")["R@1"] == 85.4
    # Two sources in DINO-Mix's repository for Pitts30k-test: its README's table is compared with, its test log listed.
    dinomix = published_all(rows, "dinomix_dinov2_4096", "pitts30k_test")
    assert [(r["R@1"], r["source"].split(" (")[0]) for r in dinomix] == [(92.03, "DINO-Mix README"), (91.681, "DINO-Mix test log")]
    assert published_for(rows, "boq_resnet50_16384", "tokyo247") is None


def test_problems_name_the_line_and_what_is_wrong(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(
        HEADER
        + 'm,M,b,8,,Pitts30k-test,91.0,90.0,,,"a README",\n'  # R@5 below R@1
        + 'm,M,b,8,,Pitts30k-test,,95.0,,,"",\n'  # no source, no R@1
        + 'm,M,b,8,,Moon-test,50.0,,,,"a paper",\n'
        + 'm,M,b,8,,Pitts30k-test,91.0,90.0,,,"a README",\n'
    )
    problems = published_problems(published_results(path))
    assert problems == [
        "line 2 (m, Pitts30k-test): recall falls with k ([91.0, 90.0])",
        "line 3 (m, Pitts30k-test): no source",
        "line 3 (m, Pitts30k-test): no R@1",
        "line 4 (m, Moon-test): benchmark 'Moon-test' is not in PAPER_BENCHMARKS",
        "line 5 (m, Pitts30k-test): recall falls with k ([91.0, 90.0])",
        "line 5 (m, Pitts30k-test): the same model, benchmark and source twice",
    ]


def test_several_sources_the_first_is_compared_and_all_are_listed(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(
        HEADER
        + 'mixvpr_resnet50_4096,MixVPR,resnet50,4096,320,Pitts30k-test,91.6,95.5,96.4,,"MixVPR README (test)",\n'
        + 'mixvpr_resnet50_4096,MixVPR,resnet50,4096,320,Pitts30k-test,90.0,95.0,,,"BoQ paper (CVPR 2024), Table 1 (test)",\n'
    )
    rows = published_results(path)
    assert published_for(rows, "mixvpr_resnet50_4096", "pitts30k_test")["source"] == "MixVPR README (test)"
    assert [r["R@1"] for r in published_all(rows, "mixvpr_resnet50_4096", "Pitts30k-test")] == [91.6, 90.0]
    assert published_all(rows, None, "pitts30k_test") == [] and published_all(rows, "mixvpr_resnet50_4096", "msls_val") == []
