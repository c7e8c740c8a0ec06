"""Atomic writers: a streamed .npy is complete under its name or not there at all."""

from __future__ import annotations

import os
import stat

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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    import torch

    from vprlab.utils.io import (
        atomic_save_npy,
        atomic_torch_save,
        atomic_write_json,
        atomic_write_text,
    )

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "results.json", {"R@1": 1.0})
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "last.ckpt")
        atomic_save_npy(tmp_path / "queries.npy", np.zeros((2, 3), np.float32))
        with NpyRowWriter(tmp_path / "database.npy", 2, np.float32) as writer:
            writer.write(np.zeros((2, 3)))
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives: the reference
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == mode
    for name in ("a.txt", "results.json", "last.ckpt", "queries.npy", "database.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
