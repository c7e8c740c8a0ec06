import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_tensor

from vprlab.evaluation.protocol import evaluate
from vprlab.evaluation.settings import EvalSettings


@dataclass
class FakeBenchmark:
    """Same fields as vprlab.data.benchmarks.Benchmark (duck typing keeps this test independent of it)."""

    name: str
    db_paths: list
    query_paths: list
    positives: list
    image_size: tuple | None = None
    queries_without_positive: str = "miss"


class MeanColour(nn.Module):
    """Descriptor = L2-normalised mean RGB: solid-colour images retrieve by hue, predictably."""

    def forward(self, x):
        return nn.functional.normalize(x.mean(dim=(2, 3)), dim=1)


DB_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
QUERY_COLOURS = [
    (200, 10, 10),  # nearest red (0), positive 0 -> hit at 1
    (10, 200, 10),  # nearest green (1), positive 1 -> hit at 1
    (10, 10, 200),  # blue (2) then white (3); positive 3 -> hit at 2
    (200, 200, 200),  # no positive
]
POSITIVES = [np.array([0]), np.array([1]), np.array([3]), np.array([], dtype=np.int64)]


def _write(folder, colours):
    folder.mkdir()
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i}.png"
        Image.new("RGB", (6, 6), colour).save(path)
        paths.append(str(path))
    return paths


def _benchmarks(tmp_path):
    db, queries = _write(tmp_path / "db", DB_COLOURS), _write(tmp_path / "q", QUERY_COLOURS)
    return [
        FakeBenchmark("colours", db, queries, POSITIVES, image_size=(4, 4)),
        FakeBenchmark("colours_excl", db, queries, POSITIVES, queries_without_positive="exclude"),
    ]


def test_evaluate_end_to_end_known_recalls(tmp_path):
    sizes_asked = []

    def transform_for(image_size):
        sizes_asked.append(image_size)
        if image_size is None:
            return to_tensor
        return lambda image: to_tensor(image.resize(image_size[::-1], Image.BICUBIC))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k=5 > 4 db images must clamp silently
        results = evaluate(
            MeanColour(), _benchmarks(tmp_path), EvalSettings(batch_size=3, ks=(1, 2, 5), progress=False), transform_for
        )

    assert sizes_asked == [(4, 4), None]
    assert list(results) == ["colours", "colours_excl"]
    miss, excl = results["colours"], results["colours_excl"]
    assert miss["R@1"] == pytest.approx(50.0)
    assert miss["R@2"] == pytest.approx(75.0)
    assert miss["R@5"] == pytest.approx(75.0)
    assert excl["R@1"] == pytest.approx(200 / 3)
    assert excl["R@2"] == pytest.approx(100.0)
    for metrics in (miss, excl):
        assert metrics["num_queries"] == 4
        assert metrics["num_db"] == 4
        assert metrics["num_without_positive"] == 1
        assert metrics["descriptor_dim"] == 3
        assert metrics["extract_img_per_s"] > 0


def test_duplicate_benchmark_names_are_rejected(tmp_path):
    bench = _benchmarks(tmp_path)[0]
    with pytest.raises(ValueError, match="colours"):
        evaluate(MeanColour(), [bench, bench], EvalSettings(progress=False), lambda size: to_tensor)
