"""The comparison experiments build the published models (descriptor sizes, input sizes), and NetVLAD
is initialised from training data by train()."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF, compose_config
from omegaconf import OmegaConf

from vprlab.engine.checkpoint import load_checkpoint
from vprlab.engine.trainer import train
from vprlab.models.vpr_model import build_model

# experiment -> the descriptor size its paper / release reports
EXPERIMENT_DIMS = {
    "boq_resnet50": 16384,
    "boq_dinov2": 12288,
    "mixvpr_resnet50_4096": 4096,
    "convap_resnet50": 4096,
    "gem_resnet50": 2048,
    "cosplace_resnet50": 2048,
    "netvlad_resnet50": 65536,
    "salad_dinov2": 8448,
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENT_DIMS))
def test_experiment_builds_its_published_model(experiment: str, tmp_path) -> None:
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_") and "github.com/" in text  # says where its numbers come from
    cfg = compose_config("train", [f"experiment={experiment}", "backbone.pretrained=false", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.backbone, cfg.aggregator).eval()
    assert model.descriptor_dim == EXPERIMENT_DIMS[experiment]
    sizes = {tuple(cfg.backbone.train_image_size), tuple(cfg.backbone.eval_image_size)}
    assert tuple(cfg.dataset.image_size) == tuple(cfg.backbone.train_image_size)
    with torch.no_grad():
        for size in sorted(sizes):  # trains and evaluates at its published sizes
            out = model(torch.randn(1, 3, *size))
            assert out.shape == (1, EXPERIMENT_DIMS[experiment])


def test_mixvpr_experiment_refuses_the_boq_eval_size(tmp_path) -> None:
    cfg = compose_config("train", ["experiment=mixvpr_resnet50_4096", "backbone.pretrained=false", f"paths.output_dir={tmp_path}"])
    model = build_model(cfg.backbone, cfg.aggregator).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="built for 20x20 feature maps.*got 24x24"):
        model(torch.randn(1, 3, 384, 384))


def test_salad_needs_the_class_token_backbone(tmp_path) -> None:
    cfg = compose_config("train", ["backbone=dinov2_vits14", "aggregator=salad", "backbone.pretrained=false", f"paths.output_dir={tmp_path}"])
    model = build_model(cfg.backbone, cfg.aggregator).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="SALAD needs the backbone's class token.*experiment=salad_dinov2"):
        model(torch.randn(1, 3, 126, 126))


def test_train_initialises_netvlad_from_training_images(tiny_synthetic, tmp_path) -> None:
    overrides = [
        f"paths.data_dir={tiny_synthetic.root.parent}", f"paths.output_dir={tmp_path}",
        "dataset=synthetic", "benchmark=[synthetic]", "scheduler=constant", "logger.mode=disabled",
        "backbone=resnet18", "backbone.pretrained=false", "backbone.num_trainable_blocks=1",
        "backbone.train_image_size=[48,64]", "backbone.eval_image_size=[48,64]",
        "aggregator=netvlad", "aggregator.num_clusters=8", "aggregator.pca_dim=8", "aggregator.kmeans_iters=10",
        "dataset.places_per_batch=8", "dataset.randaugment_ops=1", "dataset.randaugment_magnitude=5",
        "trainer.max_epochs=1", "trainer.eval_batch_size=16", "trainer.aggregator_init_images=16", "trainer.device=cpu",
    ]
    result = train(compose_config("train", overrides))
    assert set(result["metrics"]["synthetic"]) >= {"R@1", "R@5"}
    state = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")["model"]
    assert bool(state["aggregator.initialised"])
    # k-means of L2-normalised local features: centroids inside the unit ball (torch.rand starts near 9)
    assert state["aggregator.centroids"].norm(dim=1).max() <= 1.0 + 1e-3
    assert state["aggregator.pca.weight"].shape == (8, 8 * 256)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["backbone=dinov2_vits14", "aggregator=salad"], r"aggregator=salad needs the backbone's class token.*return_cls_token=true"),
        (["aggregator=mixvpr"], r"backbone.eval_image_size=\[384, 384\] gives 24x24 feature maps \(stride 16\) but MixVPR is built for 20x20.*\[320, 320\]"),
        (["backbone=dinov2", "aggregator=mixvpr"], r"backbone.eval_image_size=\[322, 322\] gives 23x23 feature maps \(stride 14\)"),
    ],
    ids=["salad-no-cls", "mixvpr-resnet-eval-384", "mixvpr-dinov2-eval-322"],
)
def test_invalid_pairs_fail_before_anything_is_built(overrides, message, tmp_path) -> None:
    from vprlab.config.checks import validate_train_config

    cfg = compose_config("train", [*overrides, f"paths.output_dir={tmp_path}", "dataset.root=null"])
    with pytest.raises(ValueError, match=message):
        validate_train_config(cfg)
    # the experiments that pair them correctly pass
    validate_train_config(compose_config("train", ["experiment=mixvpr_resnet50_4096", f"paths.output_dir={tmp_path}", "dataset.root=null"]))
    validate_train_config(compose_config("train", ["experiment=salad_dinov2", f"paths.output_dir={tmp_path}", "dataset.root=null"]))
