"""Evaluation of a model whose descriptors depend on the other images of their batch (a cross-image
encoder: CricaVPR, SuperVLAD-CrossImage): database and queries in consecutive batches of
``batch_size`` in benchmark order, the batch size recorded with the results and in the descriptor
cache key, and a batch of several image sizes refused instead of split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_protocol import FakeBenchmark
from torch import nn
from torchvision.transforms.functional import to_tensor

from vprlab.data.transforms import EvalPreprocessing
from vprlab.evaluation.cache import CacheKey
from vprlab.evaluation.protocol import run_benchmark
from vprlab.evaluation.settings import EvalSettings
from vprlab.models.aggregators import CricaVPR, GeM
from vprlab.models.vpr_model import VPRModel


class Patches(nn.Module):
    """Images [B, 3, H, W] -> (4x4-patch feature map [B, 8, H/4, W/4], mean feature as class token)."""

    def __init__(self, with_token: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.with_token = with_token

    def forward(self, x):
        fmap = self.proj(x)
        return (fmap, fmap.mean(dim=(2, 3))) if self.with_token else fmap


def cross_image_model() -> VPRModel:
    torch.manual_seed(0)
    model = VPRModel(Patches(), CricaVPR(8, cross_image_heads=2, cross_image_ff_dim=16)).eval()
    model.eval_preprocessing = EvalPreprocessing(size=None)  # native size (the cache reads the size from it)
    return model


@pytest.fixture()
def benchmark(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for split, count in (("db", 5), ("q", 3)):
        (tmp_path / split).mkdir()
        paths[split] = []
        for i in range(count):
            path = tmp_path / split / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
            paths[split].append(str(path))
    return FakeBenchmark("random", paths["db"], paths["q"], [np.array([i]) for i in range(3)])


def _run(model, benchmark, batch_size, cache_dir=None):
    settings = EvalSettings(batch_size=batch_size, ks=(1,), progress=False, cache_dir=cache_dir)
    return run_benchmark(model, benchmark, settings, lambda size: to_tensor, weights_hash="w" if cache_dir else None)


def _by_hand(model, paths, batch_size) -> np.ndarray:
    images = torch.stack([to_tensor(Image.open(p)) for p in paths])
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(paths), batch_size)]).numpy()


def test_descriptors_come_from_consecutive_batches_and_the_batch_size_is_recorded(benchmark) -> None:
    model = cross_image_model()
    runs = {size: _run(model, benchmark, size) for size in (2, 3)}
    for size, run in runs.items():
        assert run.metrics["eval_batch_size"] == size
        np.testing.assert_allclose(run.descriptors.database, _by_hand(model, benchmark.db_paths, size), atol=1e-6)
        np.testing.assert_allclose(run.descriptors.queries, _by_hand(model, benchmark.query_paths, size), atol=1e-6)
    assert np.abs(runs[2].descriptors.database - runs[3].descriptors.database).max() > 1e-4
    # a model whose images stand alone records nothing: its descriptors do not depend on the batch
    plain = VPRModel(Patches(with_token=False), GeM(8)).eval()
    assert "eval_batch_size" not in _run(plain, benchmark, 2).metrics


def test_the_cache_keys_on_the_batch_size_of_such_a_model_only(benchmark, tmp_path) -> None:
    model = cross_image_model()
    cache = tmp_path / "cache"
    first = _run(model, benchmark, 2, cache)
    again, other = _run(model, benchmark, 2, cache), _run(model, benchmark, 3, cache)
    assert again.descriptors.from_cache and not other.descriptors.from_cache
    assert again.metrics["eval_batch_size"] == 2 and other.metrics["eval_batch_size"] == 3
    np.testing.assert_array_equal(again.descriptors.database, first.descriptors.database)
    assert len(list(cache.glob("w/random/*"))) == 2
    # Every other model keeps the digest it had before the field existed (its cache stays valid).
    key = CacheKey("w", "random", (4, 4), "t", "float32", "a", "b")
    fields = {k: v for k, v in asdict(key).items() if k != "batch_size"}
    assert key.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert CacheKey("w", "random", (4, 4), "t", "float32", "a", "b", batch_size=2).digest() != key.digest()


def test_a_batch_of_several_sizes_is_refused_not_split(benchmark) -> None:
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(benchmark.db_paths[1])
    with pytest.raises(ValueError, match=r"images of 2 sizes .*depend on the other images of their batch.*batch_size=1"):
        _run(cross_image_model(), benchmark, 2)
    assert _run(cross_image_model(), benchmark, 1).metrics["eval_batch_size"] == 1
