"""What every registered aggregator declares on its class (``spec``, ``output_dim``) holds: it has its
config, its formula gives the size of the module built from that config, the config checks refuse
exactly the pairings its declared needs rule out, and docs/models.md shows the table rendered from it.
Nothing here names an aggregator: a new one is covered by being registered."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from conftest import CONF, REPO, compose_config
from omegaconf import OmegaConf

from vprlab.config.checks import validate_aggregator_needs
from vprlab.models.aggregators import registry
from vprlab.models.spec import Aggregator, component_class

ZOO_TABLE = REPO / "experiments" / "zoo_table.py"


def load_zoo_table():
    spec = importlib.util.spec_from_file_location("zoo_table", ZOO_TABLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _map_for(cls: type[Aggregator], args: dict) -> tuple[int, int]:
    """A feature map size the aggregator accepts with these init arguments."""
    spec = cls.spec
    if spec.fixed_map_size:
        return int(args[spec.fixed_map_size[0]]), int(args[spec.fixed_map_size[1]])
    side = 3
    if spec.min_map_size:
        side = max(side, *(int(args[a]) for a in spec.min_map_size))
    if spec.more_positions_than:
        side = max(side, math.isqrt(int(args[spec.more_positions_than])) + 1)
    return side, side


def _input(cls: type[Aggregator], channels: int, size: tuple[int, int]):
    fmap = torch.randn(2, channels, *size)
    return (fmap, torch.randn(2, channels)) if cls.spec.needs_cls_token else fmap


def test_registry_and_configs_match() -> None:
    """Every registered aggregator has conf/aggregator/<spec.name>.yaml naming its class, and every
    aggregator config (presets such as boq_small included) names a registered class."""
    def load(name: str):
        """The file, with the group files its defaults list names merged under it (presets)."""
        cfg = OmegaConf.load(CONF / "aggregator" / f"{name}.yaml")
        bases = [d for d in cfg.pop("defaults", []) if d != "_self_"]
        return OmegaConf.merge(*(load(b) for b in bases), cfg)

    yamls = {p.stem: load(p.stem) for p in (CONF / "aggregator").glob("*.yaml")}
    assert set(registry()) <= set(yamls)
    for name, cls in registry().items():
        assert component_class(yamls[name]) is cls, f"conf/aggregator/{name}.yaml does not name {cls}"
    registered = set(registry().values())
    for name, cfg in yamls.items():
        assert component_class(cfg) in registered, f"conf/aggregator/{name}.yaml names an unregistered class"


def check_formula(name: str, config: dict, channels: int = 32) -> None:
    """``descriptor_dim_for`` (config only) = the built module's ``descriptor_dim`` = its output width."""
    cls = registry()[name]
    args = cls.config_args(config)
    if cls.spec.fixed_map_size:
        args.update(zip(cls.spec.fixed_map_size, (4, 3)))  # keep the mixers small
    torch.manual_seed(0)
    module = cls(channels, **args).eval()
    assert cls.descriptor_dim_for(channels, **args) == module.descriptor_dim
    with torch.no_grad():
        out = module(_input(cls, channels, _map_for(cls, args)))
    out = out if isinstance(out, torch.Tensor) else out[0]
    assert out.shape == (2, module.descriptor_dim)


@pytest.mark.parametrize("name", sorted(registry()))
@pytest.mark.parametrize("which", ["config", "small"])
def test_formula_matches_the_built_module(name: str, which: str) -> None:
    """For the config defaults and for the small instance the tests use."""
    if which == "small":
        config = dict(registry()[name].spec.small)
    else:
        config = dict(OmegaConf.to_container(OmegaConf.load(CONF / "aggregator" / f"{name}.yaml")))
    check_formula(name, config)


def _valid_config(name: str, tmp_path, backbone: str | None = None, extra: tuple[str, ...] = ()):
    """A train config that pairs the aggregator with a backbone it accepts (or ``backbone``), at one image size."""
    cls = registry()[name]
    if backbone is None:
        backbone = "dinov2_vits14" if cls.spec.needs_cls_token else "resnet18"
    overrides = [f"backbone={backbone}", f"aggregator={name}", f"paths.output_dir={tmp_path}", "dataset.root=null", *extra]
    if cls.spec.needs_cls_token and backbone.startswith("dinov2"):
        overrides.append("backbone.return_cls_token=true")
    cfg = compose_config("train", overrides)
    stride = component_class(cfg.backbone).config_stride(cfg.backbone)
    args = cls.config_args(cfg.aggregator)
    height, width = _map_for(cls, args) if cls.spec.fixed_map_size else (20, 20)
    size = [height * stride, width * stride]
    cfg.backbone.train_image_size = cfg.backbone.eval_image_size = size
    cfg.benchmark = {}
    return cfg, stride


def check_declared_needs(name: str, tmp_path, extra: tuple[str, ...] = ()) -> None:
    """validate_aggregator_needs passes a pairing that meets the declared needs and refuses, with the
    config keys to change, each one that breaks one of them (``extra``: more overrides, e.g. a searchpath)."""
    cls = registry()[name]
    spec, owner = cls.spec, cls.__name__
    cfg, stride = _valid_config(name, tmp_path, extra=extra)
    validate_aggregator_needs(cfg)
    args = cls.config_args(cfg.aggregator)

    if spec.needs_cls_token:
        broken = cfg.copy()
        broken.backbone.return_cls_token = False
        with pytest.raises(ValueError, match=rf"aggregator={name} needs the backbone's class token.*return_cls_token=true"):
            validate_aggregator_needs(broken)
        # a backbone that cannot return it at all (ResNet) is refused the same way
        resnet, _ = _valid_config(name, tmp_path, backbone="resnet18", extra=extra)
        with pytest.raises(ValueError, match=rf"aggregator={name} needs the backbone's class token"):
            validate_aggregator_needs(resnet)
    if spec.fixed_map_size:
        h_arg, w_arg = spec.fixed_map_size
        broken = cfg.copy()
        broken.backbone.eval_image_size = [s + 2 * stride for s in cfg.backbone.eval_image_size]
        with pytest.raises(ValueError, match=rf"backbone.eval_image_size=.*but {owner} is built for .*aggregator.{h_arg}=.*aggregator.{w_arg}="):
            validate_aggregator_needs(broken)
    if spec.min_map_size and max(int(args[a]) for a in spec.min_map_size) > 1:
        broken = cfg.copy()
        broken.backbone.train_image_size = [stride, stride]  # a 1x1 map
        with pytest.raises(ValueError, match=rf"train_image_size=.* gives 1x1 feature maps.*{owner} needs at least .*aggregator.{spec.min_map_size[0]}"):
            validate_aggregator_needs(broken)
    if spec.more_positions_than and int(args[spec.more_positions_than]) >= 4:
        broken = cfg.copy()
        broken.backbone.train_image_size = [2 * stride, 2 * stride]  # 4 positions
        with pytest.raises(ValueError, match=rf"4 positions, but {owner} needs more than aggregator.{spec.more_positions_than}"):
            validate_aggregator_needs(broken)


@pytest.mark.parametrize("name", sorted(registry()))
def test_declared_needs_are_checked_before_building(name: str, tmp_path) -> None:
    check_declared_needs(name, tmp_path)


def test_docs_table_is_the_rendered_one() -> None:
    """docs/models.md shows the aggregator table rendered from the declarations; after adding or
    changing an aggregator: python experiments/zoo_table.py --write-docs"""
    zoo_table = load_zoo_table()
    torch.set_num_threads(1)
    rendered = zoo_table.aggregator_markdown(zoo_table.aggregator_rows())
    documented = zoo_table.docs_table((REPO / "docs" / "models.md").read_text())
    assert documented == rendered, "docs/models.md is out of date: run python experiments/zoo_table.py --write-docs"
