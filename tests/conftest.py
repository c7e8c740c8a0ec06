"""Shared fixtures: Hydra composition without a Hydra run, and a tiny synthetic dataset."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED = REPO.parent / "shared"

# Tests never reach the network and never need a TTY.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("VPRLAB_PROGRESS", "0")
# evaluate.py's descriptor cache defaults to outputs/descriptor_cache in the repo; tests that do not
# pass cache_dir= write to a throwaway folder instead.
if "VPRLAB_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="vprlab-test-cache-")
    os.environ["VPRLAB_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
# At most 2 threads, fewer when OMP_NUM_THREADS asks (on a shared, busy CPU one thread per process is
# many times faster than two that wait for each other).
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS") or 2))))

# Tests of the CUDA paths: deselected by default (`pytest -m gpu`, `make gpu-check`), skipped without CUDA.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_SYNTHETIC = dict(
    num_train_places=24, images_per_place=4, num_cities=2, num_bench_places=12,
    bench_db_per_place=1, bench_queries_per_place=1, image_size=(48, 64), seed=3,
)


def compose_config(config_name: str = "train", overrides: list[str] | None = None, hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=hydra)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    from vprlab.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("data") / "synthetic"
    return generate_synthetic(root, **TINY_SYNTHETIC)


def tiny_train_overrides(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """A BoQ small enough to train for a few steps in seconds on a CPU."""
    return [
        "experiment=quickstart",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={output_dir}",
        "backbone.train_image_size=[48,64]",
        "backbone.eval_image_size=[48,64]",
        "aggregator.proj_channels=32",
        "aggregator.num_queries=8",
        "aggregator.num_layers=1",
        "aggregator.row_dim=4",
        "dataset.places_per_batch=8",
        "trainer.max_epochs=2",
        "trainer.eval_batch_size=16",
        "trainer.log_every_n_steps=1",
        *extra,
    ]


# A schedule that does not depend on max_epochs, so a 1-epoch run continued to 3 epochs
# must retrace the 3-epoch run exactly.
RESUMABLE_SCHEDULE = ["scheduler=warmup_multistep", "scheduler.warmup_epochs=0.5", "scheduler.milestones=[2]", "scheduler.gamma=0.5"]


@pytest.fixture(scope="session")
def trained_run(tiny_synthetic, tmp_path_factory):
    """(result of train(), run folder) of a 3-epoch tiny BoQ run, shared by engine and evaluation tests."""
    from vprlab.engine.trainer import train

    out = tmp_path_factory.mktemp("trained_run")
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, out, "trainer.max_epochs=3", *RESUMABLE_SCHEDULE))
    return train(cfg), out
