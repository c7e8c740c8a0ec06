"""${vprlab.cpus:N}: loader worker defaults follow the CPUs the process may use."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from vprlab.utils import resolvers


def _available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def test_cpus_is_the_affinity_capped(monkeypatch):
    assert resolvers.available_cpus() == _available()
    monkeypatch.setattr(resolvers, "available_cpus", lambda: 2)
    cfg = OmegaConf.create({"a": "${vprlab.cpus:8}", "b": "${vprlab.cpus:}", "c": "${vprlab.cpus:1}"})
    assert (cfg.a, cfg.b, cfg.c) == (2, 2, 1)
    monkeypatch.setattr(resolvers, "available_cpus", lambda: 64)
    cfg = OmegaConf.create({"a": "${vprlab.cpus:8}", "b": "${vprlab.cpus:}"})
    assert (cfg.a, cfg.b) == (8, 64)


@pytest.mark.parametrize(("config", "overrides", "key"), [
    ("train", ["dataset=gsv_cities"], "dataset.num_workers"),
    ("evaluate", [], "num_workers"),
])
def test_worker_defaults_follow_the_machine_and_the_dataloader_does_not_warn(config, overrides, key):
    cfg = compose_config(config, overrides)
    workers = OmegaConf.select(cfg, key)
    assert workers == min(8, _available())
    loader = torch.utils.data.DataLoader(range(4), num_workers=workers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "This DataLoader will create N worker processes ..." would raise
        loader.check_worker_number_rationality()
