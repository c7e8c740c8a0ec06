"""The CUDA paths, for a machine with a GPU: ``pytest -m gpu`` (experiments/gpu_check.sh runs it).

Deselected by default and skipped without CUDA; the CPU suite covers the same logic."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config, tiny_train_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _batch(root, decoder, device):
    from vprlab.data.loaders import build_train_loader
    from vprlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    cfg = {"_target_": "vprlab.data.gsv_cities.GSVCitiesDataset", "root": str(root), "cities": None,
           "img_per_place": 4, "min_img_per_place": 4, "image_size": [32, 40], "places_per_batch": 4,
           "num_workers": 0, "decoder": decoder, "randaugment_ops": 0}
    loader, sampler, _ = build_train_loader(cfg, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=5, device_type="cuda")
    sampler.set_epoch(1)
    images, labels = next(iter(loader))
    return images.to(device), labels


def test_nvjpeg_batches_match_cpu_decoding(tiny_synthetic):
    gpu, gpu_labels = _batch(tiny_synthetic.gsv_root, "device", "cuda")
    cpu, cpu_labels = _batch(tiny_synthetic.gsv_root, "torchvision", "cpu")
    assert gpu.is_cuda and gpu.shape == cpu.shape and torch.equal(gpu_labels, cpu_labels)
    # nvjpeg and libjpeg-turbo may round the IDCT differently: a few grey levels at most.
    assert (gpu.cpu() - cpu).abs().mean() < 0.02


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_on_cuda_runs_and_learns_finite_weights(tiny_synthetic, tmp_path, precision):
    from vprlab.engine.trainer import train

    cfg = compose_config("train", tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path, f"trainer.precision={precision}", "trainer.max_epochs=1",
        "trainer.device=cuda", "dataset.decoder=device", "trainer.channels_last=true"))
    result = train(cfg)
    assert result["step"] == 3 and result["skipped_steps"] == 0
    assert 0 <= result["metrics"]["synthetic"]["R@1"] <= 100


def test_boq_fast_path_on_cuda_equals_the_training_path():
    from vprlab.models.aggregators import BoQ

    torch.manual_seed(0)
    boq = BoQ(in_channels=64, proj_channels=128, num_queries=8, num_layers=2, row_dim=4).cuda().eval()
    x = torch.randn(4, 64, 7, 7, device="cuda")
    with torch.enable_grad():
        expected = boq(x, return_attention=True)[0].detach()
    with torch.inference_mode():
        fast = boq(x, return_attention=False)[0]
    assert (fast - expected).abs().max() <= 1e-4  # TF32 may be on for cuDNN/cuBLAS


def test_faiss_search_sharded_over_every_gpu_matches_cpu():
    import numpy as np

    from vprlab.evaluation.retrieval import faiss_num_gpus, search

    if faiss_num_gpus() == 0:
        pytest.skip("faiss build without GPU support")
    rng = np.random.default_rng(0)
    database = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((50, 64)).astype(np.float32)
    _, cpu = search(database, queries, k=10, use_gpu=False)
    _, gpu = search(database, queries, k=10, use_gpu=True)
    assert (gpu == cpu).mean() > 0.99
