"""Evaluation benchmarks as values: database paths, query paths, positives per query.

Each on-disk format has a reader that builds a :class:`Benchmark`; nothing downstream
knows about formats. ``load_benchmark(format=..., **kwargs)`` dispatches to the reader
and checks the result against the counts the benchmark is published with.

Formats (readers in :mod:`vprlab.data.benchmark_readers`, one table :data:`READERS` there):

``npy`` (the GSV-Cities / BoQ validation lists)::

    <lists_dir>/<prefix>_dbImages.npy   array of image paths, relative to <root>
    <lists_dir>/<prefix>_qImages.npy    array of image paths, relative to <root>
    <lists_dir>/<prefix>_<gt_suffix>.npy per query, an array of positive database indices
    <lists_dir>/<prefix>_qIdx.npy       optional (MSLS): which entries of qImages are the queries

``utm_folder`` (VPR-methods-evaluation / gsv-cities test folders): ``database/`` and ``queries/``
with ``@UTM_east@UTM_north@...@.jpg`` file names; positives within a radius (25 m).

``frames`` (Nordland-style sequences): positives within N frames of the query's frame number.

``gt_csv`` (small real datasets): ``database/``, ``queries/`` and a ``gt.csv`` that lists the
positive database indices of every query.

``auto`` picks one of the above from what is in ``root``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vprlab.data.benchmark import Benchmark, BenchmarkCountWarning
from vprlab.data.benchmark_readers import READERS
from vprlab.utils.errors import DataError

__all__ = ["Benchmark", "BenchmarkCountWarning", "READERS", "check_counts", "load_benchmark"]

# Keys every benchmark config may hold besides its reader's arguments.
_COMMON_KEYS = ("expected_num_db", "expected_num_queries", "strict_counts", "source")


def check_counts(
    benchmark: Benchmark,
    expected_num_db: int | None = None,
    expected_num_queries: int | None = None,
    strict: bool = False,
    source: str | None = None,
) -> list[str]:
    """Compare the benchmark with its published sizes; warn (or raise when ``strict``) on a difference.

    Returns the mismatch messages (empty when the counts agree or none are expected).
    """
    problems = []
    for what, seen, expected in (
        ("database images", benchmark.num_db, expected_num_db),
        ("queries", benchmark.num_queries, expected_num_queries),
    ):
        if expected is not None and int(expected) != seen:
            problems.append(f"{seen} {what} where the published protocol has {int(expected)}")
    if not problems:
        return []
    where = f" (expected data: {source})" if source else ""
    message = (
        f"benchmark {benchmark.name!r} has " + " and ".join(problems) + f"{where}; its numbers are not "
        "comparable with published ones. Check the root and that the download is complete; set "
        f"benchmark.{benchmark.name}.expected_num_db/expected_num_queries=null for a deliberate subset"
    )
    if strict:
        raise DataError(message + ", or strict_counts=false to only warn")
    warnings.warn(message + " (strict_counts=true turns this into an error)", BenchmarkCountWarning,
                  stacklevel=_caller_stacklevel())
    return problems


# Frames of these packages are never the place a benchmark was asked for (Hydra instantiates configs).
_VPRLAB_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_LIBRARY_PACKAGES = ("hydra", "omegaconf")


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside vprlab, Hydra and OmegaConf: the user's script or
    evaluate.py / train.py, so a warning names the line that asked for the benchmark, not Hydra's."""
    frame, level = sys._getframe(1), 1  # level 1 = the caller of warnings.warn (check_counts)
    while frame is not None:
        filename = str(Path(frame.f_code.co_filename).resolve()) if not frame.f_code.co_filename.startswith("<") else ""
        inside = filename.startswith(_VPRLAB_DIR) or any(f"/{p}/" in filename.replace("\\", "/") for p in _LIBRARY_PACKAGES)
        if filename and not inside:
            return level
        frame, level = frame.f_back, level + 1
    return 2


def load_benchmark(cfg: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Benchmark:
    """Build a benchmark from a config-like mapping and/or keyword arguments.

    ``format`` picks the reader (one of :data:`READERS`); the other keys are the reader's
    arguments, e.g. ``load_benchmark(format="npy", root="data/synthetic/benchmark", name="synthetic")``,
    plus the keys every benchmark config may carry: ``expected_num_db`` / ``expected_num_queries``
    (the published counts; a difference warns, or raises with ``strict_counts=True``) and
    ``source`` (where the data comes from, quoted in messages). Hydra's ``_target_`` is ignored.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    params: dict[str, Any] = dict(cfg or {})
    params.update(kwargs)
    params.pop("_target_", None)
    common = {key: params.pop(key, None) for key in _COMMON_KEYS}
    fmt = params.pop("format", None)
    if fmt is None:
        raise DataError(f"benchmark config has no 'format'; set one of {sorted(READERS)} (got keys {sorted(params)})")
    if fmt not in READERS:
        raise DataError(f"unknown benchmark format {fmt!r}; known formats: {sorted(READERS)}")
    if isinstance(params.get("image_size"), (list, tuple)):
        params["image_size"] = tuple(params["image_size"])
    benchmark = READERS[fmt](**params)
    for key in ("expected_num_db", "expected_num_queries"):  # kept on the value: results flag a subset
        setattr(benchmark, key, None if common[key] is None else int(common[key]))
    check_counts(
        benchmark,
        expected_num_db=common["expected_num_db"],
        expected_num_queries=common["expected_num_queries"],
        strict=bool(common["strict_counts"]),
        source=common["source"],
    )
    return benchmark
