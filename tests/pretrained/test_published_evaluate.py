"""Published models in the evaluation pipeline and in training: native-size images batched by size,
the descriptor cache keyed by the preprocessing, ``evaluate.py pretrained=<name>``, and
``train.py pretrained=<name>`` (fine-tuning from the released weights, evaluation, export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import compose_config
from PIL import Image
from release_reference import forbid_network

from vprlab.commands.evaluate import load_model_for_eval, run_evaluation
from vprlab.engine.checkpoint import load_checkpoint
from vprlab.evaluation.descriptors import extract_descriptors_timed
from vprlab.evaluation.results import read_results
from vprlab.evaluation.settings import EvalSettings
from vprlab.pretrained import load_pretrained, published_model

NAME = "cosplace_resnet18_32"  # the cheapest published architecture: ResNet18 + GeM + FC, any image size
_SEQUENTIAL = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


@pytest.fixture(scope="module")
def cosplace_file(tmp_path_factory) -> Path:
    """A CosPlace ResNet18-32 file in the released layout (backbone.N.*, aggregation.{1.p,3.*}),
    written from torchvision's resnet18 (random weights), as CosPlace's training code saves it."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    raw = {f"backbone.{_SEQUENTIAL[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    raw.update({"aggregation.1.p": torch.tensor([3.0]), "aggregation.3.weight": torch.randn(32, 512) / 20, "aggregation.3.bias": torch.zeros(32)})
    path = tmp_path_factory.mktemp("release") / published_model(NAME).file_name
    torch.save(raw, path)
    return path


@pytest.fixture(scope="module")
def mixed_benchmark(tmp_path_factory) -> Path:
    """A .npy benchmark (Pitts30k test naming) whose images have three different sizes; each query is a
    copy of its database image."""
    root = tmp_path_factory.mktemp("bench")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    sizes = [(40, 48), (48, 64), (36, 52)]
    db, queries = [], []
    for i in range(6):
        image = Image.fromarray(rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8))
        image.save(root / "images" / f"db_{i}.png")
        image.save(root / "images" / f"q_{i}.png")
        db.append(f"images/db_{i}.png")
        queries.append(f"images/q_{i}.png")
    np.save(root / "pitts30k_test_dbImages.npy", np.array(db))
    np.save(root / "pitts30k_test_qImages.npy", np.array(queries))
    gt = np.empty(6, dtype=object)
    for i in range(6):
        gt[i] = np.array([i])
    np.save(root / "pitts30k_test_gt.npy", gt, allow_pickle=True)
    return root


def test_native_size_images_are_batched_by_size(cosplace_file, mixed_benchmark) -> None:
    model, transform = load_pretrained(NAME, weights=cosplace_file)
    paths = [mixed_benchmark / "images" / f"db_{i}.png" for i in range(6)]
    result = extract_descriptors_timed(model, paths, transform, EvalSettings(batch_size=4, progress=False))
    with torch.no_grad():
        one_by_one = torch.cat([model(transform(Image.open(p).convert("RGB")).unsqueeze(0)) for p in paths]).numpy()
    assert {Image.open(p).size for p in paths} == {(48, 40), (64, 48), (52, 36)}
    np.testing.assert_allclose(result.descriptors, one_by_one, atol=1e-5)


def _evaluate_cfg(out, bench, *overrides):
    return compose_config("evaluate", [
        f"paths.output_dir={out}", "num_workers=0", "batch_size=4", "device=cpu", "benchmark=[pitts30k_test]",
        f"benchmark.pitts30k_test.root={bench}", "benchmark.pitts30k_test.expected_num_db=null",
        "benchmark.pitts30k_test.expected_num_queries=null", f"cache_dir={out / 'cache'}", *overrides,
    ])


def test_evaluate_py_pretrained_native_size_and_cache(cosplace_file, mixed_benchmark, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("torch.hub._hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    cfg = _evaluate_cfg(tmp_path, mixed_benchmark, f"pretrained={NAME}", f"pretrained.path={cosplace_file}")
    metrics = run_evaluation(cfg)
    assert calls == [] and metrics["pitts30k_test"]["R@1"] == 100.0 and metrics["pitts30k_test"]["descriptor_dim"] == 32
    (row,) = read_results(tmp_path)
    assert row["model"] == NAME and row["image_size"] == "native"
    entries = list((tmp_path / "cache").glob("*/pitts30k_test/*"))
    assert [e.name.split("-")[0] for e in entries] == ["native"]
    # Same model at a fixed size: another cache entry (the key holds the preprocessing); the rerun of the
    # native protocol reads its descriptors from the cache.
    run_evaluation(_evaluate_cfg(tmp_path, mixed_benchmark, f"pretrained={NAME}", f"pretrained.path={cosplace_file}",
                                 "benchmark.pitts30k_test.image_size=[32,32]"))
    assert sorted(e.name.split("-")[0] for e in (tmp_path / "cache").glob("*/pitts30k_test/*")) == ["32x32", "native"]
    run_evaluation(cfg)
    rows = read_results(tmp_path)
    assert any(r["image_size"] == "native" and r["from_cache"] in (True, "True") for r in rows)


@pytest.mark.parametrize("name", ["salad_dinov2_8448", "netvlad_vgg16_pitts30k", "megaloc_dinov2_8448", "cosplace_vgg16_512"])
def test_every_name_composes_for_evaluate_and_train(name, tmp_path) -> None:
    cfg = compose_config("evaluate", [f"pretrained={name}", f"pretrained.path={tmp_path / 'w'}", f"paths.output_dir={tmp_path}"])
    assert cfg.pretrained.name == name and cfg.pretrained.path == str(tmp_path / "w") and cfg.pretrained.protocol is None
    train_cfg = compose_config("train", [f"pretrained={name}", f"paths.output_dir={tmp_path}"])
    assert train_cfg.pretrained.name == name


def test_fine_tune_from_a_published_model_trains_evaluates_and_exports(cosplace_file, tiny_synthetic, tmp_path, capsys) -> None:
    from vprlab.engine.trainer import train
    from vprlab.evaluation.protocol import evaluate_model
    from vprlab.pretrained.cli import main as models_main

    data_dir = tiny_synthetic.root.parent
    out = tmp_path / "run"
    cfg = compose_config("train", [
        "experiment=quickstart", f"paths.data_dir={data_dir}", f"paths.output_dir={out}",
        f"pretrained={NAME}", f"pretrained.path={cosplace_file}", "dataset.image_size=[48,64]",
        "dataset.places_per_batch=8", "trainer.max_epochs=1", "trainer.eval_batch_size=16", "trainer.log_every_n_steps=1",
    ])
    result = train(cfg)
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    # The run's config describes the published architecture from the zoo's components.
    assert ckpt["config"]["backbone"]["_target_"].endswith("ResNetBackbone") and ckpt["config"]["backbone"]["model_name"] == "resnet18"
    assert ckpt["config"]["aggregator"]["_target_"].endswith("CosPlace") and ckpt["config"]["aggregator"]["out_dim"] == 32
    raw = torch.load(cosplace_file, weights_only=True)
    # It started from the file: frozen layers (stem, layer1, layer2) still hold the file's tensors, trained ones moved.
    assert torch.equal(ckpt["model"]["backbone.net.0.weight"], raw["backbone.0.weight"])
    assert torch.equal(ckpt["model"]["backbone.net.5.0.conv1.weight"], raw["backbone.5.0.conv1.weight"])
    assert not torch.equal(ckpt["model"]["aggregator.fc.weight"], raw["aggregation.3.weight"])
    # ... and the evaluation before the first step is the released model's (same weights, same preprocessing).
    released, _ = load_pretrained(NAME, weights=cosplace_file)
    from vprlab.data.loaders import build_benchmarks

    before = evaluate_model(released, build_benchmarks(cfg.benchmark), EvalSettings(batch_size=16, progress=False))
    assert result["history"][0]["epoch"] == 0 and result["history"][0]["metrics"]["synthetic"]["R@1"] == before["synthetic"]["R@1"]
    assert result["metrics"]["synthetic"]["descriptor_dim"] == 32

    # evaluate.py ckpt_path= rebuilds it with the method's preprocessing.
    model, _, _ = load_model_for_eval(compose_config("evaluate", [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", f"paths.output_dir={tmp_path}"]))
    assert model.eval_preprocessing == published_model(NAME).preprocessing

    # Export in the released layout: the original keys, loadable by name.
    exported = tmp_path / "finetuned.pth"
    assert models_main(["export", str(out / "checkpoints" / "last.ckpt"), str(exported)]) == 0
    assert "CosPlace ResNet18 32-d" in capsys.readouterr().out
    state = torch.load(exported, weights_only=True)
    assert list(state) == list(raw)
    again, _ = load_pretrained(NAME, weights=exported)
    assert all(torch.equal(again.state_dict()[k], ckpt["model"][k]) for k in ckpt["model"])


def test_fine_tuning_a_family_without_zoo_configs_says_so(tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from vprlab.pretrained import registry
    from vprlab.pretrained.finetune import apply_published_architecture

    name = "netvlad_vgg16_pitts30k"
    monkeypatch.setitem(registry._PUBLISHED, name, replace(published_model(name), configs=None))
    cfg = compose_config("train", [f"pretrained={name}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=f"fine-tuning {name} is not available.*evaluate.py pretrained={name}"):
        apply_published_architecture(cfg)


@pytest.mark.parametrize("name", ["boq_resnet50_16384", "mixvpr_resnet50_4096", "convap_resnet50_2048"])
def test_fine_tuning_configs_build_the_published_architecture(name, tmp_path) -> None:
    """train.py pretrained=<name> composes the released architecture from the zoo: the same keys and
    shapes as the model the released file loads into."""
    from vprlab.models.vpr_model import build_model
    from vprlab.pretrained.finetune import apply_published_architecture

    cfg = apply_published_architecture(compose_config("train", [f"pretrained={name}", f"paths.output_dir={tmp_path}"]))
    ours = build_model(cfg.backbone, cfg.aggregator).state_dict()
    release = published_model(name).build_model().state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in release.items()]


def test_hub_entries_load_local_files_offline(cosplace_file, monkeypatch, tmp_path) -> None:
    from conftest import REPO

    monkeypatch.setattr("torch.hub._hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    by_method = torch.hub.load(str(REPO), "get_trained_model", source="local", method="cosplace", backbone="ResNet18",
                               dim=32, weights=str(cosplace_file))
    original_call = torch.hub.load(str(REPO), "cosplace", source="local", backbone="ResNet18", fc_output_dim=32,
                                   weights=str(cosplace_file))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(by_method(x), original_call(x))
    assert not by_method.training and by_method.eval_preprocessing.size is None
    untrained = torch.hub.load(str(REPO), "convap", source="local", dim=8192, pretrained=False)
    assert untrained.descriptor_dim == 8192 and calls == []
    with pytest.raises(ValueError, match=r"no CosPlace model with backbone='ResNet18', dim=2048; released \(backbone, dim\): .*\('ResNet18', 512\)"):
        torch.hub.load(str(REPO), "cosplace", source="local", backbone="ResNet18", fc_output_dim=2048)
    with pytest.raises(ValueError, match=r"method='patchnetvlad'; published methods: \[.*'CosPlace'"):
        torch.hub.load(str(REPO), "get_trained_model", source="local", method="patchnetvlad")


def test_models_list_and_download(cosplace_file, monkeypatch, tmp_path, capsys) -> None:
    from vprlab.pretrained.cli import main

    monkeypatch.setattr("torch.hub._hub_dir", str(tmp_path / "hub"))
    forbid_network(monkeypatch)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / cosplace_file.name).write_bytes(cosplace_file.read_bytes())
    assert main(["list"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.split()}
    assert lines[NAME][:6] == [NAME, "CosPlace", "ResNet18", "32", "native", "yes"]
    assert lines["mixvpr_resnet50_4096"][:6] == ["mixvpr_resnet50_4096", "MixVPR", "ResNet50", "4096", "320x320", "no"]
    assert lines["salad_dinov2_8448"][2] == "DINOv2-ViT-B/14" and lines["salad_dinov2_8448"][-1].endswith("dino_salad.ckpt")
    assert main(["download", NAME]) == 0 and capsys.readouterr().out.strip() == str(tmp_path / "hub" / "checkpoints" / cosplace_file.name)
    assert main(["download", "convap_resnet50_4096"]) == 2  # no URL: the user fetches it (a MissingFileError)
    assert "Google Drive folder 1VYPw9uGD11NgiGFgfWueLt3noJYOIuhL" in capsys.readouterr().err
    assert main(["download", "nope"]) == 2 and "unknown published model 'nope'" in capsys.readouterr().err


def test_fine_tuning_keeps_component_overrides_and_refuses_another_architecture(tmp_path, monkeypatch) -> None:
    """train.py pretrained=<name> backbone.num_trainable_blocks=3: the published architecture with that
    one setting changed (it used to be replaced silently); backbone=<group> is refused."""
    from vprlab.pretrained import finetune

    name = "mixvpr_resnet50_4096"
    args = [f"pretrained={name}", "backbone.num_trainable_blocks=3", f"paths.output_dir={tmp_path}"]
    monkeypatch.setattr(finetune, "command_line_overrides", lambda: args)
    cfg = finetune.apply_published_architecture(compose_config("train", args))
    published_backbone, _ = finetune.published_configs(name)
    assert cfg.backbone.num_trainable_blocks == 3 != published_backbone["num_trainable_blocks"]
    assert cfg.backbone.model_name == published_backbone["model_name"]

    args = [f"pretrained={name}", "backbone=resnet18", f"paths.output_dir={tmp_path}"]
    monkeypatch.setattr(finetune, "command_line_overrides", lambda: args)
    with pytest.raises(ValueError, match=r"pretrained=mixvpr_resnet50_4096 sets the backbone.*backbone=resnet18"):
        finetune.apply_published_architecture(compose_config("train", args))


def test_a_fine_tuning_run_resumes_with_auto_and_from_its_file(cosplace_file, tiny_synthetic, tmp_path, monkeypatch) -> None:
    """ckpt_path=auto (the same command again) and ckpt_path=<file> both continue a pretrained=<name> run:
    auto compares the published architecture with the stored one, <file> rebuilds the stored config."""
    from vprlab.engine.trainer import train

    out = tmp_path / "run"
    args = [
        "experiment=quickstart", f"paths.data_dir={tiny_synthetic.root.parent}", f"paths.output_dir={out}",
        f"pretrained={NAME}", f"pretrained.path={cosplace_file}", "dataset.image_size=[48,64]",
        "dataset.places_per_batch=8", "trainer.eval_batch_size=16",
    ]
    first = train(compose_config("train", [*args, "trainer.max_epochs=1"]))
    auto = train(compose_config("train", [*args, "trainer.max_epochs=2", "ckpt_path=auto"]))
    assert auto["step"] == 2 * first["step"]
    # As on a command line (Hydra knows the overrides): only the resume-safe ones are given.
    again = [f"paths.output_dir={out}", "trainer.max_epochs=3", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"]
    monkeypatch.setattr("vprlab.engine.resume.command_line_overrides", lambda: again)
    from_file = train(compose_config("train", again))
    assert from_file["step"] == 3 * first["step"]
