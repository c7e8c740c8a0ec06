"""Our trained BoQ checkpoints export to the release layout and are served like the released ones."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from release_reference import forbid_network, release_checkpoint

from vprlab.engine.checkpoint import save_checkpoint
from vprlab.models import VPRModel
from vprlab.models.aggregators import BoQ, GeM
from vprlab.models.backbones import ResNetBackbone
from vprlab.pretrained import export_release, hub_model, load_pretrained
from vprlab.pretrained.cli import main


def _tiny_boq() -> VPRModel:
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", pretrained=False, eval_image_size=(64, 64))
    return VPRModel(backbone, BoQ(backbone.out_channels, proj_channels=32, num_queries=4, num_layers=1, row_dim=4)).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BoQ and a vprlab training checkpoint of it (with the non-tensor state train.py saves)."""
    model = _tiny_boq()
    with torch.no_grad():  # non-default BatchNorm statistics, so that buffers are checked too
        model.backbone.net[1].running_mean.uniform_(-0.5, 0.5)
    path = tmp_path_factory.mktemp("run") / "last.ckpt"
    save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": {}, "epoch": 2, "step": 10,
        "config": {"backbone": {"model_name": "resnet18"}}, "rng": {"numpy": np.random.get_state()},
    })
    return model, path


def test_export_writes_the_release_layout_and_serves_it(trained, tmp_path, monkeypatch) -> None:
    model, ckpt = trained
    out, architecture = export_release(ckpt, tmp_path / "export" / "boq_resnet18.pth")
    assert architecture.backbone == "resnet18" and architecture.descriptor_dim == 128
    exported = torch.load(out, map_location="cpu", weights_only=True)  # a plain state dict, tensors only
    assert list(exported) == list(model.state_dict())  # the model's (= the release's) key order
    for key, value in model.state_dict().items():
        assert torch.equal(exported[key], value), key

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    x = torch.randn(2, 3, 64, 64)
    hub = torch.hub.load(str(REPO), "get_trained_boq", source="local", backbone_name="resnet18", output_dim=128, weights=out)
    loaded, transform = load_pretrained(out, image_size=64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(hub(x)[0], expected, atol=1e-6, rtol=1e-5)  # same weights; kernels may round differently
        torch.testing.assert_close(loaded(x), expected, atol=1e-6, rtol=1e-5)
    assert tuple(transform.transforms[1].size) == (64, 64)
    with pytest.raises(ValueError, match=r"call get_trained_boq\(backbone_name='resnet18', output_dim=128, weights=\.\.\.\)"):
        hub_model("resnet50", 16384, weights=out)
    assert calls == []


def test_export_keeps_a_released_file_identical(tmp_path_factory, tmp_path) -> None:
    source = release_checkpoint(tmp_path_factory, "resnet50_16384")
    out, architecture = export_release(source, tmp_path / "again.pth")
    assert architecture.describe().endswith("-> 16384-d")
    original = torch.load(source, weights_only=True)
    exported = torch.load(out, weights_only=True)
    assert list(exported) == list(original)
    assert all(torch.equal(exported[k], original[k]) for k in original)


def test_export_refuses_a_model_that_is_not_boq(tmp_path) -> None:
    backbone = ResNetBackbone("resnet18", pretrained=False)
    path = tmp_path / "gem.ckpt"
    save_checkpoint(path, {"model": VPRModel(backbone, GeM(backbone.out_channels)).state_dict()})
    with pytest.raises(ValueError, match=rf"checkpoint '{path}' is not a BoQ model.*aggregator keys: aggregator\.p"):
        export_release(path, tmp_path / "out.pth")


def test_export_cli(trained, tmp_path, capsys) -> None:
    _, ckpt = trained
    assert main(["export", str(ckpt), str(tmp_path / "a.pth")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'a.pth'}: resnet18 + BoQ" in printed and "output_dim=128" in printed
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "b.pth")]) == 2  # a user error
    assert "missing.ckpt' does not exist" in capsys.readouterr().err

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "vprlab", "models", "export", str(ckpt), str(tmp_path / "c.pth")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "c.pth").is_file()


def test_export_records_what_serving_needs_and_loading_uses_it(tmp_path, monkeypatch, caplog) -> None:
    """The reported bug: trained and evaluated at 96x128, but load_pretrained returned a 384x384 transform."""
    import json

    from PIL import Image

    from vprlab.pretrained.load import sidecar_path

    model = _tiny_boq()
    config = {"backbone": {"model_name": "resnet18", "eval_image_size": [96, 128], "train_image_size": [96, 128]},
              "aggregator": {"num_queries": 4}, "seed": 1, "optimizer": {"lr": 0.001}}
    ckpt = tmp_path / "run" / "best.ckpt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": {}, "epoch": 1, "step": 1, "config": config})
    out, architecture = export_release(ckpt, tmp_path / "export" / "mine.pth")
    assert architecture.eval_image_size == (96, 128)

    exported = torch.load(out, map_location="cpu", weights_only=True)  # still a bare state dict for the original code
    assert set(exported) == set(model.state_dict()) and all(isinstance(v, torch.Tensor) for v in exported.values())
    record = json.loads(sidecar_path(out).read_text())
    assert sidecar_path(out).name == "mine.vprlab.json"
    assert record["eval_image_size"] == [96, 128] and record["training_config"] == config
    assert record["transform"]["image_size"] == [96, 128] and record["transform"]["interpolation"] == "bicubic"
    assert record["architecture"]["num_queries"] == 4

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    forbid_network(monkeypatch)
    loaded, transform = load_pretrained(out)
    assert loaded.backbone.eval_image_size == (96, 128)
    assert transform(Image.new("RGB", (640, 480))).shape == (3, 96, 128)
    assert load_pretrained(out, image_size=64)[1](Image.new("RGB", (640, 480))).shape == (3, 64, 64)  # an explicit size wins
    hub = hub_model("resnet18", 128, weights=out)
    assert hub.backbone.eval_image_size == (96, 128)

    # A sidecar that belongs to other weights is not trusted.
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in exported.items()}, out)
    with caplog.at_level("WARNING"):
        assert load_pretrained(out)[0].backbone.eval_image_size != (96, 128)
    assert "was written for other weights" in caplog.text


def test_a_fine_tuned_published_model_exports_with_its_sidecar_and_loads_by_path(tmp_path, capsys, monkeypatch) -> None:
    """issue 21 item 3: every export loads back by path. A checkpoint fine-tuned from CosPlace exports in
    CosPlace's layout with a .vprlab.json naming the published model; load_pretrained(path) and
    `vprlab compare --models path` rebuild it (CosPlace preprocessing, same descriptors), named by the file."""
    from vprlab.commands.compare import load_compare_model
    from vprlab.pretrained import published_model
    from vprlab.pretrained.load import read_export_sidecar, sidecar_path
    from vprlab.pretrained.registry import resolve_callable

    spec = published_model("cosplace_resnet18_32")
    torch.manual_seed(0)
    model = spec.build_model().eval()
    with torch.no_grad():
        model.aggregator.fc.weight.mul_(3.0)  # "fine-tuned": not the initial weights
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": {"pretrained": {"name": spec.name}, "seed": 3}, "epoch": 1})
    out = tmp_path / "mine.pth"
    assert main(["export", str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {sidecar_path(out)}" in printed and f"vprlab.load_pretrained({str(out)!r})" in printed
    record = read_export_sidecar(out)
    assert record["published_model"] == spec.name and record["training_config"]["seed"] == 3
    assert list(torch.load(out, weights_only=True)) == list(resolve_callable(spec.export)(model.state_dict(), spec))  # CosPlace's keys

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    loaded, transform = load_pretrained(out)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.eval_preprocessing == spec.preprocessing
    compared = load_compare_model(str(out))
    assert compared.name == "mine" and compared.kind == "weights file"
    with torch.no_grad():
        torch.testing.assert_close(compared.model(x), model(x))
    assert calls == []
    # Without the sidecar the message says how to load such a file, instead of only "not a BoQ model".
    sidecar_path(out).unlink()
    with pytest.raises(ValueError, match=r"no mine\.vprlab\.json naming the published model.*load_pretrained\(<name>, weights="):
        load_pretrained(out)
