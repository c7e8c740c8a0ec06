"""The trainer's input: uint8 batches from the loader, normalised once, on the device."""

from __future__ import annotations

import torch
from conftest import compose_config, tiny_train_overrides

from vprlab.data.loaders import build_train_loader, loader_setting
from vprlab.data.transforms import train_transform
from vprlab.engine import trainer


def test_the_model_sees_the_batch_the_worker_side_normalisation_gave(tiny_synthetic, tmp_path, monkeypatch):
    cfg = compose_config("train", tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path, "trainer.max_epochs=1", "trainer.eval_before_training=false", "benchmark=[]"))
    seen: list[torch.Tensor] = []
    build_model = trainer.build_model

    def recording_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()) if module.training else None)
        return model

    monkeypatch.setattr(trainer, "build_model", recording_model)
    trainer.train(cfg)
    assert len(seen) == 3 and all(batch.dtype == torch.float32 for batch in seen)

    # The previous path: the same places and seeds, normalised in the dataset (float batches).
    model = build_model(cfg.backbone, cfg.aggregator)
    loader, sampler, dataset = build_train_loader(cfg.dataset, mean=model.backbone.mean, std=model.backbone.std, seed=int(cfg.seed))
    sampler.set_epoch(0)
    uint8_batch, _ = next(iter(loader))
    assert uint8_batch.dtype == torch.uint8  # what the workers hand over: 4x smaller than float32
    dataset.transform = train_transform(
        tuple(cfg.dataset.image_size), randaugment_ops=loader_setting(cfg.dataset, "randaugment_ops"),
        randaugment_magnitude=loader_setting(cfg.dataset, "randaugment_magnitude"), mean=model.backbone.mean, std=model.backbone.std,
    )
    keys = list(sampler)[: loader.batch_size]
    expected = torch.cat([dataset[key][0] for key in keys])
    assert torch.equal(seen[0], expected)  # normalised exactly once, to the same numbers
