"""The one benchmark type: database paths, query paths and the positives of each query.

Readers (:mod:`vprlab.data.benchmark_readers`) build it from each on-disk format;
:func:`vprlab.data.benchmarks.load_benchmark` picks the reader from a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprlab.utils.errors import DataError, MissingFileError
from vprlab.utils.images import as_hw

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
    positives are defined, for reports. ``expected_num_db`` / ``expected_num_queries``: the counts
    the benchmark is published with (None: unknown), so results and tables can flag a subset.
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
    expected_num_db: int | None = None
    expected_num_queries: int | None = None

    def __post_init__(self) -> None:
        if len(self.positives) != len(self.query_paths):
            raise DataError(
                f"benchmark {self.name!r}: {len(self.query_paths)} queries but positives for "
                f"{len(self.positives)}; the ground truth must have one entry per query"
            )
        if self.queries_without_positive not in QUERIES_WITHOUT_POSITIVE:
            raise DataError(
                f"queries_without_positive={self.queries_without_positive!r}; use one of {QUERIES_WITHOUT_POSITIVE}"
            )
        if self.submission_format not in SUBMISSION_FORMATS:
            raise DataError(
                f"benchmark {self.name!r}: submission_format={self.submission_format!r}; use one of {SUBMISSION_FORMATS}"
            )
        if self.image_size is not None:
            self.image_size = as_hw(self.image_size)
        num_db = len(self.db_paths)
        for i, pos in enumerate(self.positives):
            bad = pos[(pos < 0) | (pos >= num_db)]
            if len(bad):
                raise DataError(
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
        raise MissingFileError(f"{what} {path} does not exist; {hint}")
    return path
