"""The small real datasets of shared/data/real, end to end through evaluate.py's run_evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import SHARED, compose_config

from vprlab.commands.evaluate import run_evaluation
from vprlab.evaluation.results import read_results

REAL = Path(os.environ.get("VPRLAB_SHARED_DIR", SHARED)) / "data" / "real"
EXPECTED = {  # config -> (database images, queries)
    "real_nordland64": (3576, 3576),
    "real_corridor": (111, 111),
    "real_gardenspoint": (10, 10),
}
TINY_BOQ = [
    "backbone=resnet18", "backbone.pretrained=false", "aggregator.proj_channels=32", "aggregator.num_queries=8",
    "aggregator.num_layers=2", "aggregator.row_dim=4",
]

pytestmark = pytest.mark.skipif(
    not all((REAL / folder).is_dir() for folder in ("nordland_64x32_seqslam", "corridor_vprbench", "gardenspoint_sample10")),
    reason=f"the real datasets are not in {REAL} (set VPRLAB_SHARED_DIR to the shared folder that holds data/real)",
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Thousands of tiny images: one thread is faster than two fighting over a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(tmp_path, *extra):
    return compose_config("evaluate", [
        f"benchmark=[{','.join(EXPECTED)}]", f"paths.output_dir={tmp_path}", f"paths.log_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
        "num_workers=0", "batch_size=64", "progress=false", "strict_counts=true",
        # Small sizes keep this a CPU test: Nordland is 64x32 anyway.
        "benchmark.real_nordland64.image_size=[32,64]", "benchmark.real_corridor.image_size=[48,64]",
        "benchmark.real_gardenspoint.image_size=[72,128]", *TINY_BOQ, *extra,
    ])


def test_real_datasets_evaluate_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("VPRLAB_SHARED_DIR", str(REAL.parent.parent))
    metrics = run_evaluation(_cfg(tmp_path, "visualize.num_queries=1", "visualize.top_k=3"))
    assert list(metrics) == list(EXPECTED)
    for name, (num_db, num_queries) in EXPECTED.items():
        m = metrics[name]
        assert (m["num_db"], m["num_queries"], m["num_without_positive"]) == (num_db, num_queries, 0)
        recalls = [m[f"R@{k}"] for k in (1, 5, 10, 20)]
        assert all(0.0 <= r <= 100.0 for r in recalls) and recalls == sorted(recalls)
        assert m["descriptor_dim"] == 32 * 4 and m["extract_img_per_s"] > 0
    assert metrics["real_gardenspoint"]["R@10"] == 100.0  # every query's positive is among 10 database images

    rows = {row["benchmark"]: row for row in read_results(tmp_path)}
    assert rows["real_corridor"]["image_size"] == "48x64" and rows["real_nordland64"]["image_size"] == "32x64"
    assert rows["real_corridor"]["from_cache"] is False and rows["real_corridor"]["protocol"].startswith("positives listed")
    assert json.loads((tmp_path / "results.json").read_text())
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.startswith("| model | benchmark | R@1 |") and "real_gardenspoint" in markdown
    assert (tmp_path / "results.csv").read_text().startswith("model,benchmark,R@1")

    visuals = tmp_path / "visuals"
    grids = sorted(p.name for p in visuals.glob("*_top3.png"))
    attention = sorted(visuals.glob("real_gardenspoint_*_attention_q*.png"))
    assert len(grids) == 3 and [p.name.rsplit("_", 1)[-1] for p in attention] == ["q0.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in visuals.iterdir())
