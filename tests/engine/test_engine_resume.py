"""Resume means the stored run: ckpt_path=<file> rebuilds the checkpoint's configuration, only resume-safe
keys may be overridden, and anything else fails before a model is built, naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, compose_config, tiny_train_overrides
from omegaconf import OmegaConf

import vprlab.engine.resume as resume_module
import vprlab.engine.trainer as trainer_module
from vprlab.engine.checkpoint import save_checkpoint
from vprlab.engine.resume import (
    RESUME_SAFE,
    is_resume_safe,
    prepare_resume,
    resume_config,
)


@pytest.fixture()
def stored_run(tiny_synthetic, tmp_path):
    """A checkpoint of a quickstart-recipe run (as train.py stores it), without training."""
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "old", "optimizer.lr=0.002"))
    stored = OmegaConf.to_container(cfg, resolve=True)
    path = save_checkpoint(tmp_path / "old" / "checkpoints" / "last.ckpt", {"model": {}, "config": stored, "epoch": 1, "step": 3})
    return path, stored


def _never_build(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(trainer_module, "build_model", fail)


def test_resume_rebuilds_the_stored_config_not_the_defaults(stored_run, tmp_path, monkeypatch):
    path, stored = stored_run
    # What `python train.py ckpt_path=<file> trainer.max_epochs=5 logger=none` composes: the defaults (GSV-Cities,
    # ResNet50) plus those overrides. The stored run was the quickstart recipe.
    overrides = [f"ckpt_path={path}", "trainer.max_epochs=5", "logger=none"]
    cfg = compose_config("train", [*overrides, f"paths.output_dir={tmp_path / 'new'}"])
    monkeypatch.setattr(resume_module, "command_line_overrides", lambda: overrides)
    resumed, ckpt, state = prepare_resume(cfg)
    assert ckpt == path and state["epoch"] == 1
    assert resumed.dataset.root == stored["dataset"]["root"] and resumed.backbone.model_name == stored["backbone"]["model_name"]
    assert resumed.optimizer.lr == 0.002 and resumed.aggregator.num_queries == 8
    assert resumed.trainer.max_epochs == 5 and resumed.logger == cfg.logger
    assert resumed.paths.output_dir == str(tmp_path / "new")  # this run's folder


@pytest.mark.parametrize("override, key", [("optimizer.lr=5e-3", "optimizer.lr"), ("aggregator=gem", "aggregator"),
                                           ("seed=7", "seed"), ("experiment=quickstart", "experiment")])
def test_other_overrides_fail_before_anything_is_built(stored_run, tmp_path, monkeypatch, override, key):
    path, _ = stored_run
    overrides = [f"ckpt_path={path}", "trainer.max_epochs=5", override]
    monkeypatch.setattr(resume_module, "command_line_overrides", lambda: overrides)
    _never_build(monkeypatch)
    cfg = compose_config("train", [*overrides, f"paths.output_dir={tmp_path / 'new'}"])
    with pytest.raises(ValueError, match=rf"resumes the run stored in the checkpoint.*: {key} is not resume-safe"):
        trainer_module.train(cfg)


def test_a_different_aggregator_never_reaches_load_state_dict(tiny_synthetic, stored_run, tmp_path, monkeypatch):
    """Without Hydra (a config made in Python) the keys that differ from the stored config are the overrides."""
    path, _ = stored_run
    _never_build(monkeypatch)
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "old", "optimizer.lr=0.002",
                                                       f"ckpt_path={path}"))
    cfg.aggregator._target_ = "vprlab.models.aggregators.GeM"
    with pytest.raises(ValueError, match=r"aggregator\._target_ \(stored: vprlab\.models\.aggregators\.boq\.BoQ, asked: .*GeM\)"):
        trainer_module.train(cfg)


def test_safe_keys_are_the_documented_ones():
    assert is_resume_safe("trainer.max_epochs") and is_resume_safe("dataset.num_workers") and is_resume_safe("logger.mode")
    assert not is_resume_safe("optimizer.lr") and not is_resume_safe("trainer.max_epochs_extra") and not is_resume_safe("aggregator")
    docs = (REPO / "docs" / "training.md").read_text()
    for key in RESUME_SAFE:
        assert key.rstrip(".") in docs, f"{key} is resume-safe but docs/training.md does not list it"


def test_resume_config_merges_only_the_overridden_safe_keys():
    stored = {"seed": 1, "trainer": {"max_epochs": 2, "device": "cpu"}, "optimizer": {"lr": 0.1}, "paths": {"output_dir": "/old"},
              "ckpt_path": None, "logger": {"mode": "offline"}}
    cfg = OmegaConf.create({**stored, "trainer": {"max_epochs": 9, "device": "cuda"}, "optimizer": {"lr": 0.5},
                            "paths": {"output_dir": "/new"}, "ckpt_path": "/old/last.ckpt"})
    merged = resume_config(cfg, stored, ["ckpt_path=/old/last.ckpt", "trainer.max_epochs=9"])
    assert merged.trainer.max_epochs == 9 and merged.trainer.device == "cpu" and merged.optimizer.lr == 0.1
    assert merged.paths.output_dir == "/new" and merged.ckpt_path == "/old/last.ckpt"


def test_train_py_names_the_refused_key_without_a_load_state_dict_dump(stored_run, tmp_path):
    path, _ = stored_run
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"ckpt_path={path}", "aggregator=gem", "optimizer.lr=5e-3",
         f"hydra.run.dir={tmp_path / 'new'}", "logger=none"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode != 0
    assert "aggregator, optimizer.lr are not resume-safe" in result.stderr
    assert "load_state_dict" not in result.stderr and "size mismatch" not in result.stderr


def test_a_run_stored_before_city_batches_resumes_with_the_order_it_trained_with():
    """Checkpoints written before dataset.batch_order / drop_last existed shuffled all places and dropped the
    last partial batch: resuming them must not switch to today's city-by-city default mid-run."""
    stored = {"seed": 1, "trainer": {"max_epochs": 2}, "paths": {"output_dir": "/old"}, "ckpt_path": None,
              "dataset": {"root": "/gsv", "places_per_batch": 8, "img_per_place": 4}}
    cfg = OmegaConf.create({**stored, "paths": {"output_dir": "/new"}, "ckpt_path": "/old/last.ckpt"})
    merged = resume_config(cfg, stored, ["ckpt_path=/old/last.ckpt"])
    assert merged.dataset.batch_order == "shuffled" and merged.dataset.drop_last is True
    recent = {**stored, "dataset": {**stored["dataset"], "batch_order": "city", "drop_last": False}}
    merged = resume_config(cfg, recent, ["ckpt_path=/old/last.ckpt"])
    assert merged.dataset.batch_order == "city" and merged.dataset.drop_last is False
