"""Loading never runs code stored in a file: checkpoints, weight files, exports and .npy lists are
read tensors / numpy arrays only; the full unpickler runs only after an explicit opt-in."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from conftest import compose_config

from vprlab.commands.evaluate import load_model_for_eval
from vprlab.data.benchmark_readers import load_npy_benchmark
from vprlab.engine.checkpoint import load_checkpoint, save_checkpoint
from vprlab.engine.resume import load_resume_checkpoint
from vprlab.pretrained import export_release, hub_model, load_pretrained
from vprlab.utils.io import load_npy
from vprlab.utils.seed import rng_state, set_rng_state
from vprlab.utils.weights import UnsafeFileError, read_state_dict

REFUSED = "loading it would run code stored in the file"


class Payload:
    """Unpickling this creates ``marker``: what a hostile file would do instead."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Foreign:
    """A harmless object of a class torch's weights-only unpickler does not know."""


def _payload_file(tmp_path, name="evil.pth"):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"model": {"w": torch.zeros(1)}, "state_dict": {"w": torch.zeros(1)}, "x": Payload(marker)}, path)
    return path, marker


LOADERS = {
    "load_checkpoint": lambda p: load_checkpoint(p),
    "read_state_dict": lambda p: read_state_dict(p),
    "load_pretrained(path)": lambda p: load_pretrained(p),
    "load_pretrained(name, weights=)": lambda p: load_pretrained("boq_resnet50_16384", weights=p),
    "hub weights=": lambda p: hub_model("resnet50", 16384, weights=p),
    "export": lambda p: export_release(p, p.parent / "out.pth"),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_payload_file_is_refused_and_never_runs(name, tmp_path):
    path, marker = _payload_file(tmp_path)
    with pytest.raises(UnsafeFileError, match=REFUSED):
        LOADERS[name](path)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["ckpt_path", "weights_path", "pretrained.path"])
def test_evaluate_py_refuses_a_payload_file(key, tmp_path):
    path, marker = _payload_file(tmp_path)
    overrides = [f"paths.output_dir={tmp_path}", f"{key}={path}"]
    if key == "pretrained.path":
        overrides[1:] = ["pretrained=boq_resnet50_16384", f"pretrained.path={path}"]
    with pytest.raises(UnsafeFileError, match=REFUSED):
        load_model_for_eval(compose_config("evaluate", overrides))
    assert not marker.exists()


@pytest.mark.parametrize("planted", ["file", "auto"])
def test_train_resume_refuses_a_payload_checkpoint(planted, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    path, marker = _payload_file(tmp_path / "checkpoints", "last.ckpt")
    value = "auto" if planted == "auto" else str(path)
    with pytest.raises((UnsafeFileError, RuntimeError), match=REFUSED):
        load_resume_checkpoint(value, tmp_path / "checkpoints")
    assert not marker.exists()


def test_the_opt_in_loads_a_trusted_file_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.ckpt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Foreign()}, path)
    with pytest.raises(UnsafeFileError, match="allow_unsafe_pickle=true"):
        load_checkpoint(path)
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint(path, allow_unsafe_pickle=True)
    assert torch.equal(state["model"]["w"], torch.ones(2)) and isinstance(state["extra"], Foreign)
    assert "full unpickler" in caplog.text


def test_a_checkpoint_with_rng_states_and_numpy_values_loads_weights_only(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = {"model": {"w": torch.arange(3.0)}, "rng": rng_state(), "best_metric": np.float64(42.5),
             "history": [{"metrics": {"b": {"R@1": np.float32(7.0)}}}], "array": np.arange(4)}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    path = save_checkpoint(tmp_path / "c.ckpt", state)
    loaded = torch.load(path, weights_only=True)  # no opt-in needed
    assert loaded["best_metric"] == 42.5 and loaded["history"][0]["metrics"]["b"]["R@1"] == 7.0
    assert torch.equal(loaded["array"], torch.arange(4))
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_a_foreign_training_checkpoint_with_numpy_values_loads_without_opt_in(tmp_path):
    """CricaVPR's, SuperVLAD's and EDTformer's train.py save ``recalls`` (a numpy array) and ``best_r5``
    (a numpy float64) beside ``model_state_dict`` with plain ``torch.save``: their released files must
    load tensors-only, as numpy arrays rebuild without running code from the file."""
    path = tmp_path / "CricaVPR.pth"
    weights = {"module.backbone.w": torch.arange(3.0)}
    torch.save({"epoch_num": 7, "model_state_dict": weights, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "recalls": np.array([91.2, 96.1, 97.4, 98.0]), "best_r5": np.float64(96.1), "not_improved_num": 0}, path)
    state = read_state_dict(path)
    assert list(state) == ["module.backbone.w"] and torch.equal(state["module.backbone.w"], torch.arange(3.0))


def test_a_payload_inside_a_numpy_object_array_is_still_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "recalls": np.array([Payload(marker)], dtype=object)}, path)
    with pytest.raises(UnsafeFileError, match=REFUSED):
        read_state_dict(path)
    assert not marker.exists()


def test_npy_object_arrays_load_without_the_full_unpickler(tmp_path):
    gt = np.empty(3, dtype=object)
    gt[:] = [np.array([1, 2]), np.array([0]), np.array([], dtype=np.int64)]
    np.save(tmp_path / "gt.npy", gt, allow_pickle=True)
    back = load_npy(tmp_path / "gt.npy")
    assert [list(a) for a in back] == [[1, 2], [0], []]
    np.save(tmp_path / "plain.npy", np.array(["a.jpg", "b.jpg"]))
    assert list(load_npy(tmp_path / "plain.npy")) == ["a.jpg", "b.jpg"]


def test_a_payload_npy_ground_truth_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    root = tmp_path / "bench"
    root.mkdir()
    np.save(root / "b_dbImages.npy", np.array(["d0.jpg", "d1.jpg"]))
    np.save(root / "b_qImages.npy", np.array(["q0.jpg"]))
    gt = np.empty(1, dtype=object)
    gt[0] = Payload(marker)
    np.save(root / "b_gt.npy", gt, allow_pickle=True)
    with pytest.raises(ValueError, match=r"ground-truth file .*b_gt.npy holds pickled objects that are not numpy arrays"):
        load_npy_benchmark(root, "b")
    assert not marker.exists()
