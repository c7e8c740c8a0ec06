"""Evaluation benchmarks as values: database paths, query paths, positives per query.

Each on-disk format has a reader that builds a :class:`Benchmark`; nothing downstream
knows about formats. ``load_benchmark(format=..., **kwargs)`` dispatches to the reader.

The ``.npy`` format (as used by the GSV-Cities / BoQ validation code)::

    <root>/<name>_dbImages.npy   array of image paths, relative to <root>
    <root>/<name>_qImages.npy    array of image paths, relative to <root>
    <root>/<name>_gt.npy         per query, an array of positive database indices
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vprlab.data.transforms import as_hw

QUERIES_WITHOUT_POSITIVE = ("miss", "exclude")


@dataclass
class Benchmark:
    """A retrieval benchmark. Paths are ready to open (readers join them with the root).

    ``positives[i]`` holds the database indices that count as correct for query ``i``;
    ``queries_without_positive`` says how recall treats queries whose array is empty
    (``"miss"``: count as failures, ``"exclude"``: leave out of the denominator).
    ``image_size`` is the (H, W) to evaluate at, ``None`` to use the model's default.
    """

    name: str
    db_paths: list[str]
    query_paths: list[str]
    positives: list[np.ndarray]
    image_size: tuple[int, int] | None = None
    queries_without_positive: str = "miss"

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
) -> Benchmark:
    """Read ``<root>/<name>_{dbImages,qImages,gt}.npy`` into a :class:`Benchmark`."""
    root = Path(root)
    hint = (
        f"the .npy benchmark {name!r} needs {name}_dbImages.npy, {name}_qImages.npy and {name}_gt.npy "
        f"in {root}; fix the benchmark root/name, or run `make quickstart` for the synthetic benchmark"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark root {root} does not exist; {hint}")
    db = np.load(_require_file(root / f"{name}_dbImages.npy", "database list", hint), allow_pickle=True)
    q = np.load(_require_file(root / f"{name}_qImages.npy", "query list", hint), allow_pickle=True)
    gt = np.load(_require_file(root / f"{name}_gt.npy", "ground-truth file", hint), allow_pickle=True)
    return Benchmark(
        name=name,
        db_paths=[str(root / str(p)) for p in db],
        query_paths=[str(root / str(p)) for p in q],
        positives=_as_positive_arrays(gt),
        image_size=as_hw(image_size) if image_size is not None else None,
        queries_without_positive=queries_without_positive,
    )


READERS: dict[str, Callable[..., Benchmark]] = {"npy": load_npy_benchmark}


def load_benchmark(cfg: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Benchmark:
    """Build a benchmark from a config-like mapping and/or keyword arguments.

    ``format`` picks the reader (one of :data:`READERS`); the other keys are the reader's
    arguments, e.g. ``load_benchmark(format="npy", root="data/synthetic/benchmark", name="synthetic")``.
    Hydra's ``_target_`` key, if present, is ignored.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    params: dict[str, Any] = dict(cfg or {})
    params.update(kwargs)
    params.pop("_target_", None)
    fmt = params.pop("format", None)
    if fmt is None:
        raise ValueError(f"benchmark config has no 'format'; set one of {sorted(READERS)} (got keys {sorted(params)})")
    if fmt not in READERS:
        raise ValueError(f"unknown benchmark format {fmt!r}; known formats: {sorted(READERS)}")
    if isinstance(params.get("image_size"), (list, tuple)):
        params["image_size"] = tuple(params["image_size"])
    return READERS[fmt](**params)
