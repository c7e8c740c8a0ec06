"""Every config composes; every backbone x aggregator builds and trains one step on a tiny input."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, compose_config
from vprlab.models.vpr_model import build_model
from vprlab.utils.instantiate import build


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["backbone", "aggregator", "dataset", "loss", "optimizer", "scheduler", "trainer", "logger", "experiment"])
def test_every_option_composes(group, tmp_path):
    for option in _options(group):
        cfg = compose_config("train", [f"{group}={option}", f"paths.output_dir={tmp_path}"])
        OmegaConf.resolve(cfg)  # every interpolation resolves
        assert cfg.task_name == "train"


@pytest.mark.parametrize("option", _options("benchmark"))
def test_every_benchmark_composes(option, tmp_path):
    cfg = compose_config("evaluate", [f"benchmark=[{option}]", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert list(cfg.benchmark) == [option] and cfg.benchmark[option]._target_


def test_multiple_benchmarks_are_selected_together(tmp_path):
    cfg = compose_config("evaluate", ["benchmark=[pitts30k_val,pitts30k_test]", f"paths.output_dir={tmp_path}"])
    assert set(cfg.benchmark) == {"pitts30k_val", "pitts30k_test"}


def test_training_defaults_are_the_boq_recipe(tmp_path):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}"], hydra=True)
    assert cfg.backbone.model_name == "resnet50" and cfg.aggregator._target_.endswith("BoQ")
    assert cfg.loss.alpha == 1 and cfg.loss.beta == 50 and cfg.loss.base == 0 and cfg.loss.miner_epsilon == 0.1
    assert cfg.dataset.img_per_place == 4
    assert cfg.hydra.job.chdir is False


SMALL_INPUT = {"resnet50": (64, 64), "resnet18": (64, 64), "dinov2": (28, 28)}


@pytest.mark.parametrize("backbone", _options("backbone"))
@pytest.mark.parametrize("aggregator", _options("aggregator"))
def test_every_backbone_and_aggregator_trains_a_step(backbone, aggregator, tmp_path):
    cfg = compose_config("train", [f"backbone={backbone}", f"aggregator={aggregator}", "backbone.pretrained=false", f"paths.output_dir={tmp_path}"])
    if aggregator == "boq":  # keep the test light: the paper sizes are checked in tests/models
        cfg.aggregator.num_queries = 8
    model = build_model(cfg.backbone, cfg.aggregator)
    x = torch.randn(2, 3, *SMALL_INPUT[backbone])
    descriptors = model(x)
    assert descriptors.shape == (2, model.descriptor_dim)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2), atol=1e-5)
    loss_fn = build(cfg.loss)
    loss, _ = loss_fn(torch.cat([descriptors, descriptors.flip(0)]), torch.tensor([0, 0, 1, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])
