"""Gradient caching and activation checkpointing give the gradients of the plain full-batch step."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import timm
import torch
from conftest import compose_config, tiny_train_overrides
from torch import nn

from vprlab.engine.checkpoint import load_checkpoint
from vprlab.engine.grad_cache import grad_cache_backward
from vprlab.engine.trainer import train
from vprlab.losses.metric import multi_similarity
from vprlab.models.aggregators.boq import BoQ
from vprlab.models.backbones import DinoV2Backbone
from vprlab.models.vpr_model import VPRModel

PLACES, IMAGES = 8, 4


def tiny_dinov2_boq(grad_checkpointing: bool = False) -> VPRModel:
    """A DINOv2-like ViT (LayerNorm, patch 14) with 3 blocks of width 48, the last 2 trained, + BoQ."""
    create = timm.create_model
    small = lambda name, *a, **k: create(name, *a, depth=3, embed_dim=48, num_heads=4, **k)  # noqa: E731
    torch.manual_seed(0)
    with mock.patch.object(timm, "create_model", small):
        backbone = DinoV2Backbone(
            "vit_small_patch14_dinov2", pretrained=False, num_trainable_blocks=2, grad_checkpointing=grad_checkpointing
        )
    aggregator = BoQ(48, proj_channels=16, num_queries=4, num_layers=2, row_dim=4)
    return VPRModel(backbone, aggregator).train()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    # Places share a base image plus noise, so that the miner finds both hard positives and negatives.
    base = torch.randn(PLACES, 1, 3, 42, 42, generator=generator)
    images = base + 0.7 * torch.randn(PLACES, IMAGES, 3, 42, 42, generator=generator)
    return images.flatten(0, 1), torch.arange(PLACES).repeat_interleave(IMAGES)


def plain_step(model: nn.Module, images, labels, loss_fn) -> tuple[torch.Tensor, dict]:
    loss, stats = loss_fn(model(images), labels)
    loss.backward()
    return loss.detach(), stats


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys() and len(expected) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(scope="module")
def reference():
    """The plain step's loss, miner statistics and gradients."""
    model = tiny_dinov2_boq()
    images, labels = batch()
    loss, stats = plain_step(model, images, labels, multi_similarity())
    assert loss > 0 and stats["mined_pos_pairs"] > 0 and stats["mined_neg_pairs"] > 0  # the miner has work
    return model, loss, stats, gradients(model)


@pytest.mark.parametrize("chunk_size", [5, 16, 32])  # uneven chunks, two halves, one chunk
def test_grad_cache_gives_the_full_batch_gradients(reference, chunk_size):
    model0, loss0, stats0, grads0 = reference
    model = tiny_dinov2_boq()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model0.state_dict().values()))
    images, labels = batch()
    loss, stats = grad_cache_backward(model, images, labels, multi_similarity(), chunk_size)
    torch.testing.assert_close(loss, loss0, rtol=1e-6, atol=1e-6)
    assert stats == stats0  # the miner saw the same whole batch
    assert_same_gradients(grads0, gradients(model))
    # The frozen part stayed without gradients.
    assert model.backbone.dino.patch_embed.proj.weight.grad is None


def test_activation_checkpointing_gives_the_same_gradients(reference):
    _, loss0, _, grads0 = reference
    model = tiny_dinov2_boq(grad_checkpointing=True)
    images, labels = batch()
    with mock.patch("torch.utils.checkpoint.checkpoint", wraps=torch.utils.checkpoint.checkpoint) as spy:
        loss, _ = plain_step(model, images, labels, multi_similarity())
    assert spy.call_count == 2  # the two trained blocks were checkpointed
    torch.testing.assert_close(loss, loss0, rtol=1e-6, atol=1e-6)
    assert_same_gradients(grads0, gradients(model))

    both = tiny_dinov2_boq(grad_checkpointing=True)
    grad_cache_backward(both, images, labels, multi_similarity(), 6)
    assert_same_gradients(grads0, gradients(both))


def test_grad_cache_replays_dropout_and_scales_like_the_grad_scaler():
    """With a stochastic layer, each chunk's second forward draws the same mask as its first; the
    random generator ends where the plain step leaves it; a loss scale multiplies every gradient."""
    images, labels = batch()

    def with_dropout():
        model = tiny_dinov2_boq()
        model.aggregator.fc = nn.Sequential(nn.Dropout(0.3), model.aggregator.fc)  # dropout on the queries' outputs
        return model

    torch.manual_seed(7)
    cached = with_dropout()
    grad_cache_backward(cached, images, labels, multi_similarity(), 5, scale=lambda loss: loss * 8.0)
    after_cached = torch.rand(1)
    # Dropout masks are drawn per chunk, not for the whole batch at once; what must hold is that the second
    # pass reuses the first pass's masks, so that the gradients are those of the loss that was computed:
    # autograd through the same chunks drawn from the same random state gives them.
    torch.manual_seed(7)
    manual = with_dropout()
    loss, _ = multi_similarity()(torch.cat([manual(chunk) for chunk in images.split(5)]), labels)
    after_manual = torch.rand(1)
    (loss * 8.0).backward()
    assert_same_gradients(gradients(manual), gradients(cached))
    assert torch.equal(after_cached, after_manual)  # the generator ends where one forward leaves it


def test_batchnorm_running_statistics_are_updated_once_per_chunk():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    twin = copy.deepcopy(net)
    images, labels = batch()
    grad_cache_backward(net, images[:, :, :8, :8], labels, multi_similarity(), 8)
    for chunk in images[:, :, :8, :8].split(8):  # what the second pass alone does
        twin(chunk)
    assert net[1].num_batches_tracked.item() == 4
    torch.testing.assert_close(net[1].running_mean, twin[1].running_mean)
    torch.testing.assert_close(net[1].running_var, twin[1].running_var)


def test_training_with_grad_cache_equals_the_plain_run_and_resumes(tiny_synthetic, tmp_path):
    """A tiny DINOv2-BoQ trained for one epoch with gradient caching and activation checkpointing, then
    resumed from its checkpoint for a second, ends where the plain 2-epoch run ends."""
    root = tiny_synthetic.root.parent
    extra = ["trainer.max_epochs=2", "trainer.eval_before_training=false", "benchmark=[]", "backbone=dinov2_vits14",
             "backbone.pretrained=false", "backbone.num_trainable_blocks=1", "dataset.image_size=[28,28]",
             "backbone.train_image_size=[28,28]", "backbone.eval_image_size=[28,28]", "aggregator=boq_small",
             "optimizer=sgd"]  # AdamW would magnify float rounding in near-zero gradients to lr-sized steps
    create = timm.create_model
    small = lambda name, *a, **k: create(name, *a, depth=2, embed_dim=32, num_heads=2, **k)  # noqa: E731
    with mock.patch.object(timm, "create_model", small):
        plain = train(compose_config("train", tiny_train_overrides(root, tmp_path / "plain", *extra)))
        cached = [*extra, "trainer.grad_cache_chunk=6", "backbone.grad_checkpointing=true", "trainer.max_epochs=1"]
        train(compose_config("train", tiny_train_overrides(root, tmp_path / "cached", *cached)))
        resumed = train(compose_config("train", tiny_train_overrides(
            root, tmp_path / "cached", *cached, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'cached/checkpoints/last.ckpt'}"
        )))
    assert plain["step"] == resumed["step"] == 6
    a = load_checkpoint(tmp_path / "plain/checkpoints/last.ckpt")["model"]
    b = load_checkpoint(tmp_path / "cached/checkpoints/last.ckpt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_bad_chunk_size_is_a_clear_error(tiny_synthetic, tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "trainer.grad_cache_chunk=0"))
    with pytest.raises(ValueError, match=r"trainer.grad_cache_chunk=0 must be an integer >= 1 or null; images per gradient-caching chunk"):
        train(cfg)


def test_the_frozen_part_runs_once_and_the_gradients_stay_the_same(reference):
    """The second pass starts from the kept output of the frozen blocks; the whole-model replay
    (frozen_prefix=False, what DDP and compiled models get) gives the same gradients."""
    _, _, _, grads0 = reference
    images, labels = batch()
    for frozen_prefix, embeds in ((True, 4), (False, 8)):  # 4 chunks: embedded once, or twice
        model = tiny_dinov2_boq()
        with mock.patch.object(model.backbone, "embed", wraps=model.backbone.embed) as spy:
            grad_cache_backward(model, images, labels, multi_similarity(), 8, frozen_prefix=frozen_prefix)
        assert spy.call_count == embeds
        assert_same_gradients(grads0, gradients(model))
