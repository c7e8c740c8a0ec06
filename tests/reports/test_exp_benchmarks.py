"""The benchmark scripts run end to end at toy sizes (their numbers are printed, not asserted;
what is asserted is what they check: equal outputs, exact search)."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_measures_ours_against_the_paper_style_baseline(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "speed.json"
    results = _script("benchmark_speed").main([
        "--backbone", "resnet18", "--image-size", "64", "--batch-size", "8", "--num-queries", "8", "--row-dim", "4",
        "--warmup", "1", "--iters", "2", "--num-workers", "0", "--data-dir", str(tiny_synthetic.root.parent),
        "--device", "cpu", "--out", str(out),
    ])
    assert results["max_abs_diff"] < 1e-5  # same weights, same descriptors
    assert results["aggregator_speedup"] > 0 and results["train_step_img_s"] > 0
    assert results["model_eval_onednn_speedup"] > 0 and results["train_step_onednn_speedup"] > 0  # fp32 CPU: with and without oneDNN
    for decoder in ("pil", "torchvision", "device"):
        assert results[f"input_pipeline_{decoder}_img_s"] > 0
    assert isinstance(results["input_bound"], bool)
    assert json.loads(out.read_text())["aggregator_eval_img_s"] == results["aggregator_eval_img_s"]
    assert "aggregator_speedup" in capsys.readouterr().out


def test_search_benchmark_finds_the_brute_force_top1_through_the_memory_mapped_chunks(tmp_path):
    results = _script("benchmark_search").main([
        "--num-db", "3000", "--dim", "64", "--num-queries", "50", "--chunk", "700", "--tmp", str(tmp_path),
        "--out", str(tmp_path / "search.json"),
    ])
    assert results["top1_matches_brute_force"] is True
    assert json.loads((tmp_path / "search.json").read_text())["search_s"] == results["search_s"]
    assert results["db_file_gb"] == 3000 * 64 * 2 / 1e9
