"""Released BoQ checkpoints load strictly and compute what the original computes; other layouts
(OpenVPRLab, Lightning) load through explicit conversions or fail naming every difference."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from release_reference import (
    random_state_dict,
    read_layout,
    reference_boq,
    reference_dinov2_patch_tokens,
    reference_resnet_features,
    sub_state,
)

from vprlab.pretrained import (
    RELEASED_MODELS,
    describe_differences,
    infer_architecture,
    load_pretrained,
    load_release_state_dict,
    to_release_layout,
)
from vprlab.utils.weights import read_state_dict

INPUTS = {"boq_resnet50_16384": (2, 3, 64, 64), "boq_dinov2_12288": (2, 3, 56, 70)}  # DINOv2: multiples of 14


def _layout(name: str) -> dict[str, tuple[int, ...]]:
    return read_layout(RELEASED_MODELS[name].file_name.replace(".pth", ".tsv"))


@pytest.fixture(scope="module")
def loaded():
    """name -> (model loaded with a random release-layout state dict, that state dict)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            state = random_state_dict(_layout(name))
            model = RELEASED_MODELS[name].architecture.build()
            load_release_state_dict(model, state, "random state")
            cache[name] = (model.eval(), state)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(RELEASED_MODELS))
def test_released_layout_loads_strictly_with_unit_descriptors(name, loaded) -> None:
    spec = RELEASED_MODELS[name]
    layout = _layout(name)
    model, state = loaded(name)
    # Our names are the release's, in the release's order: no conversion is involved.
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == list(layout.items())
    converted, notes = to_release_layout(state)
    assert notes == [] and converted.keys() == state.keys()
    assert infer_architecture(state) == replace(spec.architecture, eval_image_size=None)  # read off the keys and shapes
    torch.manual_seed(1)
    with torch.no_grad():
        descriptors = model(torch.randn(*INPUTS[name]))
    assert descriptors.shape == (2, spec.descriptor_dim) == (2, int(name.rsplit("_", 1)[1]))
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert model.backbone.eval_image_size == spec.architecture.eval_image_size


def test_dinov2_matches_an_independent_vit_from_the_released_names(loaded) -> None:
    model, state = loaded("boq_dinov2_12288")
    torch.manual_seed(2)
    x = torch.randn(*INPUTS["boq_dinov2_12288"])  # 4x5 patches: non-square, resized position embeddings
    with torch.no_grad():
        ours = model.backbone(x)
        expected = reference_dinov2_patch_tokens(x, sub_state(state, "backbone.dino."))
        descriptor = model(x)
        expected_descriptor, _ = reference_boq(expected, sub_state(state, "aggregator."), num_layers=2, heads=384 // 64)
    assert ours.shape == (2, 768, 4, 5)
    torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(descriptor, expected_descriptor, atol=2e-5, rtol=1e-3)


def test_dinov2_final_norm_is_loaded_but_not_applied(loaded) -> None:
    model, state = loaded("boq_dinov2_12288")
    assert torch.equal(model.backbone.dino.norm.weight, state["backbone.dino.norm.weight"])
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        before = model.backbone(x)
        model.backbone.dino.norm.weight.mul_(3.0)
        after = model.backbone(x)
        model.backbone.dino.norm.weight.copy_(state["backbone.dino.norm.weight"])
    assert torch.equal(before, after)


def test_resnet50_matches_torchvision_with_the_released_names(loaded) -> None:
    model, state = loaded("boq_resnet50_16384")
    torch.manual_seed(3)
    x = torch.randn(*INPUTS["boq_resnet50_16384"])
    with torch.no_grad():
        ours = model.backbone(x)
        expected = reference_resnet_features(x, sub_state(state, "backbone.net."), "resnet50")
        descriptor = model(x)
        expected_descriptor, _ = reference_boq(expected, sub_state(state, "aggregator."), num_layers=2, heads=512 // 64)
    assert ours.shape == (2, 1024, 4, 4)  # layer4 cropped: stride 16
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(descriptor, expected_descriptor, atol=2e-5, rtol=1e-3)


def test_missing_extra_and_misshapen_keys_are_reported_by_name(loaded, tmp_path) -> None:
    model, state = loaded("boq_resnet50_16384")
    bad = dict(state)
    del bad["aggregator.boqs.1.norm_q.bias"]
    bad["aggregator.boqs.2.queries"] = torch.zeros(1, 64, 512)
    bad["aggregator.fc.weight"] = torch.zeros(16, 128)
    with pytest.raises(ValueError) as info:
        load_release_state_dict(RELEASED_MODELS["boq_resnet50_16384"].architecture.build(), bad, "test state", "the released model")
    message = str(info.value)
    assert "test state does not match the released model" in message
    assert "1 missing keys: aggregator.boqs.1.norm_q.bias" in message
    assert "1 unexpected keys: aggregator.boqs.2.queries" in message
    assert "aggregator.fc.weight (16, 128) (expected (32, 128))" in message

    path = tmp_path / "resnet50_16384.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError, match=rf"weights file '{path}' does not match the released boq_resnet50_16384 .*missing keys: aggregator\.boqs\.1\.norm_q\.bias"):
        load_pretrained("boq_resnet50_16384", weights=path)
    assert describe_differences(model.state_dict(), state) == ""


def _openvprlab_resnet(state: dict[str, torch.Tensor], num_unfrozen_blocks: int) -> dict[str, torch.Tensor]:
    """The release's ResNet keys as OpenVPRLab names them: stages [stem(conv1, bn1, relu, maxpool),
    layer1, layer2, layer3] split into frozen_layers / unfrozen_layers."""
    stage_of = {"0": (0, "0."), "1": (0, "1."), "4": (1, ""), "5": (2, ""), "6": (3, "")}
    num_frozen = 4 - num_unfrozen_blocks
    out = {}
    for key, value in state.items():
        if not key.startswith("backbone.net."):
            out[key] = value
            continue
        index, rest = key[len("backbone.net."):].split(".", 1)
        stage, inner = stage_of[index]
        part = f"frozen_layers.{stage}" if stage < num_frozen else f"unfrozen_layers.{stage - num_frozen}"
        out[f"backbone.{part}.{inner}{rest}"] = value
    return out


@pytest.mark.parametrize("num_unfrozen_blocks", [0, 1, 2, 4])
def test_openvprlab_lightning_checkpoint_loads(num_unfrozen_blocks, loaded, tmp_path) -> None:
    model, state = loaded("boq_resnet50_16384")
    openvprlab = _openvprlab_resnet(state, num_unfrozen_blocks)
    assert any(k.startswith("backbone.unfrozen_layers.") for k in openvprlab) == (num_unfrozen_blocks > 0)
    converted, notes = to_release_layout(openvprlab)
    assert converted.keys() == state.keys() and all(converted[k] is state[k] for k in state)
    assert any("OpenVPRLab" in note for note in notes)
    if num_unfrozen_blocks != 2:
        return
    # As Lightning saves it: the weights under "state_dict", next to training state and the loss module.
    path = tmp_path / "openvprlab.ckpt"
    torch.save({
        "epoch": 3, "global_step": 100, "hyper_parameters": {"lr": 1e-4},
        "state_dict": {**openvprlab, "loss_function.scale": torch.ones(1)},
    }, path)
    from_file, _ = load_pretrained(path)
    same_name, _ = load_pretrained("boq_resnet50_16384", weights=path)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(from_file(x), model(x), atol=1e-6, rtol=1e-5)  # same weights; kernels may round differently
        torch.testing.assert_close(same_name(x), model(x), atol=1e-6, rtol=1e-5)
    assert from_file.backbone.eval_image_size == (384, 384)  # recognised as the released architecture


def test_openvprlab_layout_that_differs_lists_the_differences(loaded, tmp_path) -> None:
    """An OpenVPRLab ResNet50 that kept layer4 is another model: the released name refuses it by key."""
    _, state = loaded("boq_resnet50_16384")
    openvprlab = _openvprlab_resnet(state, 1)
    openvprlab["backbone.unfrozen_layers.1.0.conv1.weight"] = torch.zeros(512, 1024, 1, 1)  # layer4 block
    path = tmp_path / "with_layer4.ckpt"
    torch.save({"state_dict": openvprlab}, path)
    with pytest.raises(ValueError, match=r"1 unexpected keys: backbone\.net\.7\.0\.conv1\.weight"):
        load_pretrained("boq_resnet50_16384", weights=path)


def test_unknown_layouts_and_files_say_what_was_expected(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"cannot tell the backbone of .*backbone\.net\.\* \(ResNet\).*found encoder\.layer"):
        infer_architecture({"encoder.layer.weight": torch.zeros(1), "aggregator.proj_c.weight": torch.zeros(1), "aggregator.fc.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"is not a BoQ model.*aggregator keys: aggregator\.p"):
        infer_architecture({"backbone.net.0.weight": torch.zeros(1), "aggregator.p": torch.zeros(1)})
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match=rf"weights file '{path}' holds neither a state dict"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="neither a released model .* nor an existing weights file"):
        load_pretrained(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown released model 'boq_vgg'"):
        load_pretrained("boq_vgg", weights=path)
