"""evaluate.py with pretrained=<released model> on a tiny .npy benchmark, compared with the paper."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_config
from PIL import Image
from release_reference import forbid_network, release_checkpoint

from vprlab.commands.evaluate import load_model_for_eval, run_evaluation
from vprlab.evaluation.results import read_results
from vprlab.utils.weights import file_hash


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    """A .npy benchmark named like Pitts30k's test split: 6 places, each query a copy of its database
    image (so every model ranks it first: R@1 = 100), plus one query without a positive."""
    root = tmp_path_factory.mktemp("bench")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    db, queries = [], []
    for i in range(6):
        image = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        image.save(root / "images" / f"db_{i}.png")
        image.save(root / "images" / f"q_{i}.png")
        db.append(f"images/db_{i}.png")
        queries.append(f"images/q_{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "images" / "q_6.png")
    queries.append("images/q_6.png")
    np.save(root / "pitts30k_test_dbImages.npy", np.array(db))
    np.save(root / "pitts30k_test_qImages.npy", np.array(queries))
    gt = np.empty(7, dtype=object)
    for i in range(6):
        gt[i] = np.array([i])
    gt[6] = np.array([], dtype=np.int64)
    np.save(root / "pitts30k_test_gt.npy", gt, allow_pickle=True)
    return root


def _cfg(out, *overrides):
    return compose_config("evaluate", [
        f"paths.output_dir={out}", "num_workers=0", "batch_size=8", "device=cpu", *overrides,
    ])


def test_evaluate_a_released_model_and_compare_with_the_paper(tiny_benchmark, tmp_path, tmp_path_factory, monkeypatch, capsys) -> None:
    weights = release_checkpoint(tmp_path_factory, "resnet50_16384")
    monkeypatch.setattr("torch.hub._hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    cfg = _cfg(
        tmp_path, "pretrained=boq_resnet50_16384", f"pretrained.path={weights}", "benchmark=[pitts30k_test]",
        f"benchmark.pitts30k_test.root={tiny_benchmark}", "benchmark.pitts30k_test.image_size=[48,48]", "benchmark.pitts30k_test.expected_num_db=null",
        "benchmark.pitts30k_test.expected_num_queries=null",
        "compare_with_paper=boq_resnet50",
    )
    metrics = run_evaluation(cfg)
    assert calls == []
    result = metrics["pitts30k_test"]
    assert result["descriptor_dim"] == 16384 and result["num_queries"] == 7 and result["num_without_positive"] == 1
    assert result["R@1"] == pytest.approx(100 * 6 / 7)
    (row,) = read_results(tmp_path)
    assert row["model"] == "boq_resnet50_16384" and row["checkpoint_hash"] == file_hash(weights)
    assert row["image_size"] == "48x48"

    printed = " ".join(capsys.readouterr().out.split())  # the console may wrap long lines
    assert "vs the BoQ paper" in printed and "paper_comparison_b" in printed
    markdown = (tmp_path / "paper_comparison_boq_resnet50.md").read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("| pitts30k_test"))
    ours = f"{100 * 6 / 7:.1f}"
    assert f"| pitts30k_test | Pitts30k-test | {ours} | 92.4 | {100 * 6 / 7 - 92.4:+.1f} |" in line
    assert "Paper benchmarks not evaluated here: MSLS-val, Pitts250k-test, Nordland\\*" in markdown


def test_released_model_eval_size_is_the_default(tiny_benchmark, tmp_path, tmp_path_factory) -> None:
    weights = release_checkpoint(tmp_path_factory, "resnet50_16384")
    cfg = _cfg(tmp_path, "pretrained=boq_resnet50_16384", f"pretrained.path={weights}", "backbone=dinov2")
    model, name, weights_hash = load_model_for_eval(cfg)  # the backbone group is ignored
    assert name == "boq_resnet50_16384" and model.descriptor_dim == 16384
    assert model.backbone.eval_image_size == (384, 384)


def test_pretrained_and_checkpoint_together_is_an_error(tmp_path) -> None:
    cfg = _cfg(tmp_path, "pretrained=boq_dinov2_12288", "ckpt_path=/somewhere/last.ckpt")
    with pytest.raises(ValueError, match="pretrained= and ckpt_path=/weights_path= both name the weights"):
        load_model_for_eval(cfg)


def test_evaluate_py_on_real_images_offline(tmp_path, tmp_path_factory) -> None:
    """The command a user types, on the small real Gardens Point sample, with the network unreachable."""
    import os
    import subprocess
    import sys

    from conftest import CONF, REPO, SHARED

    data = SHARED / "data" / "real" / "gardenspoint_sample10"
    if not (CONF / "benchmark" / "real_gardenspoint.yaml").is_file() or not data.is_dir():
        pytest.skip("needs conf/benchmark/real_gardenspoint.yaml and ../shared/data/real/gardenspoint_sample10")
    weights = release_checkpoint(tmp_path_factory, "resnet50_16384")
    unreachable = "http://127.0.0.1:9"  # any download attempt fails at once
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "VPRLAB_PROGRESS": "0", "TORCH_HOME": str(tmp_path / "torch"),
        "http_proxy": unreachable, "https_proxy": unreachable, "HTTP_PROXY": unreachable, "HTTPS_PROXY": unreachable,
        "HF_HUB_OFFLINE": "1", "VPRLAB_SHARED_DIR": str(SHARED),
    }
    result = subprocess.run([
        sys.executable, str(REPO / "evaluate.py"), "pretrained=boq_resnet50_16384", f"pretrained.path={weights}",
        "benchmark=[real_gardenspoint]", "benchmark.real_gardenspoint.image_size=[96,96]", "num_workers=0",
        "device=cpu", "++cache=false", f"paths.log_dir={tmp_path / 'logs'}",
    ], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "logs").glob("evaluate/runs/*/results.json")
    (row,) = read_results(results.parent)
    assert row["model"] == "boq_resnet50_16384" and row["benchmark"] == "real_gardenspoint"
    assert row["descriptor_dim"] == 16384 and row["num_queries"] == 10 and 0 <= row["R@1"] <= 100
