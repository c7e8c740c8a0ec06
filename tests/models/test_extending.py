"""The 'add an aggregator' example of docs/extending.md, run as written: its module goes into (a
temporary extension of) the aggregators package and its yaml into a temporary config folder, and
without touching any other file it is registered, validated, built, tested and tabulated."""

from __future__ import annotations

import re
import sys

import pytest
import test_zoo_aggregators as zoo_tests
import torch
from conftest import CONF, REPO, compose_config
from test_aggregator_specs import check_declared_needs, check_formula, load_zoo_table

import vprlab.models.spec as spec_module
from vprlab.config.checks import validate_train_config
from vprlab.models import aggregators
from vprlab.models.aggregators import registry
from vprlab.models.vpr_model import build_model

DOC = REPO / "docs" / "extending.md"
MODULE = "vprlab.models.aggregators.gridmac"


def example_block(name: str) -> str:
    """The code block that follows ``<!-- example: name -->`` in docs/extending.md."""
    match = re.search(rf"<!-- example: {re.escape(name)} -->\s*```\w*\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"docs/extending.md has no example block {name}"
    return match.group(1)


@pytest.fixture
def gridmac(tmp_path, monkeypatch):
    """The example's two files, as an author adds them: gridmac.py in the aggregators package (here a
    second folder of it) and aggregator/gridmac.yaml in a config folder Hydra searches. Returns the
    overrides that make Hydra see that folder; the registry is restored afterwards."""
    package, conf = tmp_path / "package", tmp_path / "conf"
    package.mkdir()
    (conf / "aggregator").mkdir(parents=True)
    (package / "gridmac.py").write_text(example_block("gridmac.py"))
    (conf / "aggregator" / "gridmac.yaml").write_text(example_block("gridmac.yaml"))
    monkeypatch.setattr(aggregators, "__path__", [*aggregators.__path__, str(package)])
    monkeypatch.setattr(spec_module, "_AGGREGATORS", dict(spec_module._AGGREGATORS))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield {"conf": conf, "overrides": (f"hydra.searchpath=[file://{conf}]",)}
    sys.modules.pop(MODULE, None)


def test_a_new_aggregator_is_one_module_and_one_yaml(gridmac, tmp_path) -> None:
    assert "gridmac" not in spec_module.registered_aggregators()
    # registered: the registry finds the new module of the package by itself
    cls = registry()["gridmac"]
    assert cls.__name__ == "GridMAC" and cls.__module__ == MODULE
    assert cls.descriptor_dim_for(256, grid=3) == 256 * 9

    # validated from the configs, before anything is built: a declared need broken gives the generic error
    overrides = [*gridmac["overrides"], "aggregator=gridmac", "backbone=resnet18", "backbone.pretrained=false",
                 f"paths.output_dir={tmp_path}", "dataset.root=null"]
    cfg = compose_config("train", [*overrides, "backbone.train_image_size=[32,32]"])
    with pytest.raises(ValueError, match=r"backbone.train_image_size=\[32, 32\] gives 2x2 feature maps \(stride 16\) "
                                         r"but GridMAC needs at least 3x3 \(aggregator.grid\); use images of at least \[48, 48\]"):
        validate_train_config(cfg)
    cfg = compose_config("train", [*overrides, "backbone.train_image_size=[64,64]", "backbone.eval_image_size=[64,64]"])
    validate_train_config(cfg)

    # built through build_model from its yaml
    torch.manual_seed(0)
    model = build_model(cfg.backbone, cfg.aggregator).eval()
    assert type(model.aggregator) is cls and model.descriptor_dim == 256 * 9
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 256 * 9)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))

    # the registry-wide tests run on it as on the others
    check_formula("gridmac", {"grid": 3})
    check_declared_needs("gridmac", tmp_path, extra=gridmac["overrides"])
    zoo_tests.test_any_batch_and_map_size("gridmac")
    zoo_tests.test_autocast("gridmac", torch.bfloat16)
    zoo_tests.test_clear_errors_for_wrong_inputs("gridmac")

    # listed in the zoo table, with what it declares
    zoo_table = load_zoo_table()
    rows = {row["aggregator"]: row for row in zoo_table.aggregator_rows(conf_dirs=[CONF, gridmac["conf"]])}
    assert rows["gridmac"]["ResNet50"] == {"dim": 1024 * 9, "params": 0}
    assert rows["gridmac"]["DINOv2-B"] == {"dim": 768 * 9, "params": 0}
    assert "| `gridmac` | regional MAC on a grid (docs/extending.md) | channels x `grid`² | map of at least `grid` x `grid` | 9,216 | 0 |" \
        in zoo_table.aggregator_markdown(list(rows.values()))


def test_the_example_leaves_the_registry_as_it_was() -> None:
    assert "gridmac" not in registry()
