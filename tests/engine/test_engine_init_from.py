"""init_from=<checkpoint or export>: a NEW run (own folder, epoch 0, fresh optimizer and schedule) that
starts from the model weights of a vprlab checkpoint, refused before anything is built when the stored
architecture is not this config's; ckpt_path stays the resume of a run."""

from __future__ import annotations

import pytest
import torch
from conftest import RESUMABLE_SCHEDULE, compose_config, tiny_train_overrides
from omegaconf import OmegaConf

import vprlab.engine.trainer as trainer_module
from vprlab.engine.checkpoint import load_checkpoint, save_checkpoint
from vprlab.engine.resume import load_init_weights, prepare_init_from
from vprlab.models.vpr_model import build_model
from vprlab.utils.errors import ConfigError


def test_a_new_run_starts_from_the_checkpoint_weights_only(trained_run, tiny_synthetic, tmp_path):
    result, out = trained_run
    source = out / "checkpoints" / "last.ckpt"
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new", "trainer.max_epochs=1",
                                                       f"init_from={source}", *RESUMABLE_SCHEDULE))
    new = trainer_module.train(cfg)
    # Evaluated before its first step, the new run has the stored model's recalls (the same weights) ...
    before = new["history"][0]
    recalls = lambda metrics: {k: v for k, v in metrics["synthetic"].items() if k.startswith("R@")}  # noqa: E731
    assert before["epoch"] == 0 and recalls(before["metrics"]) == recalls(result["metrics"])
    # ... but it is a new run: its own folder, epoch 0 to 1 (3 steps, not 9 + 3), a fresh optimizer.
    assert new["run_dir"] == str(tmp_path / "new") and new["step"] == 3
    ckpt = load_checkpoint(tmp_path / "new" / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 1 and ckpt["config"]["init_from"] == str(source)
    stored_optimizer = load_checkpoint(source)["optimizer"]["state"]
    first_key = next(iter(ckpt["optimizer"]["state"]))
    assert ckpt["optimizer"]["state"][first_key]["step"] == 3 != stored_optimizer[first_key]["step"]


@pytest.fixture()
def stored(tiny_synthetic, tmp_path):
    """A checkpoint (as train.py stores it) of an untrained tiny BoQ, its config and model."""
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "old"))
    torch.manual_seed(0)
    model = build_model(cfg.backbone, cfg.aggregator)
    path = save_checkpoint(tmp_path / "old" / "checkpoints" / "best.ckpt",
                           {"model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True), "epoch": 2})
    return path, model


def test_another_architecture_is_refused_naming_the_keys(stored, tiny_synthetic, tmp_path, monkeypatch):
    path, _ = stored
    monkeypatch.setattr(trainer_module, "build_model", None)  # building a model would be a TypeError, not the refusal
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new", f"init_from={path}",
                                                       "aggregator.num_queries=4", "aggregator.row_dim=2"))
    with pytest.raises(ConfigError, match=r"init_from=.*best.ckpt: the checkpoint .* holds another architecture than this "
                                          r"run's: aggregator.num_queries \(stored: 8, this run: 4\), aggregator.row_dim "
                                          r"\(stored: 4, this run: 2\)"):
        trainer_module.train(cfg)
    assert not (tmp_path / "new").exists()


def test_training_settings_of_the_model_may_change(stored, tiny_synthetic, tmp_path):
    path, model = stored
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new", f"init_from={path}",
                                                       "backbone.train_image_size=[32,48]", "backbone.num_trainable_blocks=2"))
    got_path, weights = prepare_init_from(cfg)
    assert got_path == path and cfg.backbone.pretrained is False
    fresh = build_model(cfg.backbone, cfg.aggregator)
    load_init_weights(fresh, got_path, weights)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_vprlab_export_is_accepted(stored, tiny_synthetic, tmp_path):
    from vprlab.pretrained import export_release

    path, model = stored
    exported, _ = export_release(path, tmp_path / "export" / "tiny.pth")
    assert exported.with_name("tiny.vprlab.json").is_file()
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new", f"init_from={exported}"))
    got_path, weights = prepare_init_from(cfg)
    fresh = build_model(cfg.backbone, cfg.aggregator)
    load_init_weights(fresh, got_path, weights)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_weights_that_do_not_fit_are_named_not_loaded_partially(stored, tiny_synthetic, tmp_path):
    path, model = stored
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new"))
    fresh = build_model(cfg.backbone, cfg.aggregator)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("aggregator.")}
    with pytest.raises(ConfigError, match=r"its weights do not fit the model this run built: \d+ missing keys: aggregator\."):
        load_init_weights(fresh, path, weights)


def test_files_without_a_configuration_and_resume_together_are_refused(stored, tiny_synthetic, tmp_path):
    path, model = stored
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new", f"init_from={bare}"))
    with pytest.raises(ValueError, match=r"records no training configuration"):
        prepare_init_from(cfg)
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path / "new", f"init_from={path}",
                                                       f"ckpt_path={path}"))
    with pytest.raises(ConfigError, match=r"ckpt_path resumes a run .* init_from starts a new run .*; set only one"):
        prepare_init_from(cfg)
