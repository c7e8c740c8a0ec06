import csv
import io
import json

import pytest
from rich.console import Console

from vprlab.evaluation.results import (
    markdown_table,
    print_recall_table,
    read_results,
    write_results,
)


def _row(model, benchmark, r1, r5=90.0):
    return {"model": model, "benchmark": benchmark, "R@5": r5, "R@1": r1, "num_queries": 10}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_results_files_read_back(tmp_path):
    paths = write_results([_row("boq", "pitts", 80.5), _row("boq", "msls", 70.25)], tmp_path / "out")
    assert paths.json == tmp_path / "out" / "results.json"
    assert json.loads(paths.json.read_text()) == [_row("boq", "pitts", 80.5), _row("boq", "msls", 70.25)]
    rows = _read_csv(paths.csv)
    assert list(rows[0]) == ["model", "benchmark", "R@1", "R@5", "num_queries"]
    assert rows[0] == {"model": "boq", "benchmark": "pitts", "R@1": "80.5", "R@5": "90.0", "num_queries": "10"}
    assert [r["benchmark"] for r in rows] == ["pitts", "msls"]


def test_rewriting_replaces_rows_by_model_and_benchmark_and_keeps_others(tmp_path):
    write_results([_row("boq", "pitts", 80.0), _row("boq", "msls", 70.0)], tmp_path)
    write_results([_row("boq", "pitts", 85.0), {**_row("gem", "pitts", 60.0), "R@10": 75.0}], tmp_path)
    expected = [
        _row("boq", "pitts", 85.0),
        _row("boq", "msls", 70.0),
        {**_row("gem", "pitts", 60.0), "R@10": 75.0},
    ]
    assert read_results(tmp_path) == expected
    rows = _read_csv(tmp_path / "results.csv")
    assert list(rows[0]) == ["model", "benchmark", "R@1", "R@5", "R@10", "num_queries"]
    assert [(r["model"], r["benchmark"], r["R@1"], r["R@10"]) for r in rows] == [
        ("boq", "pitts", "85.0", ""),
        ("boq", "msls", "70.0", ""),
        ("gem", "pitts", "60.0", "75.0"),
    ]
    assert not list(tmp_path.glob("*.tmp"))


def test_csv_is_a_fallback_when_json_is_missing(tmp_path):
    write_results([_row("boq", "pitts", 80.0)], tmp_path)
    (tmp_path / "results.json").unlink()
    write_results([_row("boq", "msls", 70.0)], tmp_path)
    assert read_results(tmp_path) == [_row("boq", "pitts", 80.0), _row("boq", "msls", 70.0)]


def test_rows_need_model_and_benchmark(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['model'\]"):
        write_results([{"benchmark": "pitts", "R@1": 1.0}], tmp_path)


def test_corrupt_results_file_is_reported(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        write_results([_row("boq", "pitts", 80.0)], tmp_path)


def test_print_recall_table_has_benchmark_rows_and_recall_columns():
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, color_system=None)
    table = print_recall_table([_row("boq", "pitts", 80.5), _row("boq", "msls", 70.25)], title="T", console=console)
    assert [c.header for c in table.columns] == ["model", "benchmark", "R@1", "R@5"]
    text = buffer.getvalue()
    assert "pitts" in text and "80.50" in text and "70.25" in text


def test_markdown_table():
    rows = [_row("boq", "pitts", 80.5), {"model": "gem", "benchmark": "msls", "R@1": 70.0}]
    assert markdown_table(rows, ["benchmark", "R@1", "R@5"]) == (
        "| benchmark | R@1 | R@5 |\n"
        "| --- | ---: | ---: |\n"
        "| pitts | 80.50 | 90.00 |\n"
        "| msls | 70.00 | - |\n"
    )
    assert markdown_table(rows).splitlines()[0] == "| model | benchmark | R@1 | R@5 | num_queries |"
