"""The Checkpointer: when and what the training loop saves, which rank writes, and resume from
the previous good checkpoint when last.ckpt is damaged."""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch
from conftest import compose_config, tiny_train_overrides

from vprlab.engine.checkpoint import load_checkpoint, save_checkpoint
from vprlab.engine.checkpointer import Checkpointer
from vprlab.engine.resume import load_resume_checkpoint
from vprlab.engine.trainer import train


class FakeState:
    """A state_fn that counts its calls and stamps each checkpoint with a serial number."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return {"model": {"w": torch.full((2,), float(self.calls))}, "serial": self.calls}


def _serial(path) -> int:
    return load_checkpoint(path)["serial"]


def _files(ckpt_dir) -> list[str]:
    return sorted(p.name for p in ckpt_dir.iterdir()) if ckpt_dir.exists() else []


def _metrics(r1: float) -> dict:
    return {"bench": {"R@1": r1, "R@5": 99.0}}


def test_periodic_cadence(tmp_path):
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=3, monitor=None)
    written = [step for step in range(1, 10) if ck.after_step(step, state)]
    assert written == [3, 6, 9] and state.calls == 3
    assert _serial(tmp_path / "last.ckpt") == 3 and _serial(tmp_path / "last.prev.ckpt") == 2

    never = Checkpointer(tmp_path / "never", is_main=True, every_n_steps=None, monitor=None)
    assert not any(never.after_step(step, state) for step in range(1, 10))
    assert state.calls == 3 and _files(tmp_path / "never") == []


@pytest.mark.parametrize(("mode", "values", "bests"), [
    ("max", [10.0, 30.0, 20.0, 30.0, 40.0], [True, True, False, False, True]),
    ("min", [10.0, 30.0, 5.0, 5.0, 1.0], [True, False, True, False, True]),
])
def test_best_follows_the_monitored_metric(tmp_path, mode, values, bests):
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=0, monitor="bench/R@1", mode=mode)
    assert ck.best_metric == (-math.inf if mode == "max" else math.inf)
    got = [ck.after_epoch(epoch, _metrics(v), state) for epoch, v in enumerate(values, 1)]
    assert got == bests
    want = max(values) if mode == "max" else min(values)
    assert ck.best_metric == want
    # best.ckpt holds the state of the last improving epoch; one state per epoch serves both files
    assert state.calls == len(values)
    assert _serial(tmp_path / "best.ckpt") == max(i for i, b in enumerate(bests, 1) if b)
    assert _serial(tmp_path / "last.ckpt") == len(values)


def test_epochs_without_evaluation_write_last_only(tmp_path):
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=0, monitor="bench/R@1")
    assert ck.after_epoch(1, {}, state) is False
    assert _files(tmp_path) == ["last.ckpt"] and ck.best_metric == -math.inf
    with pytest.raises(KeyError, match="trainer.monitor='bench/R@1': no benchmark named 'bench'; evaluated: other"):
        ck.after_epoch(2, {"other": {"R@1": 1.0}}, state)


def test_last_rotates_to_last_prev(tmp_path):
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=1, monitor=None)
    ck.after_step(1, state)
    assert _files(tmp_path) == ["last.ckpt"]
    ck.after_epoch(1, {}, state)
    assert _files(tmp_path) == ["last.ckpt", "last.prev.ckpt"]
    assert (_serial(tmp_path / "last.ckpt"), _serial(tmp_path / "last.prev.ckpt")) == (2, 1)
    ck.on_stop(state)
    assert (_serial(tmp_path / "last.ckpt"), _serial(tmp_path / "last.prev.ckpt")) == (3, 2)
    assert _files(tmp_path) == ["last.ckpt", "last.prev.ckpt"]  # no staging or temporary files left

    single = Checkpointer(tmp_path / "single", is_main=True, every_n_steps=1, monitor=None, keep_previous=False)
    single.after_step(1, state)
    single.after_step(2, state)
    assert _files(tmp_path / "single") == ["last.ckpt"] and _serial(tmp_path / "single" / "last.ckpt") == 5


def test_last_exists_at_every_moment_of_a_rotation(tmp_path, monkeypatch):
    """A SIGKILL can land between any two file operations: at each rename of the rotation a complete
    last.ckpt must already be on disk (before: renaming last.ckpt away left an instant without it)."""
    import os

    from vprlab.engine import checkpointer as module

    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=1, monitor=None)
    ck.after_step(1, state)
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(_serial(tmp_path / "last.ckpt"))  # raises if last.ckpt is missing or partial
        real_replace(src, dst)

    monkeypatch.setattr(module.os, "replace", replace)
    ck.after_step(2, state)
    monkeypatch.undo()
    assert seen and all(serial == 1 for serial in seen)
    assert (_serial(tmp_path / "last.ckpt"), _serial(tmp_path / "last.prev.ckpt")) == (2, 1)
    assert _files(tmp_path) == ["last.ckpt", "last.prev.ckpt"]


def test_a_failed_write_keeps_last_and_previous(tmp_path):
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=1, monitor=None)
    state = FakeState()
    ck.after_step(1, state)
    ck.after_step(2, state)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ck.after_step(3, lambda: {"model": {}, "bad": Unpicklable()})
    assert (_serial(tmp_path / "last.ckpt"), _serial(tmp_path / "last.prev.ckpt")) == (2, 1)
    assert _files(tmp_path) == ["last.ckpt", "last.prev.ckpt"]


def test_other_ranks_never_write_nor_build_state_nor_decide_best(tmp_path):
    def state_fn():
        raise AssertionError("a non-main rank built a checkpoint")

    ck = Checkpointer(tmp_path / "ckpt", is_main=False, every_n_steps=1, monitor="bench/R@1")
    assert not ck.after_step(1, state_fn)
    assert ck.after_epoch(1, _metrics(50.0), state_fn) is False
    assert not ck.on_stop(state_fn)
    assert ck.best_metric == -math.inf
    assert not (tmp_path / "ckpt").exists()


def test_on_stop_writes_last(tmp_path):
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=0, monitor=None)
    assert ck.on_stop(state)
    assert _files(tmp_path) == ["last.ckpt"] and _serial(tmp_path / "last.ckpt") == 1


def test_resume_restores_best_and_after_a_fallback_never_keeps_the_damaged_last(tmp_path):
    state = FakeState()
    save_checkpoint(tmp_path / "last.prev.ckpt", {"model": {}, "serial": 0})
    (tmp_path / "last.ckpt").write_bytes(b"damaged")
    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=0, monitor="bench/R@1")
    ck.resume(tmp_path / "last.prev.ckpt", 42.0)
    assert ck.best_metric == 42.0
    assert ck.after_epoch(1, _metrics(41.0), state) is False
    # the damaged last.ckpt is replaced, not rotated over the good previous checkpoint
    assert (_serial(tmp_path / "last.ckpt"), _serial(tmp_path / "last.prev.ckpt")) == (1, 0)
    ck.after_epoch(2, _metrics(43.0), state)
    assert (_serial(tmp_path / "last.ckpt"), _serial(tmp_path / "last.prev.ckpt")) == (2, 1)
    assert _serial(tmp_path / "best.ckpt") == 2 and ck.best_metric == 43.0


def test_auto_resume_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    assert load_resume_checkpoint(None, tmp_path) == (None, None)
    assert load_resume_checkpoint("auto", tmp_path / "empty") == (None, None)

    ck = Checkpointer(tmp_path, is_main=True, every_n_steps=1, monitor=None)
    state = FakeState()
    ck.after_step(1, state)
    ck.after_step(2, state)
    path, loaded = load_resume_checkpoint("auto", tmp_path)
    assert path == tmp_path / "last.ckpt" and loaded["serial"] == 2

    last, prev = tmp_path / "last.ckpt", tmp_path / "last.prev.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="vprlab.engine.resume"):
        path, loaded = load_resume_checkpoint("auto", tmp_path)
    assert path == prev and loaded["serial"] == 1
    assert f"checkpoint '{last}' could not be read" in caplog.text
    assert f"resuming from the previous checkpoint {prev}" in caplog.text

    last.unlink()  # a crash between the two renames of a write
    assert load_resume_checkpoint("auto", tmp_path)[0] == prev

    # an explicit file is loaded as it is, without a fallback
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        load_resume_checkpoint(str(last), tmp_path)

    last.write_bytes(b"damaged")
    prev.write_bytes(b"damaged too")
    with pytest.raises(RuntimeError, match=rf"ckpt_path=auto: neither checkpoint is readable: checkpoint '{re.escape(str(last))}' could not be read.*'{re.escape(str(prev))}' could not be read"):
        load_resume_checkpoint("auto", tmp_path)
    prev.unlink()
    with pytest.raises(RuntimeError, match=rf"'{re.escape(str(last))}' could not be read.*no previous checkpoint {re.escape(str(prev))}"):
        load_resume_checkpoint("auto", tmp_path)


def test_training_writes_last_prev_and_best_and_resumes_past_a_truncated_last(tiny_synthetic, tmp_path, caplog):
    overrides = tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "trainer.eval_before_training=false", "logger=none")
    result = train(compose_config("train", overrides))
    ckpt_dir = tmp_path / "checkpoints"
    assert _files(ckpt_dir) == ["best.ckpt", "last.ckpt", "last.prev.ckpt"]
    last, prev = load_checkpoint(ckpt_dir / "last.ckpt"), load_checkpoint(ckpt_dir / "last.prev.ckpt")
    assert (last["epoch"], last["step"], prev["epoch"], prev["step"]) == (2, 6, 1, 3)
    assert load_checkpoint(ckpt_dir / "best.ckpt")["best_metric"] == result["best_metric"] == last["best_metric"]

    # last.ckpt cut short: ckpt_path=auto continues from epoch 1 and finishes the run again
    data = (ckpt_dir / "last.ckpt").read_bytes()
    (ckpt_dir / "last.ckpt").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="vprlab.engine.resume"):
        resumed = train(compose_config("train", [*overrides, "ckpt_path=auto"]))
    assert f"resuming from the previous checkpoint {ckpt_dir / 'last.prev.ckpt'}" in caplog.text
    assert f"'{ckpt_dir / 'last.ckpt'}' could not be read" in caplog.text
    assert resumed["step"] == 6 and resumed["weights_hash"] == result["weights_hash"]
    last, prev = load_checkpoint(ckpt_dir / "last.ckpt"), load_checkpoint(ckpt_dir / "last.prev.ckpt")
    assert (last["step"], prev["step"]) == (6, 3)  # the damaged file was replaced, the good one kept


def _two_benchmarks(msls: float, pitts: float) -> dict:
    return {"msls_val": {"R@1": msls, "R@5": 99.0}, "pitts30k_val": {"R@1": pitts, "R@5": 99.0}}


def test_top_k_by_the_chosen_benchmark_metric(tmp_path):
    """BoQ's ModelCheckpoint(monitor="msls-val/R@1", save_top_k=3, mode="max"): the 3 best epochs by
    msls_val R@1 are kept (pitts30k_val, also evaluated, disagrees and must not count); an epoch enters when
    it beats the worst kept one strictly (a tie does not), and the one it pushes out is deleted."""
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, monitor="msls_val/R@1", save_top_k=3)
    msls = [50.0, 70.0, 60.0, 65.0, 60.0, 80.0, 40.0]
    pitts = [90.0, 10.0, 95.0, 20.0, 99.0, 30.0, 99.5]
    for epoch, (m, p) in enumerate(zip(msls, pitts), 1):
        ck.after_epoch(epoch, _two_benchmarks(m, p), state)
    # independently: the 3 best epochs by msls R@1, ties resolved for the earlier epoch
    ranked = sorted(range(1, len(msls) + 1), key=lambda e: (-msls[e - 1], e))[:3]
    assert [e["epoch"] for e in ck.top_checkpoints] == ranked == [6, 2, 4]
    names = [f"epoch{e:03d}_msls_val-R@1={msls[e - 1]:.4f}.ckpt" for e in ranked]
    assert _files(tmp_path) == sorted(["best.ckpt", "last.ckpt", "last.prev.ckpt", *names])
    for epoch, name in zip(ranked, names):
        stored = load_checkpoint(tmp_path / name)
        assert stored["serial"] == epoch  # the state of that epoch
        assert name in [e["file"] for e in stored["top_checkpoints"]]  # the list it was written with holds it
    assert _serial(tmp_path / "best.ckpt") == 6 and ck.best_metric == 80.0
    assert [e["file"] for e in load_checkpoint(tmp_path / "last.ckpt")["top_checkpoints"]] == names


def test_top_k_one_keeps_only_best_and_nan_never_enters(tmp_path):
    state = FakeState()
    ck = Checkpointer(tmp_path / "one", is_main=True, monitor="msls_val/R@1")  # the default save_top_k=1
    for epoch, value in enumerate([10.0, 20.0, 15.0], 1):
        ck.after_epoch(epoch, _two_benchmarks(value, 0.0), state)
    assert _files(tmp_path / "one") == ["best.ckpt", "last.ckpt", "last.prev.ckpt"]
    assert "top_checkpoints" not in load_checkpoint(tmp_path / "one" / "last.ckpt")
    nan = Checkpointer(tmp_path / "nan", is_main=True, monitor="msls_val/R@1", save_top_k=2)
    nan.after_epoch(1, _two_benchmarks(float("nan"), 0.0), state)
    assert nan.top_checkpoints == [] and _files(tmp_path / "nan") == ["last.ckpt"]
    with pytest.raises(ValueError, match=r"trainer.save_top_k=0: a whole number >= 1"):
        Checkpointer(tmp_path, is_main=True, monitor="msls_val/R@1", save_top_k=0)


def test_top_k_survives_a_resume_and_forgets_missing_files(tmp_path):
    state = FakeState()
    ck = Checkpointer(tmp_path, is_main=True, monitor="msls_val/R@1", save_top_k=2)
    for epoch, value in enumerate([10.0, 30.0, 20.0], 1):
        ck.after_epoch(epoch, _two_benchmarks(value, 0.0), state)
    stored = load_checkpoint(tmp_path / "last.ckpt")
    resumed = Checkpointer(tmp_path, is_main=True, monitor="msls_val/R@1", save_top_k=2)
    resumed.resume(tmp_path / "last.ckpt", ck.best_metric, stored["top_checkpoints"])
    assert resumed.top_checkpoints == ck.top_checkpoints and [e["epoch"] for e in ck.top_checkpoints] == [2, 3]
    resumed.after_epoch(4, _two_benchmarks(25.0, 0.0), state)  # pushes epoch 3 (20.0) out
    assert [e["epoch"] for e in resumed.top_checkpoints] == [2, 4]
    assert not (tmp_path / "epoch003_msls_val-R@1=20.0000.ckpt").exists()
    (tmp_path / "epoch002_msls_val-R@1=30.0000.ckpt").unlink()
    again = Checkpointer(tmp_path, is_main=True, monitor="msls_val/R@1", save_top_k=2)
    again.resume(None, 30.0, load_checkpoint(tmp_path / "last.ckpt")["top_checkpoints"])
    assert [e["epoch"] for e in again.top_checkpoints] == [4]


def test_training_keeps_the_top_k_epochs_and_validates_with_the_recipe_preprocessing(tiny_synthetic, tmp_path, monkeypatch):
    """train(): trainer.save_top_k=2 keeps the two best of three epochs by the monitored metric, and
    trainer.val_preprocessing is what the epoch-end validation resizes with."""
    import vprlab.engine.trainer as trainer

    seen = []
    real = trainer.evaluate_model

    def spy(model, benchmarks, settings):
        seen.append(settings.preprocessing)
        return real(model, benchmarks, settings)

    monkeypatch.setattr(trainer, "evaluate_model", spy)
    overrides = tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path, "trainer.eval_before_training=false", "logger=none", "trainer.max_epochs=3",
        "trainer.save_top_k=2", "trainer.val_preprocessing={size:[40,56],interpolation:bilinear,stage:pil}",
    )
    result = train(compose_config("train", overrides))
    assert len(seen) == 3 and all(p.describe() == "40x56 PIL bilinear" for p in seen)
    values = {h["epoch"]: h["metrics"]["synthetic"]["R@1"] for h in result["history"]}
    ranked = sorted(values, key=lambda e: (-values[e], e))[:2]
    ckpt_dir = tmp_path / "checkpoints"
    kept = [f"epoch{e:03d}_synthetic-R@1={values[e]:.4f}.ckpt" for e in ranked]
    assert sorted(p.name for p in ckpt_dir.glob("epoch*.ckpt")) == sorted(kept)
    assert [e["file"] for e in load_checkpoint(ckpt_dir / "last.ckpt")["top_checkpoints"]] == kept
    assert load_checkpoint(ckpt_dir / kept[0])["epoch"] == ranked[0]


def test_a_monitor_naming_a_benchmark_that_is_not_validated_is_refused_before_training():
    """experiment=boq_resnet50 benchmark=[pitts30k_val] keeps trainer.monitor=msls_val/R@1: say so at the
    start, not after the first epoch."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from vprlab.engine.trainer import _monitor_key
    from vprlab.utils.errors import ConfigError

    benches = [SimpleNamespace(name="pitts30k_val")]
    with pytest.raises(ConfigError, match=r"trainer.monitor=msls_val/R@1 names benchmark 'msls_val', which is not "
                                          r"validated \(benchmark=\['pitts30k_val'\]\)"):
        _monitor_key(OmegaConf.create({"monitor": "msls_val/R@1"}), benches)
    assert _monitor_key(OmegaConf.create({"monitor": "pitts30k_val/R@5"}), benches) == "pitts30k_val/R@5"
    assert _monitor_key(OmegaConf.create({"monitor": None}), benches) == "pitts30k_val/R@1"
    assert _monitor_key(OmegaConf.create({"monitor": "msls_val/R@1"}), []) == "msls_val/R@1"  # nothing validated


def test_the_monitor_is_checked_with_the_config_so_a_sweep_refuses_it_before_any_job(tmp_path):
    """The same refusal from validate_train_config (what a sweep runs for every job before the first starts)."""
    from conftest import compose_config

    from vprlab.config.checks import validate_train_config
    from vprlab.utils.errors import ConfigError

    cfg = compose_config("train", ["experiment=quickstart", f"paths.data_dir={tmp_path}", "trainer.monitor=msls_val/R@1",
                                   "dataset.root=null"])
    with pytest.raises(ConfigError, match=r"trainer.monitor=msls_val/R@1 names benchmark 'msls_val', which is not "
                                          r"validated \(benchmark=\['synthetic'\]\)"):
        validate_train_config(cfg)
