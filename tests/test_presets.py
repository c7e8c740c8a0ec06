"""Experiment presets survive swapping the aggregator: every experiment x aggregator composes and passes
the pre-build checks, or fails there (before anything heavy is built) with a message naming the conflict.
Evaluation-only recipes live in conf/recipe/, which train.py does not offer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import CONF, REPO, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from vprlab.config.checks import validate_train_config
from vprlab.config.composition import check_component_keys
from vprlab.models.vpr_model import build_model


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


EXPERIMENTS, AGGREGATORS = _options("experiment"), _options("aggregator")
# Experiments on the CPU-sized ResNet18: their models are built and run (the others are only composed and
# checked against the classes' signatures: building a ResNet50 or a DINOv2 120 times is not cheap).
CHEAP = {"quickstart", "synthetic_compare"}
# Experiments whose feature maps are the 20x20 MixVPR is sized for (ResNet50 cropped at 320x320).
MIXVPR_READY = {"mixvpr_resnet50_4096", "netvlad_resnet50"}


def expected_failure(experiment: str, aggregator: str) -> str | None:
    """The pairs that cannot work, each with (a regex of) the message that names the conflict."""
    if experiment == "salad_dinov2" and aggregator != "salad":
        # SALAD's recipe turns on the backbone's class token, which only SALAD reads.
        return (rf"experiment=salad_dinov2 sets backbone.return_cls_token=true, but aggregator={aggregator} "
                r"\(vprlab\.models\.aggregators\..*\) takes a feature map.*backbone.return_cls_token=false")
    if aggregator == "salad" and experiment != "salad_dinov2":
        return r"aggregator=salad needs the backbone's class token.*return_cls_token=true"
    if aggregator == "mixvpr" and experiment not in MIXVPR_READY:
        return r"gives \d+x\d+ feature maps \(stride \d+\) but MixVPR is built for 20x20.*aggregator.in_h="
    return None


def _train_cfg(tmp_path, *overrides: str, hydra: bool = True):
    return compose_config("train", [*overrides, f"paths.output_dir={tmp_path}", "dataset.root=null"], hydra=hydra)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_with_every_aggregator_builds_or_names_the_conflict(experiment, tmp_path) -> None:
    outcomes = {}
    for aggregator in AGGREGATORS:
        cfg = _train_cfg(tmp_path, f"experiment={experiment}", f"aggregator={aggregator}")
        assert cfg.hydra.runtime.choices.aggregator == aggregator  # the command line wins over the experiment
        expected = expected_failure(experiment, aggregator)
        if expected:
            with pytest.raises(ValueError, match=expected):
                validate_train_config(cfg)
            outcomes[aggregator] = "fails"
            continue
        validate_train_config(cfg)  # keys vs __init__ signatures, sizes, class token
        outcomes[aggregator] = "ok"
        if experiment in CHEAP:
            torch.manual_seed(0)
            model = build_model(cfg.backbone, cfg.aggregator).eval()
            with torch.no_grad():
                out = model(torch.randn(1, 3, *cfg.backbone.train_image_size))
            assert out.shape == (1, model.descriptor_dim)
    assert sorted(outcomes) == AGGREGATORS


def test_quickstart_keeps_its_small_boq_and_resnet18(tmp_path) -> None:
    cfg = _train_cfg(tmp_path, "experiment=quickstart", hydra=False)
    assert cfg.aggregator._target_.endswith(".BoQ") and cfg.aggregator.proj_channels == 64
    assert (cfg.aggregator.num_queries, cfg.aggregator.num_layers, cfg.aggregator.row_dim) == (16, 2, 8)
    assert cfg.backbone.model_name == "resnet18" and cfg.backbone.pretrained is False
    assert list(cfg.backbone.train_image_size) == [96, 128] and cfg.backbone.num_trainable_blocks == 4
    # Swapped, the aggregator is the plain preset; the backbone and the recipe stay.
    gem = _train_cfg(tmp_path, "experiment=quickstart", "aggregator=gem", hydra=False)
    assert OmegaConf.to_container(gem.aggregator) == {"_target_": "vprlab.models.aggregators.gem.GeM", "p": 3.0}
    assert gem.backbone == cfg.backbone and gem.trainer == cfg.trainer and gem.dataset == cfg.dataset


def test_no_experiment_sets_component_keys_of_its_own(tmp_path) -> None:
    """Model sizes belong in backbone / aggregator presets; an experiment that sets aggregator keys
    breaks as soon as another aggregator is chosen."""
    for experiment in EXPERIMENTS:
        text = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
        assert "aggregator" not in text, f"experiment={experiment} sets aggregator keys; use an aggregator preset"


def _legacy_experiment(conf_dir) -> None:
    """An experiment written the old way: BoQ sizes in the experiment file."""
    (conf_dir / "experiment").mkdir(parents=True)
    (conf_dir / "experiment" / "legacy_boq.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /backbone: resnet18_small\n"
        "aggregator:\n  num_queries: 16\n  row_dim: 8\n"
    )


def test_an_experiment_key_the_swapped_aggregator_does_not_take_is_named(tmp_path, monkeypatch) -> None:
    _legacy_experiment(tmp_path / "conf")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    validate_train_config(_train_cfg(tmp_path, "experiment=legacy_boq", searchpath))  # with BoQ: fine
    cfg = _train_cfg(tmp_path, "experiment=legacy_boq", "aggregator=gem", searchpath)
    with pytest.raises(ValueError, match=(
        r"^experiment=legacy_boq sets aggregator.num_queries, aggregator.row_dim, which aggregator=gem "
        r"\(vprlab.models.aggregators.gem.GeM\) does not take \(it takes: eps, p\); drop them "
        r"\(~aggregator.num_queries ~aggregator.row_dim\)"
    )):
        validate_train_config(cfg)
    # train() stops there, before the model, the data or the logger are built.
    import vprlab.engine.trainer as trainer

    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: pytest.fail("built the model"))
    monkeypatch.setattr(trainer, "build_train_loader", lambda *a, **k: pytest.fail("built the data"))
    with pytest.raises(ValueError, match="does not take"):
        trainer.train(cfg)


def test_a_command_line_key_is_named_as_such(tmp_path) -> None:
    cfg = _train_cfg(tmp_path, "experiment=quickstart", "aggregator=gem", "+aggregator.num_queries=8")
    with pytest.raises(ValueError, match=r"^the command line sets aggregator.num_queries, which aggregator=gem"):
        validate_train_config(cfg)
    # Outside a Hydra run (a config composed without its hydra node) the class is still named.
    plain = _train_cfg(tmp_path, "aggregator=gem", "+aggregator.num_queries=8", hydra=False)
    with pytest.raises(ValueError, match=r"aggregator.num_queries, which aggregator vprlab.models.aggregators.gem.GeM does not"):
        check_component_keys(plain)
    backbone = _train_cfg(tmp_path, "backbone=dinov2", "+backbone.crop_last_block=false")
    with pytest.raises(ValueError, match=r"backbone.crop_last_block, which backbone=dinov2 \(vprlab.models.backbones.dinov2.DinoV2Backbone\)"):
        validate_train_config(backbone)


def test_evaluate_checks_the_components_before_loading_anything(tmp_path, monkeypatch) -> None:
    import vprlab.commands.evaluate as evaluate

    monkeypatch.setattr(evaluate, "check_inputs", lambda *a, **k: pytest.fail("loaded the benchmarks"))
    cfg = compose_config("evaluate", ["aggregator=gem", "+aggregator.num_queries=8", f"paths.output_dir={tmp_path}"], hydra=True)
    with pytest.raises(ValueError, match=r"^the command line sets aggregator.num_queries, which aggregator=gem"):
        evaluate.run_evaluation(cfg)


@pytest.mark.parametrize("recipe", _options("recipe"))
def test_evaluation_recipes_are_not_training_experiments(recipe, tmp_path) -> None:
    assert recipe.startswith("reproduce_") and not (CONF / "experiment" / f"{recipe}.yaml").exists()
    with pytest.raises(MissingConfigException, match=f"Could not find 'experiment/{recipe}'"):
        compose_config("train", [f"experiment={recipe}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigCompositionException, match="recipe"):
        compose_config("train", [f"recipe={recipe}", f"paths.output_dir={tmp_path}"])
    cfg = compose_config("evaluate", [f"recipe={recipe}", f"paths.output_dir={tmp_path}"])
    assert cfg.pretrained.name and cfg.compare_with_paper and cfg.task_name == recipe


def test_train_py_refuses_a_reproduce_recipe_as_experiment(tmp_path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "experiment=reproduce_boq_dinov2",
                             f"hydra.run.dir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Could not find 'experiment/reproduce_boq_dinov2'" in result.stderr
