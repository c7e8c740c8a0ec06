"""Every config composes; every backbone x aggregator builds from its configs and trains one step on a
tiny input (invalid pairs fail clearly)."""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import timm
import torch
from conftest import CONF, compose_config
from omegaconf import DictConfig, OmegaConf

from vprlab.losses import build_loss
from vprlab.models.aggregators import registry
from vprlab.models.spec import component_class
from vprlab.models.vpr_model import VPRModel
from vprlab.utils.instantiate import build


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["backbone", "aggregator", "dataset", "loss", "miner", "optimizer", "scheduler", "trainer", "logger", "experiment"])
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
    assert cfg.loss.alpha == 1 and cfg.loss.beta == 50 and cfg.loss.base == 0 and cfg.miner.epsilon == 0.1
    assert cfg.dataset.img_per_place == 4
    assert cfg.hydra.job.chdir is False


# What each backbone config documents: output channels, and a CPU-sized input every aggregator accepts.
BACKBONE_CHANNELS = {
    "resnet18": 256, "resnet18_small": 256, "resnet34": 256, "resnet50": 1024, "resnet101": 1024, "resnet152": 1024, "resnext50": 1024,
    "dinov2": 768, "dinov2_vits14": 384, "dinov2_vitb14": 768, "dinov2_vitl14": 1024, "dinov2_vitg14": 1536,
    "dinov2_vitb14_reg4": 768, "timm": 768, "vgg16": 512,
}
SMALL_INPUT = {"resnet": (32, 32), "resnext": (32, 32), "dinov2": (28, 28), "timm": (64, 64), "vgg": (32, 32)}  # 2x2 maps
SALAD_INPUT = (126, 126)  # 9x9 = 81 DINOv2 patches: more than SALAD's 64 clusters (spec.more_positions_than)
# Keeps the matrix light; the paper sizes are checked in tests/models. Optional: a new aggregator needs no entry.
LIGHTER = {"boq": {"num_queries": 8}}
# DINOv2 wider than ViT-S is built with 2 blocks (its real width, so the dimensions are those of the config).
SHALLOW_DINOV2_DEPTH = 2


def _small_input(backbone: str) -> tuple[int, int]:
    return next(size for prefix, size in SMALL_INPUT.items() if backbone.startswith(prefix))


def expected_descriptor_dim(aggregator: DictConfig, channels: int) -> int:
    """The descriptor size the aggregator class declares (its ``output_dim`` formula), from the config alone."""
    cls = component_class(aggregator)
    assert cls is not None and hasattr(cls, "spec"), f"{aggregator._target_} declares no spec (vprlab.models.spec)"
    return cls.descriptor_dim_for(channels, **OmegaConf.to_container(aggregator))


@contextlib.contextmanager
def shallow_dinov2(model_name: str):
    """Build DINOv2-B/L/G with SHALLOW_DINOV2_DEPTH blocks: a ViT-G is 1.1B parameters."""
    if "dinov2" not in model_name or "small" in model_name:
        yield
        return
    create = timm.create_model

    def shallow(name, *args, **kwargs):
        return create(name, *args, depth=SHALLOW_DINOV2_DEPTH, **kwargs)

    with mock.patch.object(timm, "create_model", shallow):
        yield


_LAST_BACKBONE: dict[tuple[str, bool], torch.nn.Module] = {}


def cached_backbone(name: str, cfg: DictConfig) -> torch.nn.Module:
    """The backbone is built once for all the aggregators that follow it (the matrix runs backbone
    by backbone; ResNet152 and ViT-G take a while to build), and only the last one is kept."""
    key = (name, bool(cfg.get("return_cls_token", False)))
    if key not in _LAST_BACKBONE:
        _LAST_BACKBONE.clear()
        torch.manual_seed(0)
        with shallow_dinov2(str(cfg.get("model_name", ""))):
            _LAST_BACKBONE[key] = build(cfg)
    return _LAST_BACKBONE[key]


@pytest.fixture(scope="module", autouse=True)
def _free_backbones():
    yield
    _LAST_BACKBONE.clear()


@pytest.mark.parametrize("aggregator", sorted(registry()))
@pytest.mark.parametrize("backbone", _options("backbone"))
def test_every_backbone_and_aggregator_trains_a_step(backbone, aggregator, tmp_path):
    """Every valid pair builds from its configs, gives its documented descriptor size, L2-normalised,
    and back-propagates; an invalid pair (SALAD without a class token) fails with a clear error."""
    overrides = [f"backbone={backbone}", f"aggregator={aggregator}", "backbone.pretrained=false", f"paths.output_dir={tmp_path}"]
    is_dinov2 = backbone.startswith("dinov2")
    spec = registry()[aggregator].spec  # what the aggregator declares it needs
    if spec.needs_cls_token and is_dinov2:
        overrides.append("backbone.return_cls_token=true")
    cfg = compose_config("train", overrides)
    size = SALAD_INPUT if spec.more_positions_than and is_dinov2 else _small_input(backbone)
    net = cached_backbone(backbone, cfg.backbone)
    assert net.out_channels == BACKBONE_CHANNELS[backbone], "backbone config no longer gives its documented width"
    for key, value in LIGHTER.get(aggregator, {}).items():
        cfg.aggregator[key] = value
    if spec.fixed_map_size:  # sized for the map this input gives
        for arg, side in zip(spec.fixed_map_size, size):
            cfg.aggregator[arg] = side // net.stride
    model = VPRModel(net, build(cfg.aggregator, in_channels=net.out_channels)).train()
    model.zero_grad(set_to_none=True)
    assert model.descriptor_dim == expected_descriptor_dim(cfg.aggregator, net.out_channels)
    x = torch.randn(2, 3, *size)
    if spec.needs_cls_token and not is_dinov2:
        with pytest.raises(ValueError, match="needs the backbone's class token.*return_cls_token=true"):
            model(x)
        return
    descriptors = model(x)
    assert descriptors.shape == (2, model.descriptor_dim) and descriptors.dtype == torch.float32
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2), atol=1e-5)
    loss_fn = build_loss(cfg.loss, cfg.miner)
    loss, _ = loss_fn(torch.cat([descriptors, descriptors.flip(0)]), torch.tensor([0, 0, 1, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])
