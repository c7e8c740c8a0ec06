"""The loss and miner config groups: every pair builds from the composed config and computes what
pytorch-metric-learning computes when called directly; the default stays the GSV-Cities / BoQ recipe;
configs stored before the miner group still build; invalid combinations fail when built."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, compose_config, tiny_train_overrides
from omegaconf import OmegaConf
from pytorch_metric_learning import losses, miners

from vprlab.engine.checkpoint import load_checkpoint
from vprlab.losses import MinedMetricLoss, build_loss, multi_similarity
from vprlab.losses.factory import MINER_FREE_LOSSES
from vprlab.tracking import read_metrics

# What each option must be, written out here independently of the yaml files.
LOSSES = {
    "multi_similarity": lambda: losses.MultiSimilarityLoss(alpha=1.0, beta=50.0, base=0.0),
    "triplet": lambda: losses.TripletMarginLoss(margin=0.1),
    "contrastive": lambda: losses.ContrastiveLoss(pos_margin=0, neg_margin=1),
    "circle": lambda: losses.CircleLoss(m=0.4, gamma=80),
    "supcon": lambda: losses.SupConLoss(temperature=0.1),
    "ntxent": lambda: losses.NTXentLoss(temperature=0.07),
    "fastap": lambda: losses.FastAPLoss(num_bins=10),
}
MINERS = {
    "multi_similarity": lambda: miners.MultiSimilarityMiner(epsilon=0.1),
    "triplet_margin": lambda: miners.TripletMarginMiner(margin=0.1, type_of_triplets="all"),
    "none": lambda: None,
}


def _options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def _batch(seed: int = 0, places: int = 4, per_place: int = 4, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(places * per_place, dim, generator=g), dim=1)
    return x, torch.arange(places).repeat_interleave(per_place)


def _composed(tmp_path, *overrides: str):
    cfg = compose_config("train", [*overrides, f"paths.output_dir={tmp_path}"])
    return build_loss(cfg.loss, cfg.get("miner"))


def test_every_option_is_tested():
    assert _options("loss") == set(LOSSES) and _options("miner") == set(MINERS)


@pytest.mark.parametrize("miner_name", sorted(MINERS))
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_each_loss_and_miner_equals_the_library_called_directly(loss_name, miner_name, tmp_path):
    loss_fn = _composed(tmp_path, f"loss={loss_name}", f"miner={miner_name}")
    assert isinstance(loss_fn, MinedMetricLoss)
    x, labels = _batch()
    x.requires_grad_(True)
    value, stats = loss_fn(x, labels)

    ref_loss, ref_miner = LOSSES[loss_name](), MINERS[miner_name]()
    if ref_miner is None:
        assert loss_fn.miner is None and stats == {}
        expected = ref_loss(x.detach(), labels)
    else:
        indices = ref_miner(x.detach(), labels)
        expected = ref_loss(x.detach(), labels, indices)
        anchors = torch.unique(torch.cat([indices[0], indices[2]]) if len(indices) == 4 else indices[0])
        if len(indices) == 4:
            assert stats["mined_pos_pairs"] == len(indices[0]) > 0 and stats["mined_neg_pairs"] == len(indices[2]) > 0
        else:
            assert stats["mined_triplets"] == len(indices[0]) > 0 and "mined_pos_pairs" not in stats
        assert stats["mined_fraction"] == anchors.numel() / len(labels)
    assert torch.isfinite(value) and value.item() > 0
    torch.testing.assert_close(value.detach(), expected, rtol=0, atol=0)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_default_is_the_boq_recipe_unchanged(tmp_path):
    """loss=multi_similarity miner=multi_similarity computes bit for bit what the old loss config did."""
    new = _composed(tmp_path)
    assert isinstance(new.loss, losses.MultiSimilarityLoss) and isinstance(new.miner, miners.MultiSimilarityMiner)
    assert (new.loss.alpha, new.loss.beta, new.loss.base, new.miner.epsilon) == (1.0, 50.0, 0.0, 0.1)
    for seed in range(3):
        x, labels = _batch(seed, places=8, per_place=4, dim=32)
        value, stats = new(x, labels)
        old_value, old_stats = multi_similarity(alpha=1.0, beta=50.0, base=0.0, miner_epsilon=0.1)(x, labels)
        assert torch.equal(value, old_value) and stats == old_stats


def test_a_stored_config_from_before_the_miner_group_builds_the_same_loss(tmp_path):
    stored = OmegaConf.create({
        "seed": 1,
        "loss": {"_target_": "vprlab.losses.multi_similarity", "alpha": 1.0, "beta": 50.0, "base": 0.0, "miner_epsilon": 0.1},
    })
    assert "miner" not in stored
    old = build_loss(stored.loss, stored.get("miner"))  # what the trainer calls
    new = _composed(tmp_path)
    x, labels = _batch(1, places=8, per_place=4, dim=32)
    (old_value, old_stats), (new_value, new_stats) = old(x, labels), new(x, labels)
    assert torch.equal(old_value, new_value) and old_stats == new_stats
    # miner_epsilon: null meant no miner, and still does
    no_miner = build_loss({**OmegaConf.to_container(stored.loss), "miner_epsilon": None})
    assert no_miner.miner is None


def test_a_stored_config_with_miner_epsilon_and_a_miner_group_is_an_error(tmp_path):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}"])
    legacy = {"_target_": "vprlab.losses.multi_similarity", "miner_epsilon": 0.1}
    with pytest.raises(ValueError, match=r"loss group \(vprlab.losses.multi_similarity\) already chooses its miner "
                                         r"\(loss.miner_epsilon=0.1\).*miner group \(pytorch_metric_learning.miners.MultiSimilarityMiner\)"):
        build_loss(legacy, cfg.miner)


def test_a_loss_that_takes_no_mined_tuples_with_a_miner_fails_when_built(tmp_path):
    cfg = compose_config("train", ["miner=triplet_margin", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"loss group \(pytorch_metric_learning.losses.PNPLoss\) takes no mined pairs or "
                                         r"triplets.*miner group \(pytorch_metric_learning.miners.TripletMarginMiner\).*miner=none"):
        build_loss({"_target_": "pytorch_metric_learning.losses.PNPLoss"}, cfg.miner)
    assert build_loss({"_target_": "pytorch_metric_learning.losses.PNPLoss"}, None).miner is None


def test_the_list_of_losses_that_refuse_miners_matches_the_installed_library():
    refusing = {
        name for name, cls in vars(losses).items()
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module) and hasattr(cls, "compute_loss")
        and "indices_tuple_not_supported" in inspect.getsource(cls.compute_loss)
    }
    assert refusing == set(MINER_FREE_LOSSES)


def test_miner_none_is_no_miner(tmp_path):
    cfg = compose_config("train", ["loss=triplet", "miner=none", f"paths.output_dir={tmp_path}"])
    assert cfg.miner is None
    loss_fn = build_loss(cfg.loss, cfg.miner)
    x, labels = _batch()
    value, stats = loss_fn(x, labels)
    assert loss_fn.miner is None and stats == {}
    torch.testing.assert_close(value, losses.TripletMarginLoss(margin=0.1)(x, labels), rtol=0, atol=0)


def test_triplet_stats_count_triplets_and_their_anchors():
    labels = torch.tensor([0, 0, 1, 1])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # every negative as close as a positive
    loss_fn = MinedMetricLoss(losses.TripletMarginLoss(margin=0.1), miners.TripletMarginMiner(margin=0.1))
    value, stats = loss_fn(x, labels)
    # 4 anchors x 1 positive x 2 negatives, of which the negative identical to the anchor and the one identical
    # to the positive both violate the margin
    assert stats == {"mined_triplets": 8.0, "mined_fraction": 1.0}
    assert value.item() > 0


def test_short_training_with_triplet_loss_and_miner(tiny_synthetic, tmp_path, monkeypatch):
    import vprlab.engine.trainer as trainer

    initial = {}
    build_model = trainer.build_model

    def recording_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        initial.update(copy.deepcopy(model.state_dict()))
        return model

    monkeypatch.setattr(trainer, "build_model", recording_build_model)
    cfg = compose_config("train", tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path, "loss=triplet", "miner=triplet_margin", "trainer.max_epochs=1",
        "trainer.eval_before_training=false", "logger=none"))
    result = trainer.train(cfg)
    assert result["step"] == 3
    rows = read_metrics(tmp_path / "metrics.jsonl")
    steps = [r for r in rows if "train/loss" in r]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(r["train/loss"])) for r in steps)
    assert all(r["train/mined_triplets"] > 0 and 0 < r["train/mined_fraction"] <= 1 for r in steps)
    final = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["model"]
    trainable = [k for k, v in initial.items() if v.is_floating_point() and "aggregator" in k]
    assert trainable and any(not torch.equal(initial[k], final[k]) for k in trainable)
    assert all(torch.isfinite(final[k]).all() for k in trainable)
