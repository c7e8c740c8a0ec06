import os

import pytest
import torch

from vprlab.engine.checkpoint import load_checkpoint, save_checkpoint
from vprlab.utils.io import atomic_write_text
from vprlab.utils.weights import file_hash, state_dict_hash


def test_checkpoint_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "config": {"a": 1}}
    path = save_checkpoint(tmp_path / "ck" / "last.ckpt", state)
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and back["config"] == {"a": 1}
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "last.ckpt"
    save_checkpoint(target, {"model": {}, "epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(target, {"model": {}, "epoch": 2, "bad": Unpicklable()})
    assert load_checkpoint(target)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_missing_and_damaged_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    atomic_write_text(tmp_path / "bad.ckpt", "not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.ckpt.*could not be read"):
        load_checkpoint(tmp_path / "bad.ckpt")
    torch.save({"weights": 1}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a vprlab checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_hashes_follow_content(tmp_path):
    a = {"x": torch.zeros(3), "n": torch.tensor(5)}
    b = {"n": torch.tensor(5), "x": torch.zeros(3)}
    assert state_dict_hash(a) == state_dict_hash(b)
    b["x"][0] = 1
    assert state_dict_hash(a) != state_dict_hash(b)
    atomic_write_text(tmp_path / "f", "abc")
    # sha256("abc")
    assert file_hash(tmp_path / "f") == "ba7816bf8f01"
