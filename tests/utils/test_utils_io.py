"""Atomic writers: a streamed .npy is complete under its name or not there at all."""

from __future__ import annotations

import numpy as np
import pytest

from vprlab.utils.io import NpyRowWriter


def test_row_writer_writes_blocks_in_order_and_maps_the_result(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((n, 5)).astype(np.float32) for n in (3, 4, 1)]
    with NpyRowWriter(tmp_path / "a.npy", 8, np.float16) as writer:
        for block in blocks:
            writer.write(block)
        assert not (tmp_path / "a.npy").exists()  # only the temporary file until complete
    expected = np.concatenate(blocks).astype(np.float16)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected)
    assert isinstance(writer.result, np.memmap) and writer.result.dtype == np.float16
    np.testing.assert_array_equal(writer.result, expected)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_row_writer_leaves_nothing_behind_on_errors_or_wrong_row_counts(tmp_path):
    (tmp_path / "old.npy").write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="boom"):
        with NpyRowWriter(tmp_path / "old.npy", 4, np.float32) as writer:
            writer.write(np.zeros((2, 3)))
            raise RuntimeError("boom")
    assert (tmp_path / "old.npy").read_bytes() == b"previous"  # what was there is not lost
    with pytest.raises(ValueError, match=r"2 rows written of the 4 announced"):
        with NpyRowWriter(tmp_path / "short.npy", 4, np.float32) as writer:
            writer.write(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"5 rows written, more than the 4 announced"):
        with NpyRowWriter(tmp_path / "long.npy", 4, np.float32) as writer:
            writer.write(np.zeros((5, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npy"]
