"""issue 21 item 1: a benchmark evaluated on other image counts than it is published with is flagged
wherever its numbers appear (results files, the paper comparison), and the count warning points at the
caller, not at Hydra."""

from __future__ import annotations

import warnings
from pathlib import Path

from conftest import compose_config
from omegaconf import OmegaConf

from vprlab.commands.evaluate import run_evaluation
from vprlab.data.benchmark import BenchmarkCountWarning
from vprlab.evaluation.results import SUBSET_MARK, read_results, subset_note
from vprlab.utils.instantiate import build

TINY_MODEL = ["backbone=resnet18_small", "backbone.eval_image_size=[48,64]", "aggregator=gem"]


def test_subset_note_compares_measured_and_published_counts():
    row = {"benchmark": "st_lucia", "num_db": 20, "num_queries": 10, "expected_num_db": 1549, "expected_num_queries": 1464}
    assert subset_note(row) == "st_lucia: evaluated on 20 database images and 10 queries; published: 1,549 and 1,464"
    assert subset_note({**row, "num_db": 1549, "num_queries": 1464}) is None
    assert subset_note({**row, "expected_num_db": None, "expected_num_queries": None}) is None  # unknown: no claim
    assert subset_note({"benchmark": "x", "num_eval_queries": 5.0, "expected_num_queries": 7}) == "x: evaluated on 5 queries; published: 7"


def test_the_count_warning_names_the_benchmark_and_points_at_the_caller(tiny_synthetic):
    node = OmegaConf.create({"_target_": "vprlab.data.benchmarks.load_benchmark", "format": "npy",
                             "root": str(tiny_synthetic.benchmark_root), "name": "st_lucia", "prefix": "synthetic", "expected_num_db": 1549,
                             "expected_num_queries": 1464})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bench = build(node)  # through Hydra's instantiate, as evaluate.py and train.py build benchmarks
    (warning,) = [w for w in caught if issubclass(w.category, BenchmarkCountWarning)]
    assert Path(warning.filename).resolve() == Path(__file__).resolve(), warning.filename
    assert "benchmark 'st_lucia' has" in str(warning.message)
    assert (bench.expected_num_db, bench.expected_num_queries) == (1549, 1464)


def test_a_subset_is_marked_in_the_results_and_the_paper_comparison(tiny_synthetic, tmp_path, capsys):
    """The synthetic benchmark evaluated as St Lucia with the published counts: no cell may look like a
    St Lucia result without the mark and the counts under the table."""
    cfg = compose_config("evaluate", [
        f"paths.data_dir={tiny_synthetic.root.parent}", f"paths.output_dir={tmp_path}", "num_workers=0", "batch_size=16",
        "cache=false", *TINY_MODEL, "benchmark=[synthetic]", "benchmark.synthetic.name=st_lucia",
        "benchmark.synthetic._target_=vprlab.data.benchmarks.load_benchmark", "+benchmark.synthetic.format=npy", "+benchmark.synthetic.prefix=synthetic",
        "+benchmark.synthetic.expected_num_db=1549", "+benchmark.synthetic.expected_num_queries=1464",
        "compare_with_paper=boq_dinov2",
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BenchmarkCountWarning)
        metrics = run_evaluation(cfg)
    printed = capsys.readouterr().out
    num_db, num_queries = metrics["st_lucia"]["num_db"], metrics["st_lucia"]["num_queries"]
    note = f"st_lucia: evaluated on {num_db} database images and {num_queries} queries; published: 1,549 and 1,464"
    (row,) = read_results(tmp_path)
    assert (row["num_db"], row["num_queries"], row["expected_num_db"], row["expected_num_queries"]) == (num_db, num_queries, 1549, 1464)
    results_md = (tmp_path / "results.md").read_text()
    assert f"{row['R@1']:.2f}{SUBSET_MARK}" in results_md and note in results_md
    paper = (tmp_path / "paper_comparison_boq_dinov2.md").read_text()
    (line,) = [x for x in paper.splitlines() if x.startswith("| st_lucia")]
    assert f"| {row['R@1']:.1f}{SUBSET_MARK} | 99.9 |" in line  # ours, marked, next to the paper's St Lucia R@1
    assert note in paper and "not comparable with published ones" in paper
    assert note in printed  # the console table says it too
