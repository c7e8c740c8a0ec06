import math

import numpy as np
import pytest
import torch
from torch import nn

from vprlab.engine import optim
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


# ---------------------------------------------------------------------------------------------------------
# The originals' learning rates, derived from their own rules: a Lightning loop that calls the module's
# optimizer_step override before each optimizer step and steps the configured torch scheduler once per
# epoch (interval "epoch", the default of configure_optimizers returning [optimizer], [scheduler]).
# trainer.global_step = optimizer steps completed before this one.


def _lightning_lrs(epochs: int, steps_per_epoch: int, base_lr: float, make_scheduler, override) -> list[float]:
    """The lr each optimizer step of the original uses. ``override(global_step, epoch, group)`` is the
    module's optimizer_step body before ``optimizer.step``; ``make_scheduler(optimizer)`` its scheduler."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param]}], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    lrs, global_step = [], 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            for group in optimizer.param_groups:
                override(global_step, epoch, group)
            lrs.append(optimizer.param_groups[0]["lr"])
            global_step += 1
        optimizer.step()  # (no gradients: a no-op that keeps torch from warning about the order)
        scheduler.step()
    return lrs


def _boq_repository_lrs(epochs, steps_per_epoch, lr, warmup_epochs, milestones, gamma):
    """Bag-of-Queries src/model.py: configure_optimizers (MultiStepLR per epoch) + optimizer_step
    (warm-up while current_epoch < warmup_epochs: scale (global_step + 1) / (warmup_epochs * batches),
    capped at 1, times the group's initial_lr)."""
    def override(global_step, epoch, group):
        if epoch < warmup_epochs:
            scale = min(1.0, (global_step + 1) / (warmup_epochs * steps_per_epoch))
            group["lr"] = scale * group.get("initial_lr", lr)
    sched = lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    return _lightning_lrs(epochs, steps_per_epoch, lr, sched, override)


def _step_warmup_lrs(epochs, steps_per_epoch, lr, warmup_steps, milestones, gamma):
    """OpenVPRLab src/core/vpr_framework.py and MixVPR main.py: warm-up while global_step < warmup_steps
    (scale (global_step + 1) / warmup_steps, capped at 1, times the initial lr), MultiStepLR per epoch."""
    def override(global_step, epoch, group):
        if global_step < warmup_steps:
            group["lr"] = min(1.0, (global_step + 1) / warmup_steps) * lr
    sched = lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    return _lightning_lrs(epochs, steps_per_epoch, lr, sched, override)


def _vprlab_lrs(scheduler_cfg: dict, epochs: int, steps_per_epoch: int, lr: float) -> list[float]:
    """lr = base lr x the schedule's factor at each step (the function make_schedule binds, called
    directly: tens of thousands of steps here)."""
    keys = {k: v for k, v in scheduler_cfg.items() if not k.startswith("_")}
    fn = getattr(optim, scheduler_cfg["_target_"].rsplit(".", 1)[1])
    total = epochs * steps_per_epoch
    return [lr * fn(step, steps_per_epoch=steps_per_epoch, total_steps=total, **keys) for step in range(total)]


def _multistep(**keys) -> dict:
    return {"_target_": "vprlab.engine.optim.warmup_multistep", "_partial_": True, **keys}


@pytest.mark.parametrize("milestones", [[10, 20], [10, 20, 30]])
@pytest.mark.parametrize("steps_per_epoch", [7, 13])
def test_boq_repository_schedule_at_every_step_of_a_40_epoch_run(milestones, steps_per_epoch):
    """BoQ train.py (milestones [10, 20]) and the paper / train.yaml ([10, 20, 30]): 10 warm-up epochs,
    x0.1 per milestone. The first milestone falls where the warm-up ends: the lr reaches its peak at the
    last warm-up step and is x0.1 from the next one on."""
    original = _boq_repository_lrs(40, steps_per_epoch, 1e-4, 10, milestones, 0.1)
    ours = _vprlab_lrs(_multistep(warmup_epochs=10, milestones=milestones, gamma=0.1), 40, steps_per_epoch, 1e-4)
    np.testing.assert_allclose(ours, original, rtol=1e-12, atol=0)
    last_warmup = 10 * steps_per_epoch - 1
    assert original[last_warmup] == pytest.approx(1e-4) and original[last_warmup + 1] == pytest.approx(1e-5)


def test_openvprlab_boq_dinov2_schedule_with_3900_warmup_steps():
    """config/boq_dinov2.yaml: warmup 3900 steps, milestones [10, 20, 30], x0.1, 40 epochs; GSV-Cities'
    ~62k places (GSV-Cities) at 160 per batch give ~390 steps per epoch, so the warm-up ends by the end of epoch 10."""
    for steps_per_epoch in (390, 393):
        original = _step_warmup_lrs(40, steps_per_epoch, 2e-4, 3900, [10, 20, 30], 0.1)
        ours = _vprlab_lrs(_multistep(warmup_epochs=10, warmup_steps=3900, milestones=[10, 20, 30], gamma=0.1),
                           40, steps_per_epoch, 2e-4)
        np.testing.assert_allclose(ours, original, rtol=1e-12, atol=0)


def test_mixvpr_schedule_at_every_step_of_an_80_epoch_run():
    """MixVPR main.py: SGD lr 0.05, 650 warm-up steps, x0.3 at epochs [5, 10, 15, 25, 45], 80 epochs
    (~524 steps per epoch at 120 places)."""
    for steps_per_epoch in (500, 524):
        original = _step_warmup_lrs(80, steps_per_epoch, 0.05, 650, [5, 10, 15, 25, 45], 0.3)
        ours = _vprlab_lrs(_multistep(warmup_steps=650, milestones=[5, 10, 15, 25, 45], gamma=0.3), 80, steps_per_epoch, 0.05)
        np.testing.assert_allclose(ours, original, rtol=1e-12, atol=0)
    assert original[-1] == pytest.approx(0.05 * 0.3**5)


def test_gsv_cities_schedule_at_every_step_of_a_30_epoch_run():
    """gsv-cities main.py: Adam lr 2e-4, 600 warm-up steps, x0.3 at epochs [5, 10, 15, 25], 30 epochs
    (~620 steps per epoch at 100 places); the same optimizer_step rule as MixVPR."""
    original = _step_warmup_lrs(30, 620, 2e-4, 600, [5, 10, 15, 25], 0.3)
    ours = _vprlab_lrs(_multistep(warmup_steps=600, milestones=[5, 10, 15, 25], gamma=0.3), 30, 620, 2e-4)
    np.testing.assert_allclose(ours, original, rtol=1e-12, atol=0)


def test_a_milestone_inside_the_warmup_is_where_vprlab_and_the_originals_part():
    """Documented difference (docs/recipes.md): the originals' warm-up override rewrites the lr, so a
    milestone passed during the warm-up is lost; vprlab still applies it. No preset has one."""
    original = _step_warmup_lrs(6, 10, 1.0, 30, [2, 4], 0.5)
    ours = _vprlab_lrs(_multistep(warmup_steps=30, milestones=[2, 4], gamma=0.5), 6, 10, 1.0)
    assert ours[:20] == pytest.approx(original[:20])          # before the milestone: equal
    assert original[30:40] == pytest.approx([1.0] * 10)       # the original: milestone 2 lost
    assert ours[30:40] == pytest.approx([0.5] * 10)           # vprlab: applied


def test_salad_linear_schedule_matches_within_the_lightning_epoch_steps():
    """SALAD vpr_model.py: LinearLR(1 -> 0.2 over 4000 iterations) stepped in optimizer_step, and Lightning
    also steps it at each epoch end (interval "epoch"): the original's ramp runs one step ahead per finished
    epoch. vprlab ramps by optimizer step: equal in the first epoch, within 3 of 4000 steps after."""
    steps_per_epoch, epochs = 1049, 4  # ~62k places at 60 per batch
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=6e-5)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1, end_factor=0.2, total_iters=4000)
    original = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            original.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()          # optimizer_step: self.lr_schedulers().step()
        scheduler.step()              # Lightning's epoch-interval step
    cfg = {"_target_": "vprlab.engine.optim.warmup_linear", "_partial_": True, "warmup_epochs": 0,
           "start_factor": 1.0, "end_factor": 0.2, "decay_steps": 4000}
    ours = _vprlab_lrs(cfg, epochs, steps_per_epoch, 6e-5)
    np.testing.assert_allclose(ours[:steps_per_epoch], original[:steps_per_epoch], rtol=1e-9, atol=0)
    worst = max(abs(a - b) for a, b in zip(ours, original))
    assert 0 < worst <= 6e-5 * 0.8 * 3 / 4000 * (1 + 1e-6)
    assert ours[-1] == pytest.approx(original[-1]) == pytest.approx(6e-5 * 0.2)


def test_warmup_steps_replaces_warmup_epochs_and_is_checked():
    f = lambda s: warmup_multistep(s, steps_per_epoch=10, total_steps=100, warmup_epochs=5, warmup_steps=4)
    assert [f(s) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert warmup_cosine(1, steps_per_epoch=10, total_steps=100, warmup_steps=4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"scheduler.warmup_steps=2.5: a whole number of steps"):
        f2 = warmup_multistep(0, steps_per_epoch=10, total_steps=100, warmup_steps=2.5)
        del f2


def test_param_groups_step_as_the_originals_groups():
    """BoQ src/model.py / OpenVPRLab vpr_framework.py give AdamW two groups, backbone.parameters() (frozen
    ones included) and aggregator.parameters(), same lr and weight decay; MixVPR / SALAD one group,
    self.parameters(). vprlab's groups hold the trained parameters only: frozen parameters never get a
    gradient, so the updates are the same."""
    def model():
        torch.manual_seed(0)
        m = Tiny()
        m.backbone.weight.requires_grad_(False)  # a frozen backbone tensor
        return m

    def step(m, optimizer):
        for _ in range(3):
            optimizer.zero_grad()
            x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
            m.aggregator(m.backbone(x)).square().mean().backward()
            optimizer.step()
        return [p.detach().clone() for p in m.parameters()]

    ours = model()
    got = step(ours, make_optimizer({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "weight_decay": 0.1}, ours))
    boq = model()
    boq_groups = [{"params": boq.backbone.parameters(), "lr": 1e-2, "weight_decay": 0.1},
                  {"params": boq.aggregator.parameters(), "lr": 1e-2, "weight_decay": 0.1}]
    for a, b in zip(got, step(boq, torch.optim.AdamW(boq_groups))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    mixvpr = model()
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
    ours = model()
    got = step(ours, make_optimizer(sgd, ours))
    original = step(mixvpr, torch.optim.SGD(mixvpr.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3))
    for a, b in zip(got, original):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(got[1], model().backbone.bias)  # the trained tensors did move
