"""Evaluation benchmarks as values: database paths, query paths, positives per query.

Each on-disk format has a reader that builds a :class:`Benchmark`; nothing downstream
knows about formats. ``load_benchmark(format=..., **kwargs)`` dispatches to the reader
and checks the result against the counts the benchmark is published with.

Formats (readers in this module and in :mod:`vprlab.data.benchmark_readers`):

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
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vprlab.data.transforms import as_hw

QUERIES_WITHOUT_POSITIVE = ("miss", "exclude")
SUBMISSION_FORMATS = (None, "msls")


class BenchmarkCountWarning(UserWarning):
    """A benchmark on disk does not have the number of images it is published with."""


@dataclass
class Benchmark:
    """A retrieval benchmark. Paths are ready to open (readers join them with the root).

    ``positives[i]`` holds the database indices that count as correct for query ``i``;
    ``queries_without_positive`` says how recall treats queries whose array is empty
    (``"miss"``: count as failures, ``"exclude"``: leave out of the denominator).
    ``image_size`` is the (H, W) to evaluate at, ``None`` to use the model's default.
    ``has_ground_truth=False`` marks a benchmark scored elsewhere (MSLS challenge): its
    positives are empty, recall is not computed, and ``submission_format`` names the
    predictions file to write instead. ``protocol`` is a one-line description of how
    positives are defined, for reports.
    """

    name: str
    db_paths: list[str]
    query_paths: list[str]
    positives: list[np.ndarray]
    image_size: tuple[int, int] | None = None
    queries_without_positive: str = "miss"
    has_ground_truth: bool = True
    submission_format: str | None = None
    protocol: str = ""

    def __post_init__(self) -> None:
        if len(self.positives) != len(self.query_paths):
            raise ValueError(
                f"benchmark {self.name!r}: {len(self.query_paths)} queries but positives for "
                f"{len(self.positives)}; the ground truth must have one entry per query"
            )
        if self.queries_without_positive not in QUERIES_WITHOUT_POSITIVE:
            raise ValueError(
                f"queries_without_positive={self.queries_without_positive!r}; use one of {QUERIES_WITHOUT_POSITIVE}"
            )
        if self.submission_format not in SUBMISSION_FORMATS:
            raise ValueError(
                f"benchmark {self.name!r}: submission_format={self.submission_format!r}; use one of {SUBMISSION_FORMATS}"
            )
        if self.image_size is not None:
            self.image_size = as_hw(self.image_size)
        num_db = len(self.db_paths)
        for i, pos in enumerate(self.positives):
            bad = pos[(pos < 0) | (pos >= num_db)]
            if len(bad):
                raise ValueError(
                    f"benchmark {self.name!r}: query {i} has positive index {int(bad[0])} outside the "
                    f"database [0, {num_db}); the ground truth does not match the database list"
                )

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    @property
    def num_queries_without_positive(self) -> int:
        return sum(1 for p in self.positives if len(p) == 0)


def _as_positive_arrays(gt: np.ndarray) -> list[np.ndarray]:
    # np.save of equal-length lists gives a 2-D int array, of ragged lists an object array.
    return [np.asarray(p, dtype=np.int64).reshape(-1) for p in gt]


def _require_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {hint}")
    return path


def load_npy_benchmark(
    root: str | os.PathLike,
    name: str,
    image_size: int | Sequence[int] | None = None,
    queries_without_positive: str = "miss",
    prefix: str | None = None,
    lists_dir: str | os.PathLike | None = None,
    gt_suffix: str = "gt",
    query_index_suffix: str | None = None,
    protocol: str = "positives from the ground-truth .npy file",
) -> Benchmark:
    """Read ``<lists_dir>/<prefix>_{dbImages,qImages,<gt_suffix>}.npy`` into a :class:`Benchmark`.

    ``prefix`` defaults to ``name`` and ``lists_dir`` to ``root`` (the GSV-Cities code ships the
    lists apart from the images: point ``lists_dir`` at them). With ``query_index_suffix``
    (MSLS: ``"qIdx"``) the queries are ``qImages[qIdx]``, and the ground truth has one entry
    per selected query (or per entry of qImages, then it is selected the same way).
    """
    root = Path(root)
    prefix = prefix or name
    lists = Path(lists_dir) if lists_dir else root
    files = [f"{prefix}_dbImages.npy", f"{prefix}_qImages.npy", f"{prefix}_{gt_suffix}.npy"]
    if query_index_suffix:
        files.append(f"{prefix}_{query_index_suffix}.npy")
    hint = (
        f"the .npy benchmark {name!r} needs {', '.join(files)} in {lists} and the images under {root}; "
        "fix the benchmark root (or lists_dir/prefix), or run `make quickstart` for the synthetic benchmark"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark root {root} does not exist; {hint}")
    db = np.load(_require_file(lists / files[0], "database list", hint), allow_pickle=True)
    q = np.load(_require_file(lists / files[1], "query list", hint), allow_pickle=True)
    gt = np.load(_require_file(lists / files[2], "ground-truth file", hint), allow_pickle=True)
    if query_index_suffix:
        query_index = np.load(_require_file(lists / files[3], "query index file", hint), allow_pickle=True)
        query_index = np.asarray(query_index, dtype=np.int64).reshape(-1)
        if len(query_index) and (query_index.min() < 0 or query_index.max() >= len(q)):
            raise ValueError(
                f"{lists / files[3]} selects query {int(query_index.max())} but {files[1]} lists {len(q)}; "
                "the two files come from different releases"
            )
        if len(gt) == len(q) and len(gt) != len(query_index):
            gt = gt[query_index]
        q = q[query_index]
    return Benchmark(
        name=name,
        db_paths=[str(root / str(p)) for p in db],
        query_paths=[str(root / str(p)) for p in q],
        positives=_as_positive_arrays(gt),
        image_size=as_hw(image_size) if image_size is not None else None,
        queries_without_positive=queries_without_positive,
        protocol=protocol,
    )


def _deferred(function_name: str) -> Callable[..., Benchmark]:
    """A reader from :mod:`vprlab.data.benchmark_readers`, imported on first call (that module
    imports this one)."""

    def read(**kwargs: Any) -> Benchmark:
        from vprlab.data import benchmark_readers

        return getattr(benchmark_readers, function_name)(**kwargs)

    read.__name__ = function_name
    return read


READERS: dict[str, Callable[..., Benchmark]] = {
    "npy": load_npy_benchmark,
    "utm_folder": _deferred("load_utm_folder_benchmark"),
    "frames": _deferred("load_frame_window_benchmark"),
    "gt_csv": _deferred("load_gt_csv_benchmark"),
    "auto": _deferred("load_auto_benchmark"),
}

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
        raise ValueError(message + ", or strict_counts=false to only warn")
    warnings.warn(message + " (strict_counts=true turns this into an error)", BenchmarkCountWarning, stacklevel=3)
    return problems


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
        raise ValueError(f"benchmark config has no 'format'; set one of {sorted(READERS)} (got keys {sorted(params)})")
    if fmt not in READERS:
        raise ValueError(f"unknown benchmark format {fmt!r}; known formats: {sorted(READERS)}")
    if isinstance(params.get("image_size"), (list, tuple)):
        params["image_size"] = tuple(params["image_size"])
    benchmark = READERS[fmt](**params)
    check_counts(
        benchmark,
        expected_num_db=common["expected_num_db"],
        expected_num_queries=common["expected_num_queries"],
        strict=bool(common["strict_counts"]),
        source=common["source"],
    )
    return benchmark
