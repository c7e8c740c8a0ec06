"""The published numbers vprlab compares with, and their one reader.

``vprlab/resources/published_results.csv`` holds one row per published model and benchmark: the
model's registry name, method, backbone, descriptor size, evaluation size, the paper's benchmark name,
recall@1/5/10/20 in percent (empty where the source gives none), the source of the numbers and a
note. ``vprlab compare`` reads every row (:func:`published_results`, :func:`published_for`); the BoQ
paper comparison reads the rows whose source is the BoQ README (:func:`vprlab.reports.paper.paper_results`).

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
}
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


def published_for(rows: Sequence[dict], model_key: str | None, benchmark: str) -> dict | None:
    """The published row of ``model_key`` on ``benchmark`` (config or paper name), or None."""
    if model_key is None:
        return None
    wanted = _bench_key(benchmark)
    for row in rows:
        if row["model"] == model_key and _bench_key(row["benchmark"]) == wanted:
            return row
    return None
