"""Recall tables: on the console, in Markdown, and as CSV + JSON files that accumulate across runs.

A row is a flat dict such as ``{"model": "boq_resnet50", "benchmark": "pitts30k",
"R@1": 88.1, "R@5": 94.3, "num_queries": 6816, ...}``. The results files are
keyed by (model, benchmark): writing a row replaces the earlier row with the
same key and leaves every other row alone, so evaluating one more model never
loses the numbers of the previous ones.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table

from vprlab.utils.console import make_console
from vprlab.utils.io import atomic_write_json, atomic_write_text

RESULT_KEY = ("model", "benchmark")
_RECALL_COLUMN = re.compile(r"^R@(\d+)$")
# A cell measured on another number of images than the benchmark is published with.
SUBSET_MARK = "†"
# (what, measured count columns, published count column): training runs log the queries as num_eval_queries.
_COUNTS = (("database images", ("num_db",), "expected_num_db"),
           ("queries", ("num_queries", "num_eval_queries"), "expected_num_queries"))


class ResultPaths(NamedTuple):
    csv: Path
    json: Path
    markdown: Path | None = None


def recall_columns(rows: Sequence[dict]) -> list[str]:
    """The ``R@k`` keys present in any row, in increasing k."""
    found = {key for row in rows for key in row if _RECALL_COLUMN.match(key)}
    return sorted(found, key=lambda key: int(_RECALL_COLUMN.match(key).group(1)))


def ordered_columns(rows: Sequence[dict]) -> list[str]:
    """Key columns, then R@k by k, then every other field in first-seen order."""
    recalls = recall_columns(rows)
    columns = [key for key in RESULT_KEY if any(key in row for row in rows)] + recalls
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _format(value: Any, float_format: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, float_format)
    return str(value)


def print_recall_table(
    rows: Sequence[dict],
    title: str = "Recall@N (%)",
    console: Console | None = None,
    float_format: str = ".2f",
) -> Table:
    """One line per (model, benchmark), one column per R@k. Returns the rich Table it printed."""
    columns = [key for key in RESULT_KEY if any(key in row for row in rows)] + recall_columns(rows)
    marked, notes = mark_subsets(rows, recall_columns(rows), float_format)
    table = Table(title=title, caption=f"{SUBSET_MARK} not the published benchmark (below)" if notes else None)
    for column in columns:
        table.add_column(column, justify="left" if column in RESULT_KEY else "right")
    for row in marked:
        table.add_row(*(_format(row.get(column), float_format) for column in columns))
    console = console or make_console()
    console.print(table)
    for note in notes:
        console.print(f"{SUBSET_MARK} {note} (not comparable with published numbers)", markup=False)
    return table


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, float_format: str = ".2f") -> str:
    """A GitHub-flavoured Markdown table; ``columns`` defaults to all fields (key, R@k, rest)."""
    columns = list(columns) if columns is not None else ordered_columns(rows)
    if not columns:
        raise ValueError("markdown_table needs at least one column; the rows are empty")
    align = ["---" if column in RESULT_KEY else "---:" for column in columns]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = (_format(row.get(column), float_format).replace("|", "\\|") for column in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def benchmark_counts(benchmark: Any) -> dict[str, int | None]:
    """The counts a result row records: measured (``num_db``, ``num_queries``) and published
    (``expected_num_db``, ``expected_num_queries``; None when the benchmark config gives none)."""
    return {"num_db": benchmark.num_db, "num_queries": benchmark.num_queries,
            "expected_num_db": getattr(benchmark, "expected_num_db", None),
            "expected_num_queries": getattr(benchmark, "expected_num_queries", None)}


def subset_note(row: dict) -> str | None:
    """One line when ``row`` was measured on another number of images than its benchmark is
    published with (``num_db`` / ``num_queries`` against ``expected_num_db`` / ``expected_num_queries``),
    e.g. "st_lucia: 20 database images and 10 queries; published: 1,549 and 1,464"; None otherwise."""
    measured, published, differs = [], [], False
    for what, columns, expected_column in _COUNTS:
        seen = next((_count(row.get(c)) for c in columns if _count(row.get(c)) is not None), None)
        expected = _count(row.get(expected_column))
        if seen is None or expected is None:
            continue
        measured.append(f"{seen:,} {what}")
        published.append(f"{expected:,}")
        differs = differs or seen != expected
    if not differs:
        return None
    return f"{row.get('benchmark')}: evaluated on {' and '.join(measured)}; published: {' and '.join(published)}"


def subset_footnote(notes: Sequence[str]) -> str:
    """The text under a table with marked cells (Markdown; empty when nothing is marked)."""
    notes = list(dict.fromkeys(n for n in notes if n))
    if not notes:
        return ""
    return (f"\n{SUBSET_MARK} Not the published benchmark: evaluated on another number of images than it is published "
            "with, so these numbers are not comparable with published ones:\n\n" + "".join(f"- {n}\n" for n in notes))


def mark_subsets(rows: Sequence[dict], columns: Sequence[str], float_format: str = ".2f") -> tuple[list[dict], list[str]]:
    """Copies of ``rows`` whose ``columns`` cells carry :data:`SUBSET_MARK` where the row is a subset
    (:func:`subset_note`; numbers formatted with ``float_format``), and the notes of the marked rows."""
    out, notes = [], []
    for row in rows:
        note = subset_note(row)
        row = dict(row)
        if note:
            notes.append(note)
            for column in columns:
                if column in row:
                    row[column] = _format(row[column], float_format) + SUBSET_MARK
        out.append(row)
    return out, list(dict.fromkeys(notes))


def _parse_csv_value(text: str) -> Any:
    if text == "":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def read_results(out_dir: str | os.PathLike, stem: str = "results") -> list[dict]:
    """Rows of an earlier :func:`write_results`; the JSON file is authoritative, the CSV a fallback."""
    json_path, csv_path = Path(out_dir) / f"{stem}.json", Path(out_dir) / f"{stem}.csv"
    if json_path.is_file():
        try:
            rows = json.loads(json_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"results file {json_path} is not valid JSON ({error}); move it away to start a new one"
            ) from error
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"results file {json_path} should hold a list of row objects; move it away to start a new one")
        return rows
    if csv_path.is_file():
        with csv_path.open(newline="") as f:
            return [{k: _parse_csv_value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return []


def _row_key(row: dict) -> tuple:
    missing = [key for key in RESULT_KEY if row.get(key) in (None, "")]
    if missing:
        raise ValueError(f"result row {row} lacks {missing}; every row needs {list(RESULT_KEY)}")
    return tuple(str(row[key]) for key in RESULT_KEY)


def merge_rows(existing: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """Existing rows in their order with same-key rows replaced in place; unseen new rows appended."""
    merged = {_row_key(row): dict(row) for row in existing}
    for row in new:
        merged[_row_key(row)] = dict(row)  # dict keeps the first insertion position on update
    return list(merged.values())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise read-merge-write between processes (parallel sweep jobs) where fcntl exists."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a concurrent writer may drop a row
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _to_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ordered_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, stem: str = "results") -> ResultPaths:
    """Merge ``rows`` into ``out_dir/{stem}.json``, ``.csv`` and ``.md`` (each written atomically),
    replacing rows by (model, benchmark). The JSON file is the one read back."""
    out_dir = Path(out_dir)
    for row in rows:
        _row_key(row)
    with _locked(out_dir / f".{stem}.lock"):
        merged = merge_rows(read_results(out_dir, stem), rows)
        json_path = atomic_write_json(out_dir / f"{stem}.json", merged)
        csv_path = atomic_write_text(out_dir / f"{stem}.csv", _to_csv(merged))
        marked, notes = mark_subsets(merged, recall_columns(merged))
        md_path = atomic_write_text(out_dir / f"{stem}.md", markdown_table(marked, ordered_columns(merged)) + subset_footnote(notes))
    return ResultPaths(csv=csv_path, json=json_path, markdown=md_path)


def print_before_after(before: dict[str, dict], after: dict[str, dict], ks: Sequence[int] = (1, 5, 10, 20)) -> None:
    table = Table(title="Recall@k before / after training (%)")
    table.add_column("benchmark")
    table.add_column("")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    for bench in after:
        b, a = before.get(bench, {}), after[bench]
        table.add_row(bench, "before", *(f"{b.get(f'R@{k}', float('nan')):.1f}" for k in ks))
        table.add_row("", "after", *(f"{a[f'R@{k}']:.1f}" for k in ks))
        table.add_row("", "change", *(f"{a[f'R@{k}'] - b.get(f'R@{k}', float('nan')):+.1f}" for k in ks), end_section=True)
    make_console().print(table)
