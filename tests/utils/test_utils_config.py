"""utils.config: the one config flattener and the one reader of the command line's Hydra overrides."""

from __future__ import annotations

import pytest
from conftest import compose_config
from hydra.core.hydra_config import HydraConfig

from vprlab.reports.collect import flatten_config
from vprlab.utils.config import command_line_overrides, flatten_keys


def test_flatten_keys_gives_dotted_leaves_and_keeps_empty_dicts_and_lists():
    nested = {"optimizer": {"lr": 1e-3, "betas": [0.9, 0.99]}, "extra": {}, "seed": 1, "a": {"b": {"c": None}}}
    assert flatten_keys(nested) == {"optimizer.lr": 1e-3, "optimizer.betas": [0.9, 0.99], "extra": {}, "seed": 1, "a.b.c": None}
    assert flatten_keys(3, "x.") == {"x": 3}
    # The report table's columns are the same keys, lists and empty dicts as JSON text; no config, no columns.
    assert flatten_config(nested) == {"optimizer.lr": 1e-3, "optimizer.betas": "[0.9, 0.99]", "extra": "{}", "seed": 1, "a.b.c": None}
    assert flatten_config({}) == {}


def test_command_line_overrides_are_none_outside_hydra_and_the_jobs_inside(tmp_path):
    assert not HydraConfig.initialized()
    assert command_line_overrides() is None  # no command line: callers compare key by key instead
    cfg = compose_config("evaluate", [f"paths.output_dir={tmp_path}", "batch_size=3"], hydra=True)
    HydraConfig.instance().set_config(cfg)
    try:
        assert command_line_overrides() == [f"paths.output_dir={tmp_path}", "batch_size=3"]
    finally:
        HydraConfig.instance().cfg = None
    assert command_line_overrides() is None


@pytest.mark.parametrize("module", ["vprlab.engine.resume", "vprlab.pretrained.finetune", "vprlab.commands.evaluate"])
def test_every_caller_reads_the_one_copy(module):
    import importlib

    assert importlib.import_module(module).command_line_overrides is command_line_overrides
