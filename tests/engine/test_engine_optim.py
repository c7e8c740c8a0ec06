import math

import pytest
import torch
from torch import nn

from vprlab.engine.optim import (
    make_optimizer,
    make_schedule,
    set_lr,
    warmup_cosine,
    warmup_multistep,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 3)
        self.aggregator = nn.Linear(3, 2)


def test_warmup_multistep_factors():
    f = lambda s: warmup_multistep(s, steps_per_epoch=10, total_steps=100, warmup_epochs=1, milestones=[3, 6], gamma=0.1)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(29) == pytest.approx(1.0)
    assert f(30) == pytest.approx(0.1)
    assert f(60) == pytest.approx(0.01)


def test_warmup_cosine_reaches_min_at_the_end():
    f = lambda s: warmup_cosine(s, steps_per_epoch=10, total_steps=110, warmup_epochs=1, min_factor=0.05)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.05)


def test_make_schedule_binds_the_step_counts():
    sched = make_schedule(
        {"_target_": "vprlab.engine.optim.warmup_multistep", "_partial_": True, "warmup_epochs": 0, "milestones": [1], "gamma": 0.5},
        steps_per_epoch=4, total_steps=8,
    )
    assert [sched(s) for s in range(8)] == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5]


def test_optimizer_param_groups_and_backbone_lr():
    model = Tiny()
    model.backbone.bias.requires_grad_(False)
    opt = make_optimizer({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.0, "backbone_lr": 1e-4}, model)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["aggregator"]["lr"] == pytest.approx(1e-3)
    # frozen parameters are not optimised
    assert len(groups["backbone"]["params"]) == 1 and groups["backbone"]["params"][0] is model.backbone.weight
    set_lr(opt, 0.5)
    assert groups["backbone"]["lr"] == pytest.approx(5e-5) and groups["aggregator"]["lr"] == pytest.approx(5e-4)


def test_no_trainable_parameters_is_a_clear_error():
    model = Tiny().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}, model)


def test_fused_auto_is_the_fused_update_only_when_every_trained_parameter_is_on_a_gpu():
    from types import SimpleNamespace

    from vprlab.engine.optim import resolve_fused

    on_gpu = [SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=True)]
    mixed = [SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)]
    assert resolve_fused("auto", on_gpu) is True
    assert resolve_fused("auto", mixed) is None
    assert resolve_fused(False, on_gpu) is False
    with pytest.raises(ValueError, match="optimizer.fused='yes'"):
        resolve_fused("yes", on_gpu)
    # On this CPU, the YAML default (auto) builds the default AdamW and it steps.
    model = Tiny()
    opt = make_optimizer({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "fused": "auto"}, model)
    assert not opt.defaults["fused"]
    model.backbone.weight.grad = torch.ones_like(model.backbone.weight)
    opt.step()
