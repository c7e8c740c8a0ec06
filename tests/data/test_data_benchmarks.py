from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from vprlab.data.benchmark_readers import load_npy_benchmark
from vprlab.data.benchmarks import Benchmark, load_benchmark


def _ragged(*arrays) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = np.asarray(a)
    return out


def write_npy_benchmark(root: Path, name: str = "tiny", gt: np.ndarray | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{name}_dbImages.npy", np.array(["db/a.jpg", "db/b.jpg", "db/c.jpg"]))
    np.save(root / f"{name}_qImages.npy", np.array(["q/x.jpg", "q/y.jpg", "q/z.jpg"]))
    if gt is None:
        gt = _ragged([0, 2], [1], [])  # the last query has no positive
    np.save(root / f"{name}_gt.npy", gt, allow_pickle=True)
    return root


def test_npy_benchmark_paths_are_joined_with_the_root_and_positives_are_int_arrays(tmp_path):
    root = write_npy_benchmark(tmp_path / "bench")
    b = load_npy_benchmark(root, "tiny", image_size=32)
    assert b.name == "tiny" and b.num_db == 3 and b.num_queries == 3
    assert b.db_paths[1] == str(root / "db" / "b.jpg") and b.query_paths[2] == str(root / "q" / "z.jpg")
    assert [p.tolist() for p in b.positives] == [[0, 2], [1], []]
    assert all(p.dtype == np.int64 for p in b.positives)
    assert b.image_size == (32, 32) and b.queries_without_positive == "miss"
    assert b.num_queries_without_positive == 1


def test_regular_2d_ground_truth_is_accepted(tmp_path):
    root = write_npy_benchmark(tmp_path / "bench", gt=np.array([[0], [1], [2]]))
    assert [p.tolist() for p in load_npy_benchmark(root, "tiny").positives] == [[0], [1], [2]]


def test_missing_ground_truth_file_is_named(tmp_path):
    root = write_npy_benchmark(tmp_path / "bench")
    (root / "tiny_gt.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny_gt\.npy"):
        load_npy_benchmark(root, "tiny")


def test_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmark root .*nowhere"):
        load_npy_benchmark(tmp_path / "nowhere", "tiny")


def test_ground_truth_that_does_not_match_the_lists_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="3 queries but positives for 2"):
        load_npy_benchmark(write_npy_benchmark(tmp_path / "a", gt=_ragged([0], [1])), "tiny")
    with pytest.raises(ValueError, match="positive index 3 outside"):
        load_npy_benchmark(write_npy_benchmark(tmp_path / "b", gt=_ragged([0], [3], [1])), "tiny")


def test_load_benchmark_dispatches_on_format_from_a_config(tmp_path):
    root = write_npy_benchmark(tmp_path / "bench")
    cfg = OmegaConf.create({"format": "npy", "root": str(root), "name": "tiny", "image_size": [24, 32],
                            "queries_without_positive": "exclude"})
    b = load_benchmark(cfg)
    assert isinstance(b, Benchmark) and b.image_size == (24, 32) and b.queries_without_positive == "exclude"
    assert load_benchmark(format="npy", root=root, name="tiny").num_db == 3


def test_load_benchmark_rejects_unknown_or_missing_formats(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark format 'csv'"):
        load_benchmark(format="csv", root=tmp_path, name="x")
    with pytest.raises(ValueError, match="no 'format'"):
        load_benchmark(root=tmp_path, name="x")


def test_benchmark_rejects_an_unknown_policy_for_queries_without_positives():
    with pytest.raises(ValueError, match="queries_without_positive='drop'"):
        Benchmark("b", ["d"], ["q"], [np.array([0])], queries_without_positive="drop")
