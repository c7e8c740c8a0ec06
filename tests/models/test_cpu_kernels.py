"""oneDNN linear products for fp32 CPU inference: same numbers as F.linear, and scoped."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models import cpu_kernels
from vprlab.models.cpu_kernels import (
    linear,
    onednn_linear_available,
    onednn_linears,
    use_onednn,
)


@pytest.fixture
def fresh_check():
    onednn_linear_available.cache_clear()
    yield
    onednn_linear_available.cache_clear()


def test_linear_equals_f_linear_with_and_without_relu():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 7, 40), torch.randn(24, 40), torch.randn(24)
    with torch.inference_mode():
        assert use_onednn(x) == onednn_linear_available()
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(linear(x, w, b, relu=True), F.linear(x, w, b).relu(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(linear(x[0], w, None), F.linear(x[0], w), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="on by default on x86-64 only")
def test_this_machine_has_the_onednn_kernel():
    # Not a property of every build, but of the pinned torch this project tests with; if this
    # fails after a torch upgrade the speed-up is silently gone, which docs/performance.md promises.
    assert onednn_linear_available()


def test_training_autocast_and_other_dtypes_use_f_linear():
    x = torch.randn(2, 8, requires_grad=True)
    assert not use_onednn(x)  # grad enabled
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_onednn(x)
    with torch.no_grad():
        assert not use_onednn(x.double())
        assert use_onednn(x) == onednn_linear_available()
    w = torch.randn(3, 8, requires_grad=True)
    linear(x, w).sum().backward()
    assert w.grad is not None
    frozen_x, frozen_w = torch.randn(2, 8), torch.randn(3, 8)  # grad mode on, nothing to record
    assert use_onednn(frozen_x, frozen_w, None) == onednn_linear_available()
    assert not use_onednn(frozen_x, w, None) and not use_onednn(frozen_x, frozen_w, torch.zeros(3, requires_grad=True))


def test_environment_switch_turns_it_off(monkeypatch, fresh_check):
    monkeypatch.setenv("VPRLAB_ONEDNN_LINEAR", "0")
    assert not onednn_linear_available()
    with torch.no_grad():
        assert not use_onednn(torch.randn(2, 3))


def test_auto_is_on_for_x86_64_only_and_1_forces_it(monkeypatch, fresh_check):
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "arm64")
    assert not onednn_linear_available()  # auto: Arm CPUs keep their own BLAS
    onednn_linear_available.cache_clear()
    monkeypatch.setenv("VPRLAB_ONEDNN_LINEAR", "1")
    assert onednn_linear_available()  # forced on (the kernel works on this machine)
    onednn_linear_available.cache_clear()
    monkeypatch.setenv("VPRLAB_ONEDNN_LINEAR", "auto")
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")
    assert onednn_linear_available()


def test_a_kernel_that_disagrees_is_not_used(monkeypatch, fresh_check, caplog):
    class Wrong:
        @staticmethod
        def _linear_pointwise(x, w, b, attr, scalars, algorithm):
            return F.linear(x, w, b) + 1.0

    monkeypatch.setattr(torch.ops, "mkldnn", Wrong)
    assert not onednn_linear_available()
    assert "disagrees" in caplog.text


def test_onednn_linears_patches_plain_linears_only_inside_the_block():
    torch.manual_seed(0)

    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), Custom(5, 4))
    x = torch.randn(3, 6)
    with torch.inference_mode():
        expected = model(x)
        with onednn_linears(model):
            assert ("forward" in vars(model[0])) == onednn_linear_available()
            assert "forward" not in vars(model[2])  # subclasses keep their own forward
            inside = model(x)
        assert "forward" not in vars(model[0])
        torch.testing.assert_close(inside, expected, atol=1e-5, rtol=1e-5)
        with pytest.raises(ZeroDivisionError):
            with onednn_linears(model):
                1 / 0
        assert "forward" not in vars(model[0])  # restored after an error too


def test_descriptor_extraction_gives_the_same_descriptors_with_and_without_it(tmp_path, monkeypatch, fresh_check):
    import numpy as np
    from PIL import Image

    from vprlab.data.transforms import eval_transform
    from vprlab.evaluation.descriptors import extract_descriptors
    from vprlab.evaluation.settings import EvalSettings
    from vprlab.models.vpr_model import build_model

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(paths[-1])
    model = build_model(
        {"_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "pretrained": False, "model_name": "vit_small_patch14_dinov2",
         "num_trainable_blocks": 1, "train_image_size": 28, "eval_image_size": 28},
        {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": 64, "num_queries": 4, "num_layers": 1, "row_dim": 2},
    )
    fast = extract_descriptors(model, paths, eval_transform(28), EvalSettings(batch_size=2, progress=False))
    monkeypatch.setattr(cpu_kernels, "onednn_linear_available", lambda: False)
    monkeypatch.setattr("vprlab.models.aggregators.boq.use_onednn", lambda x: False)
    plain = extract_descriptors(model, paths, eval_transform(28), EvalSettings(batch_size=2, progress=False))
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_training_sends_only_the_frozen_layers_through_onednn_and_learns_the_same():
    import copy

    from vprlab.losses import multi_similarity
    from vprlab.models.vpr_model import build_model

    torch.manual_seed(0)
    model = build_model(
        {"_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "pretrained": False, "model_name": "vit_small_patch14_dinov2",
         "num_trainable_blocks": 1, "train_image_size": 28, "eval_image_size": 28},
        {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": 64, "num_queries": 4, "num_layers": 1, "row_dim": 2},
    ).train()
    twin = copy.deepcopy(model)
    x, labels = torch.randn(8, 3, 28, 28), torch.arange(2).repeat_interleave(4)

    def step(m):
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        loss, _ = multi_similarity()(m(x), labels)
        loss.backward()
        opt.step()

    routed = []
    with onednn_linears(model):
        frozen = [m for m in model.modules() if type(m) is nn.Linear and not m.weight.requires_grad]
        trainable = [m for m in model.modules() if type(m) is nn.Linear and m.weight.requires_grad]
        assert frozen and trainable
        for m in frozen + trainable:
            m.register_forward_hook(lambda mod, inp, out: routed.append((mod.weight.requires_grad, use_onednn(inp[0], mod.weight, mod.bias))))
        step(model)
    step(twin)
    assert {grad for grad, onednn in routed if onednn} == {False}  # only frozen layers took oneDNN
    assert any(onednn for _, onednn in routed)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
