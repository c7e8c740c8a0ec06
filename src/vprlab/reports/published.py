"""The published numbers vprlab compares with, and their one reader.

``vprlab/resources/published_results.csv`` holds one row per published model, benchmark and source:
the model's registry name, method, backbone, descriptor size, evaluation size, the paper's benchmark
name, recall@1/5/10/20 in percent (empty where the source gives none), the source of the numbers
(repository + file @ commit, or paper + table) and a note (where the source's protocol differs: other
split, threshold, re-ranking, a third party's evaluation). Every number is read from its source, none
is guessed; a number that could not be read is not in the file.

Several sources for one model and benchmark: the first row of the file is the one compared with
(:func:`published_for`; the file keeps the method's own README or repository first, then its paper,
then other papers and third-party evaluations) and the others are listed beside it
(:func:`published_all`). ``vprlab compare`` and ``vprlab report paper`` read every model's rows; the BoQ
paper comparison of the reproduce recipes reads the rows whose source is the BoQ README
(:func:`vprlab.reports.paper.paper_results`).

Benchmark configs are matched to the papers' benchmark names through :data:`PAPER_BENCHMARKS`
(``nordland`` is the 1-frame "Nordland*", ``nordland_10frames`` the 10-frame "Nordland**").
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

PUBLISHED_RESULTS = "published_results.csv"
# Our benchmark config name -> the paper's benchmark name.
PAPER_BENCHMARKS: dict[str, str] = {
    "msls_val": "MSLS-val",
    "msls_challenge": "MSLS-Challenge",
    "pitts30k_test": "Pitts30k-test",
    "pitts250k_test": "Pitts250k-test",
    "nordland": "Nordland*",
    "nordland_10frames": "Nordland**",
    "sped": "SPED",
    "amstertime": "AmsterTime",
    "eynsham": "Eynsham",
    "st_lucia": "St-Lucia",
    "svox_night": "SVOX-night",
    "svox_sun": "SVOX-sun",
    "svox_rain": "SVOX-rain",
    "svox_snow": "SVOX-snow",
    "svox_overcast": "SVOX-overcast",
    "svox_all": "SVOX-all",
    "sf_landmark": "SF-Landmark",
    "pitts30k_val": "Pitts30k-val",
    "tokyo247": "Tokyo 24/7",
}
# What a table cell says where the published-results file has no row for a model and benchmark, and
# where the row's source gives no number for that recall ('-' is kept for "not measured").
NO_PUBLISHED = "no published number"
NOT_GIVEN = "not given"
_RECALL = re.compile(r"^R@(\d+)$")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9*]", "", name.lower())


_BY_NORMALISED = {_normalise(k): v for k, v in PAPER_BENCHMARKS.items()} | {_normalise(v): v for v in PAPER_BENCHMARKS.values()}


def paper_benchmark(name: str) -> str | None:
    """The paper's name for benchmark ``name`` (a config name such as ``pitts30k_test`` or the paper's
    own spelling), or None when the paper has no such benchmark."""
    return _BY_NORMALISED.get(_normalise(name))


def published_results(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of the published-results CSV (vprlab's, or the file at ``path``): model, method, backbone,
    descriptor_dim, eval_size, benchmark, R@1..R@20 (floats; None where the source gives none), source,
    note."""
    if path is None:
        text = resources.files("vprlab").joinpath("resources", PUBLISHED_RESULTS).read_text()
    else:
        text = Path(path).read_text()
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        for key in [k for k in row if _RECALL.match(k)]:
            value = (row.get(key) or "").strip()
            row[key] = float(value) if value else None
        rows.append(row)
    return rows


def _bench_key(name: str) -> str:
    return paper_benchmark(name) or name


def published_all(rows: Sequence[dict], model_key: str | None, benchmark: str) -> list[dict]:
    """Every published row of ``model_key`` on ``benchmark`` (config or paper name), in the file's order:
    the first is the one compared with (:func:`published_for`), the others are listed beside it."""
    if model_key is None:
        return []
    wanted = _bench_key(benchmark)
    return [row for row in rows if row["model"] == model_key and _bench_key(row["benchmark"]) == wanted]


def published_for(rows: Sequence[dict], model_key: str | None, benchmark: str) -> dict | None:
    """The published row of ``model_key`` on ``benchmark`` (config or paper name) that is compared with:
    the first of the file (the method's own source where there are several), or None."""
    found = published_all(rows, model_key, benchmark)
    return found[0] if found else None


def published_models(rows: Sequence[dict]) -> list[str]:
    """The model names that have at least one published row, sorted."""
    return sorted({row["model"] for row in rows})


def published_problems(rows: Sequence[dict]) -> list[str]:
    """What is wrong with published rows, one line each (empty: nothing): a row without a source or
    without R@1, a recall outside 0..100 or falling with k, a benchmark no config maps to, the same
    (model, benchmark, source) twice."""
    problems, seen = [], set()
    for i, row in enumerate(rows, start=2):  # line numbers of the CSV (header = line 1)
        where = f"line {i} ({row.get('model')}, {row.get('benchmark')})"
        if not (row.get("source") or "").strip():
            problems.append(f"{where}: no source")
        recalls = [(int(m.group(1)), row[k]) for k in row if (m := _RECALL.match(k)) and row[k] is not None]
        if row.get("R@1") is None:
            problems.append(f"{where}: no R@1")
        if any(not 0.0 <= v <= 100.0 for _, v in recalls):
            problems.append(f"{where}: a recall outside 0..100")
        values = [v for _, v in sorted(recalls)]
        if values != sorted(values):
            problems.append(f"{where}: recall falls with k ({values})")
        if paper_benchmark(str(row.get("benchmark"))) is None:
            problems.append(f"{where}: benchmark {row.get('benchmark')!r} is not in PAPER_BENCHMARKS")
        key = (row.get("model"), row.get("benchmark"), row.get("source"))
        if key in seen:
            problems.append(f"{where}: the same model, benchmark and source twice")
        seen.add(key)
    return problems
