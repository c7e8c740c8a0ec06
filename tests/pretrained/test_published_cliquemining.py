"""CliqueMining: a random state dict with exactly the keys and shapes its code implies
(release_layouts/cliquemining_dinov2_8448.tsv), written as a PyTorch Lightning checkpoint
(``{"state_dict": ..., "epoch": ..., "hyper_parameters": ...}``, what its eval.py and
VPR-methods-evaluation read), loads strictly by name and gives the descriptor of the independent
DINOv2 + SALAD computation of test_published_dinov2_vgg (plain torch ops on the raw release tensors)."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from release_reference import RELEASE_LAYOUTS, forbid_network, read_layout
from test_published_dinov2_vgg import DINO_INPUT, TOL, random_release, ref_salad_model

from vprlab.pretrained import eval_preprocessing, load_pretrained, published_model, read_published_state
from vprlab.pretrained.families._common import VME_DINO
from vprlab.utils.errors import ConfigError

NAME = "cliquemining_dinov2_8448"


def lightning_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What ``pytorch_lightning.Trainer`` saves for CliqueMining's ``VPRModel`` (its
    ``save_hyperparameters()`` arguments included): plain types and tensors only."""
    return {
        "epoch": 3, "global_step": 12000, "pytorch-lightning_version": "2.0.1", "state_dict": state,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'pitts30k_val/R1'}": {"best_model_score": torch.tensor(0.93)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 6e-5, "weight_decay": 9.5e-9, "params": [0, 1]}]}],
        "lr_schedulers": [{"start_factor": 1, "end_factor": 0.2, "total_iters": 4000}],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "backbone_arch": "dinov2_vitb14", "backbone_config": {"num_trainable_blocks": 4, "return_token": True, "norm_layer": True},
            "agg_arch": "SALAD", "agg_config": {"num_channels": 768, "num_clusters": 64, "cluster_dim": 128, "token_dim": 256},
            "lr": 6e-5, "optimizer": "adamw", "loss_name": "MultiSimilarityLoss", "miner_name": "MultiSimilarityMiner",
        },
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(the Lightning checkpoint on disk, its state dict)."""
    raw = random_release(read_layout(f"{NAME}.tsv", RELEASE_LAYOUTS), seed=11)
    path = tmp_path_factory.mktemp("cliquemining") / published_model(NAME).file_name
    torch.save(lightning_checkpoint(raw), path)
    return path, raw


def test_lightning_checkpoint_loads_strictly_and_matches_the_step_by_step_salad(release) -> None:
    path, raw = release
    layout = read_layout(f"{NAME}.tsv", RELEASE_LAYOUTS)
    # The code's module tree is SALAD's: the same 188 keys and shapes as dino_salad.ckpt.
    assert len(layout) == 188 and list(raw) == list(layout)
    assert layout["aggregator.cluster_features.3.weight"] == (128, 512, 1, 1) and "backbone.model.mask_token" in layout
    model, transform = load_pretrained(NAME, weights=path)
    assert not model.training and model.descriptor_dim == 8448
    assert torch.equal(model.backbone.dino.blocks[11].mlp.fc2.weight, raw["backbone.model.blocks.11.mlp.fc2.weight"])
    assert torch.equal(model.aggregator.dust_bin, raw["aggregator.dust_bin"])
    x = torch.randn(*DINO_INPUT, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        out = model(x)
        expected = ref_salad_model(x, raw)
    assert out.shape == (2, 8448)
    torch.testing.assert_close(out, expected, **TOL)
    # Its own evaluation is SALAD's (README: "follow the same steps as with SALAD": 322x322 PIL bilinear).
    assert published_model(NAME).preprocessing.describe() == "322x322 PIL bilinear"
    assert repr(transform) == repr(published_model("salad_dinov2_8448").preprocessing.transform())
    assert eval_preprocessing(NAME, "vpr-methods-evaluation") == VME_DINO  # ResizingWrapper("dino_v2_resize")


def test_bare_state_dict_and_missing_keys(release, tmp_path) -> None:
    path, raw = release
    bare = tmp_path / "bare.ckpt"  # the state dict alone (e.g. saved by hand) reads the same
    torch.save(raw, bare)
    from_bare, from_lightning = read_published_state(NAME, bare), read_published_state(NAME, path)
    assert list(from_bare) == list(from_lightning) and all(torch.equal(from_bare[k], from_lightning[k]) for k in from_bare)
    broken = {k: v for k, v in raw.items() if k != "aggregator.score.3.bias"}
    broken["aggregator.cluster_features.0.weight"] = torch.zeros(512, 1024, 1, 1)  # a ViT-L width
    torch.save(lightning_checkpoint(broken), bare)
    with pytest.raises(ConfigError) as info:
        read_published_state(NAME, bare)
    message = str(info.value)
    assert "is not cliquemining_dinov2_8448's file cliquemining.ckpt" in message
    assert "missing keys: aggregator.score.3.bias" in message
    assert "aggregator.cluster_features.0.weight (512, 1024, 1, 1) (expected (512, 768, 1, 1))" in message


def test_offline_the_error_says_where_the_drive_file_goes(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained(NAME)
    message = str(info.value)
    assert "cannot be downloaded by URL; get it from Google Drive file id 1B06ysb-Wjb4KDcNrl-7pyj1mJve1jqdk" in message
    assert str(tmp_path / "hub" / "checkpoints" / "cliquemining.ckpt") in message
    assert calls == []


def test_hub_entries_as_vpr_methods_evaluation_calls_them(release, monkeypatch, tmp_path) -> None:
    path, raw = release
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = forbid_network(monkeypatch)
    by_entry = torch.hub.load(str(REPO), "clique_mining", source="local", weights=str(path))
    by_method = torch.hub.load(str(REPO), "get_trained_model", source="local", method="clique-mining", weights=str(path),
                               protocol="vpr-methods-evaluation")
    assert by_method.eval_preprocessing == VME_DINO
    x = torch.randn(1, 3, 126, 112, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        torch.testing.assert_close(by_entry(x), ref_salad_model(x, raw), **TOL)
        assert torch.equal(by_entry(x), by_method(x))
    assert calls == []
