"""The speed and memory measurement scripts (experiments/measure_*.py) run end to end at toy sizes (their numbers are printed, not asserted;
what is asserted is what they check: equal outputs, exact search)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_speed_compares_ours_against_the_paper_style_baseline(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "speed.json"
    results = _script("measure_speed").main([
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


def test_measure_search_finds_the_brute_force_top1_through_the_memory_mapped_chunks(tmp_path):
    results = _script("measure_search").main([
        "--num-db", "3000", "--dim", "64", "--num-queries", "50", "--chunk", "700", "--tmp", str(tmp_path),
        "--out", str(tmp_path / "search.json"),
    ])
    assert results["top1_matches_brute_force"] is True
    assert json.loads((tmp_path / "search.json").read_text())["search_s"] == results["search_s"]
    assert results["db_file_gb"] == 3000 * 64 * 2 / 1e9


def test_measure_memory_runs_every_mode_in_process():
    """The per-mode step of measure_memory.py at toy size (a 2-block DINOv2-S stand-in, 28x28 images)."""
    from argparse import Namespace
    from unittest import mock

    import timm

    bench = _script("measure_memory")
    create = timm.create_model
    small = lambda name, *a, **k: create(name, *a, depth=2, embed_dim=32, num_heads=2, **k)  # noqa: E731
    for mode in bench.MODES:
        args = Namespace(device="cpu", mode=mode, model="vit_small_patch14_dinov2", trainable_blocks=1, size=28,
                         places=2, images=2, chunk=2, bf16=False, warmup=0, steps=1)
        with mock.patch.object(timm, "create_model", small):
            result = bench.run_mode(args)
        # (peak_mb is only meaningful in a fresh process, as the script runs each mode)
        assert result["mode"] == mode and result["oom"] is False and result["img_per_s"] > 0 and "peak_mb" in result


def test_vme_comparison_folder_reads_as_a_utm_benchmark_with_one_positive_per_query(tmp_path):
    from vprlab.data.benchmarks import load_benchmark

    _script("measure_speed").write_jpeg_folder(tmp_path, num_db=4, num_queries=2, size=(64, 48))
    bench = load_benchmark(format="auto", root=str(tmp_path), name="jpegs")
    assert len(bench.db_paths) == 4 and len(bench.query_paths) == 2
    assert [list(p) for p in bench.positives] == [[0], [1]]  # 5 m from its place, 95 m from the next


def test_measure_speed_eval_formats_give_the_same_descriptors_in_every_format():
    results = _script("measure_speed").main([
        "--what", "formats", "--backbone", "resnet18", "--image-size", "64", "--batch-size", "2", "--num-queries", "8",
        "--row-dim", "4", "--iters", "1", "--device", "cpu",
    ])
    for name in ("channels_last", "fold_batchnorm", "both"):
        assert results[f"eval_{name}_max_abs_diff"] < 1e-5 and results[f"eval_{name}_speedup"] > 0


def test_measure_input_times_every_path_and_computes_the_originals_images(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "input.json"
    results = _script("measure_input").main([
        "--root", str(tiny_synthetic.gsv_root), "--places", "8", "--batch-places", "4", "--image-size", "32",
        "--rounds", "2", "--json", str(out), "--cache-root", str(tmp_path / "gsv_32"),
    ])
    assert results["max_abs_diff_vs_original"] == 0  # the default path computes the original's transform
    assert set(results["paths"]) == {"original", "vprlab", "vprlab+normalize", "pil", "device", "previous", "cache"}
    for name, entry in results["paths"].items():
        assert entry["places_per_s"]["min"] > 0 and entry["places_per_cpu_s"]["median"] > 0
        assert ("ratio_wall" in entry) == (name != "original")
    assert json.loads(out.read_text())["paths"]["vprlab"] == results["paths"]["vprlab"]
    assert "largest difference 0 " in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "gsv_32" / "Images").iterdir()) == sorted(
        p.name for p in (tiny_synthetic.gsv_root / "Images").iterdir())  # the resized copy, same layout
    one = _script("measure_input").main(["--root", str(tiny_synthetic.gsv_root), "--places", "4", "--batch-places", "4",
                                            "--image-size", "32", "--only", "original"])
    assert one["path"] == "original" and one["places_per_s"] > 0


@pytest.mark.slow
def test_measure_input_train_mode_compares_train_py_with_the_model_only_step(tiny_synthetic):
    results = _script("measure_input").main([
        "--mode", "train", "--root", str(tiny_synthetic.gsv_root), "--backbone", "resnet18", "--image-size", "32",
        "--batch-places", "4", "--steps", "2", "--warmup-steps", "1",
    ])
    assert results["steps"] == 2 and results["end_to_end_img_s"] > 0 and results["model_only_img_s"] > 0
    assert 0 <= results["not_model_share"] < 1 and results["loader_seconds_per_batch"] > 0 and results["loader_share"] > 0
