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
from vprlab.models.aggregators import registry
from vprlab.config.composition import check_component_keys
from vprlab.models.vpr_model import build_model


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


EXPERIMENTS, AGGREGATORS = _options("experiment"), _options("aggregator")
# Experiments on the CPU-sized ResNet18: their models are built and run (the others are only composed and
# checked against the classes' signatures: building a ResNet50 or a DINOv2 120 times is not cheap).
CHEAP = {"quickstart", "synthetic_compare"}
NEEDS_CLS_TOKEN = {name for name, entry in registry().items() if entry.spec.needs_cls_token}  # SALAD, CricaVPR, EDTformer
# Experiments whose feature maps are the 20x20 MixVPR is sized for (ResNet50 cropped at 320x320).
MIXVPR_READY = {"mixvpr_resnet50_4096", "netvlad_resnet50"}


def expected_failure(experiment: str, aggregator: str) -> str | None:
    """The pairs that cannot work, each with (a regex of) the message that names the conflict."""
    if experiment == "salad_dinov2" and aggregator not in NEEDS_CLS_TOKEN:
        # SALAD's recipe turns on the backbone's class token, which only SALAD (CricaVPR, EDTformer) reads.
        return (rf"experiment=salad_dinov2 sets backbone.return_cls_token=true, but aggregator={aggregator} "
                r"\(vprlab\.models\.aggregators\..*\) takes a feature map.*backbone.return_cls_token=false")
    if aggregator in NEEDS_CLS_TOKEN and experiment != "salad_dinov2":
        return rf"aggregator={aggregator} needs the backbone's class token.*return_cls_token=true"
    if aggregator == "mixvpr" and experiment not in MIXVPR_READY:
        return r"gives \d+x\d+ feature maps \(stride \d+\) but MixVPR is built for 20x20.*aggregator.in_h="
    return None


def _train_cfg(tmp_path, *overrides: str, hydra: bool = True):
    return compose_config("train", [*overrides, f"paths.output_dir={tmp_path}", "dataset.root=null"], hydra=hydra)


# Each experiment composes and validates with all 20 aggregators (~4 s): the two that also build the
# model run by default, the others in the slow suite (make test-slow, CI when it fits).
@pytest.mark.parametrize("experiment", [e if e in CHEAP else pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS])
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
        r"\(vprlab.models.aggregators.gem.GeM\) does not take \(it takes: eps, fc_dim, p, whitening\); drop them "
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


# ---------------------------------------------------------------------------------------------------------
# The recipe presets hold the values docs/recipes.md audits against the original training code
# (each value's file:line is in that page). Schedules: tests/engine/test_engine_optim.py derives the
# originals' lr at every step from their rules for exactly these scheduler settings.

_BOQ_COMMON = {
    "dataset.img_per_place": 4, "dataset.randaugment_ops": 3, "dataset.randaugment_magnitude": 15,
    "dataset.interpolation": "bicubic", "optimizer._target_": "torch.optim.AdamW", "optimizer.backbone_lr": None,
    "scheduler._target_": "vprlab.engine.optim.warmup_multistep", "scheduler.gamma": 0.1, "trainer.max_epochs": 40,
    "trainer.eval_every_n_epochs": 1, "trainer.eval_before_training": False, "trainer.monitor": "msls_val/R@1",
    "trainer.save_top_k": 3, "trainer.val_preprocessing": None, "backbone.num_trainable_blocks": 2,
}
RECIPES = {
    # BoQ paper / released models (ResNet50: train.yaml's values; DINOv2: OpenVPRLab config/boq_dinov2.yaml)
    "boq_resnet50": {**_BOQ_COMMON, "backbone.frozen_bn": "train", "backbone.train_image_size": [320, 320],
                     "backbone.eval_image_size": [384, 384], "dataset.places_per_batch": 160, "optimizer.lr": 2e-4,
                     "optimizer.weight_decay": 1e-3, "scheduler.warmup_epochs": 10, "scheduler.warmup_steps": None,
                     "scheduler.milestones": [10, 20, 30], "_dim": 16384},
    "boq_dinov2": {**_BOQ_COMMON, "backbone.train_image_size": [280, 280], "backbone.eval_image_size": [322, 322],
                   "dataset.places_per_batch": 160, "optimizer.lr": 2e-4, "optimizer.weight_decay": 1e-3,
                   "scheduler.warmup_steps": 3900, "scheduler.milestones": [10, 20, 30], "seed": 42, "_dim": 12288},
    # BoQ repository train.py
    "boq_resnet50_repo": {**_BOQ_COMMON, "backbone.frozen_bn": "train", "backbone.train_image_size": [320, 320],
                          "backbone.eval_image_size": [384, 384], "dataset.places_per_batch": 128, "optimizer.lr": 1e-4,
                          "optimizer.weight_decay": 1e-4, "scheduler.warmup_epochs": 10, "scheduler.warmup_steps": None,
                          "scheduler.milestones": [10, 20], "seed": 2024, "aggregator.proj_channels": 512,
                          "aggregator.row_dim": 16, "aggregator.num_queries": 64, "aggregator.num_layers": 2, "_dim": 8192},
    "boq_dinov2_repo": {**_BOQ_COMMON, "backbone.train_image_size": [224, 224], "backbone.eval_image_size": [322, 322],
                        "dataset.places_per_batch": 128, "optimizer.lr": 1e-4, "optimizer.weight_decay": 1e-4,
                        "scheduler.warmup_epochs": 10, "scheduler.warmup_steps": None, "scheduler.milestones": [10, 20],
                        "seed": 2024, "aggregator.proj_channels": 512, "aggregator.row_dim": 16, "_dim": 8192},
    # MixVPR main.py
    "mixvpr_resnet50_4096": {
        "backbone.num_trainable_blocks": 1, "backbone.frozen_bn": "train", "backbone.crop_last_block": True,
        "backbone.train_image_size": [320, 320], "backbone.eval_image_size": [320, 320], "dataset.places_per_batch": 120,
        "dataset.img_per_place": 4, "dataset.randaugment_ops": 3, "dataset.randaugment_magnitude": 9,
        "dataset.interpolation": "bilinear", "optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.05,
        "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-3, "scheduler._target_": "vprlab.engine.optim.warmup_multistep",
        "scheduler.warmup_steps": 650, "scheduler.milestones": [5, 10, 15, 25, 45], "scheduler.gamma": 0.3,
        "trainer.max_epochs": 80, "trainer.monitor": None, "trainer.save_top_k": 3, "seed": 190223,
        "trainer.val_preprocessing": {"size": [320, 320], "interpolation": "bilinear", "stage": "pil"}, "_dim": 4096,
    },
    # SALAD main.py
    "salad_dinov2": {
        "backbone.num_trainable_blocks": 4, "backbone.apply_final_norm": True, "backbone.return_cls_token": True,
        "backbone.train_image_size": [224, 224], "backbone.eval_image_size": [322, 322], "dataset.places_per_batch": 60,
        "dataset.img_per_place": 4, "dataset.randaugment_ops": 3, "dataset.randaugment_magnitude": 9,
        "dataset.interpolation": "bilinear", "optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 6e-5,
        "optimizer.weight_decay": 9.5e-9, "scheduler._target_": "vprlab.engine.optim.warmup_linear",
        "scheduler.warmup_epochs": 0, "scheduler.warmup_steps": None, "scheduler.start_factor": 1.0,
        "scheduler.end_factor": 0.2, "scheduler.decay_steps": 4000, "trainer.max_epochs": 4, "trainer.monitor": None,
        "trainer.save_top_k": 3, "trainer.val_preprocessing": {"size": [224, 224], "interpolation": "bilinear", "stage": "pil"},
        "_dim": 8448,
    },
}
# GSV-Cities main.py (convap / gem / cosplace; netvlad under the same recipe)
_GSV = {
    "backbone.frozen_bn": "train", "backbone.train_image_size": [320, 320], "backbone.eval_image_size": [320, 320],
    "dataset.places_per_batch": 100, "dataset.img_per_place": 4, "dataset.randaugment_ops": 3,
    "dataset.randaugment_magnitude": 9, "dataset.interpolation": "bilinear", "optimizer._target_": "torch.optim.AdamW",
    "optimizer.lr": 2e-4, "optimizer.weight_decay": 0.0, "scheduler._target_": "vprlab.engine.optim.warmup_multistep",
    "scheduler.warmup_steps": 600, "scheduler.milestones": [5, 10, 15, 25], "scheduler.gamma": 0.3,
    "trainer.max_epochs": 30, "trainer.save_top_k": 3, "seed": 1,
    "trainer.val_preprocessing": {"size": [320, 320], "interpolation": "bilinear", "stage": "pil"},
}
for _name in ("convap_resnet50", "gem_resnet50", "cosplace_resnet50"):
    RECIPES[_name] = {**_GSV, "backbone.crop_last_block": False, "backbone.num_trainable_blocks": 2}
RECIPES["netvlad_resnet50"] = {**_GSV, "backbone.crop_last_block": True, "backbone.num_trainable_blocks": 1}
BENCHMARKS = {"convap_resnet50": ["pitts30k_val"], "gem_resnet50": ["pitts30k_val"], "cosplace_resnet50": ["pitts30k_val"],
              "netvlad_resnet50": ["pitts30k_val"], "boq_resnet50": ["msls_val", "pitts30k_val"], "boq_dinov2": ["msls_val", "pitts30k_val"],
              "boq_resnet50_repo": ["msls_val", "pitts30k_val"], "boq_dinov2_repo": ["msls_val", "pitts30k_val"],
              "mixvpr_resnet50_4096": ["pitts30k_val"], "salad_dinov2": ["pitts30k_val"]}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_recipe_presets_hold_the_audited_values(experiment, tmp_path) -> None:
    cfg = _train_cfg(tmp_path, f"experiment={experiment}", hydra=False)
    got = {key: OmegaConf.select(cfg, key, default="<missing>") for key in RECIPES[experiment] if not key.startswith("_")}
    got = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in got.items()}
    assert got == {k: v for k, v in RECIPES[experiment].items() if not k.startswith("_")}
    assert list(cfg.benchmark) == BENCHMARKS[experiment]
    assert list(cfg.dataset.image_size) == list(cfg.backbone.train_image_size)
    validate_train_config(_train_cfg(tmp_path, f"experiment={experiment}"))


@pytest.mark.parametrize("experiment", ["boq_resnet50_repo", "boq_dinov2_repo"])
def test_boq_repository_presets_build_its_8192_d_model(experiment, tmp_path) -> None:
    cfg = _train_cfg(tmp_path, f"experiment={experiment}", "backbone.pretrained=false", hydra=False)
    model = build_model(cfg.backbone, cfg.aggregator)
    assert model.descriptor_dim == RECIPES[experiment]["_dim"] == 512 * 16
    trained = {n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    if experiment == "boq_resnet50_repo":  # unfreeze_n_blocks=2 of net = (conv1, bn1, relu, maxpool, layer1-3)
        assert trained == {"5", "6"}
        model.train()
        assert model.backbone.net[1].training  # frozen BatchNorm in train mode, as the BoQ code
    else:  # the last 2 of 12 blocks
        blocks = {n.split(".blocks.")[1].split(".")[0] for n, p in model.backbone.named_parameters() if p.requires_grad}
        assert blocks == {"10", "11"}


def test_default_resnet_keeps_frozen_batchnorm_in_eval_mode(tmp_path) -> None:
    cfg = _train_cfg(tmp_path, "backbone.pretrained=false", hydra=False)
    assert cfg.backbone.frozen_bn == "eval"
    backbone = build_model(cfg.backbone, cfg.aggregator).backbone.train()
    assert not backbone.net[1].training and backbone.net[5][0].bn1.training  # stem frozen, layer2 trained


def test_mixvpr_and_salad_resize_bilinear_as_their_code(tmp_path) -> None:
    """MixVPR / SALAD GSVCitiesDataloader: T.Resize(image_size, BILINEAR) on the PIL image (PIL's filtered
    bilinear), then ToTensor and ImageNet normalisation; validation the same at 320 / 224."""
    import numpy as np
    from PIL import Image

    from vprlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform
    from vprlab.evaluation.settings import validation_preprocessing
    from vprlab.models.backbones.resnet import ResNetBackbone

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]

    def original(size):  # independent: PIL resize, /255, normalise
        h, w = size
        return (np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64).transpose(2, 0, 1) / 255 - mean) / std

    cfg = _train_cfg(tmp_path, "experiment=mixvpr_resnet50_4096", hydra=False)
    ours = train_transform([30, 40], randaugment_ops=0, interpolation=cfg.dataset.interpolation)(image)
    # The train transform resizes uint8 tensors (torchvision's antialiased bilinear, as the BoQ recipe's
    # pipeline): within one grey level of PIL's filter, never more (docs/recipes.md says so).
    one_grey_level = 1 / 255 / min(IMAGENET_STD) + 1e-6
    np.testing.assert_allclose(ours.numpy(), original((30, 40)), rtol=0, atol=one_grey_level)
    bicubic = train_transform([30, 40], randaugment_ops=0, interpolation="bicubic")(image)
    assert np.abs(bicubic.numpy() - original((30, 40))).max() > one_grey_level  # the key changes the filter
    backbone = ResNetBackbone("resnet18", pretrained=False)
    for experiment, size in (("mixvpr_resnet50_4096", (320, 320)), ("salad_dinov2", (224, 224))):
        cfg = _train_cfg(tmp_path, f"experiment={experiment}", hydra=False)
        prep = validation_preprocessing(cfg.trainer.val_preprocessing, backbone)
        assert prep.describe() == f"{size[0]}x{size[1]} PIL bilinear"
        np.testing.assert_allclose(prep.resized((30, 40)).transform()(image).numpy(), original((30, 40)), atol=1e-5)
    with pytest.raises(ValueError, match=r"dataset.interpolation='nearest'"):
        train_transform([30, 40], interpolation="nearest")
    with pytest.raises(ValueError, match=r"trainer.val_preprocessing=.*interpolation \(bilinear \| bicubic\)"):
        validation_preprocessing({"size": [30, 40], "interpolation": "area"}, backbone)
