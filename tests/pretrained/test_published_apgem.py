"""AP-GeM (apgem_resnet101_2048): a random state dict with exactly the keys and shapes dirtorch's
``resnet101_rmac`` gives (release_layouts/apgem_resnet101_2048.tsv), saved in dirtorch's checkpoint
container with a pickled sklearn PCA (the Landmarks-clean whitening), reads without running code,
loads strictly and gives the descriptor of an independent step-by-step computation written from
naver/deep-image-retrieval's code (and VPR-methods-evaluation's whitening call) on the raw tensors."""

from __future__ import annotations

import collections
import sys
import types
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from published_layouts import check_offline_message, random_release_tensors, read_release_layout

from vprlab import load_pretrained
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.families import apgem as apgem_family

NAME = "apgem_resnet101_2048"
TOL = dict(atol=1e-5, rtol=1e-5)
BLOCKS = (3, 4, 23, 3)  # ResNet-101


@contextmanager
def old_sklearn_pca_module():
    """``sklearn.decomposition.pca.PCA``, the class path the 2019 release pickled (sklearn < 0.22): a
    stand-in class at that path, so that pickling writes the same GLOBAL + BUILD(state dict) as then."""
    module = types.ModuleType("sklearn.decomposition.pca")

    class PCA:  # noqa: D401 - only its pickled form matters
        pass

    PCA.__module__, PCA.__qualname__ = module.__name__, "PCA"
    module.PCA = PCA
    previous = sys.modules.get(module.__name__)
    sys.modules[module.__name__] = module
    try:
        yield PCA
    finally:
        if previous is None:
            del sys.modules[module.__name__]
        else:
            sys.modules[module.__name__] = previous


def _pca_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mean_": (0.01 * rng.standard_normal(2048)).astype(np.float32),
        "components_": (rng.standard_normal((2048, 2048)) / np.sqrt(2048)).astype(np.float32),
        "explained_variance_": np.sort(rng.uniform(0.05, 1.0, 2048))[::-1].astype(np.float32),
    }


def save_dirtorch_checkpoint(path, weights: dict[str, torch.Tensor], pca: dict[str, np.ndarray] | None, whiten: bool = True,
                             prefix: str = "module.") -> None:
    """dirtorch's checkpoint: state_dict (saved from DataParallel: ``module.``), model_options,
    preprocess, epoch, and ``pca`` {name: sklearn PCA} (pickled by torch.save)."""
    checkpoint = {
        "epoch": 40, "model_options": {"arch": "resnet101_rmac", "out_dim": 2048, "pooling": "gem", "gemp": 3, "without_fc": False},
        "preprocess": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": 224},
        "state_dict": collections.OrderedDict((prefix + k, v) for k, v in weights.items()),
    }
    with old_sklearn_pca_module() as PCA:
        if pca is not None:
            whitening = PCA()
            whitening.__dict__.update(n_components=None, copy=True, whiten=whiten, svd_solver="auto", tol=0.0,
                                      iterated_power="auto", random_state=None, n_components_=2048, n_samples_=30000,
                                      noise_variance_=0.0, **pca)
            checkpoint["pca"] = {"Landmarks_clean": whitening}
        torch.save(checkpoint, path)


def ref_apgem(images: torch.Tensor, sd: dict[str, torch.Tensor], pca: dict[str, np.ndarray], whiten: bool = True) -> torch.Tensor:
    """ResNet_RMAC.forward (ResNet-101 to layer4, GeneralizedMeanPoolingP, fc, L2) and
    common.whiten_features(desc, pca, whitenp=0.25, whitenv=None, whitenm=1.0) in numpy, L2."""
    def bn(x, name):
        return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"],
                            training=False, eps=1e-5)

    x = F.relu(bn(F.conv2d(images, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for stage, count in enumerate(BLOCKS, start=1):
        for block in range(count):
            b = f"layer{stage}.{block}."
            stride = 2 if block == 0 and stage > 1 else 1
            out = F.relu(bn(F.conv2d(x, sd[b + "conv1.weight"]), b + "bn1"))
            out = F.relu(bn(F.conv2d(out, sd[b + "conv2.weight"], stride=stride, padding=1), b + "bn2"))
            out = bn(F.conv2d(out, sd[b + "conv3.weight"]), b + "bn3")
            shortcut = bn(F.conv2d(x, sd[b + "downsample.0.weight"], stride=stride), b + "downsample.1") if block == 0 else x
            x = F.relu(out + shortcut)
    p = sd["adpool.p"]
    pooled = F.adaptive_avg_pool2d(x.clamp(min=1e-6).pow(p), 1).pow(1.0 / p).squeeze(-1).squeeze(-1)
    desc = F.normalize(F.linear(pooled, sd["fc.weight"], sd["fc.bias"]), p=2, dim=-1).numpy()
    projected = np.dot(desc - pca["mean_"], pca["components_"].T)
    if whiten:
        projected = projected / (1.0 * np.power(pca["explained_variance_"], 0.25))
    projected = projected / np.expand_dims(np.linalg.norm(projected, axis=1), axis=1)
    return torch.from_numpy(projected).float()


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    weights = random_release_tensors(read_release_layout(NAME), seed=31)
    weights["adpool.p"] = torch.tensor([2.7])  # learned, not 3
    return weights


@pytest.fixture(scope="module")
def pca() -> dict[str, np.ndarray]:
    return _pca_arrays(seed=32)


@pytest.fixture(scope="module")
def release_file(weights, pca, tmp_path_factory):
    path = tmp_path_factory.mktemp("apgem") / "Resnet-101-AP-GeM.pt"
    save_dirtorch_checkpoint(path, weights, pca)
    return path


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(4))


def test_release_file_reads_without_code_loads_strictly_and_matches_dirtorch(weights, pca, release_file) -> None:
    assert "sklearn.decomposition.pca" not in sys.modules  # nothing at the pickled class path: no sklearn code can run
    model, transform = load_pretrained(NAME, weights=release_file)
    images = _images()
    with torch.no_grad():
        out = model(images)
    assert out.shape == (2, 2048)
    torch.testing.assert_close(out, ref_apgem(images, weights, pca), **TOL)
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert [type(t).__name__ for t in transform.transforms] == ["ToTensor", "Normalize"]  # native size


def test_file_without_num_batches_tracked_or_prefix_and_unwhitened_pca(weights, pca, tmp_path) -> None:
    """A checkpoint saved by PyTorch < 0.4.1 (no num_batches_tracked), without DataParallel's prefix,
    whose PCA was fitted with whiten=False: VME's whitening then only projects."""
    path = tmp_path / "Resnet-101-AP-GeM.pt"
    save_dirtorch_checkpoint(path, {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}, pca,
                             whiten=False, prefix="")
    model, _ = load_pretrained(NAME, weights=path)
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(images), ref_apgem(images, weights, pca, whiten=False), **TOL)


def test_missing_extra_and_misshapen_keys_are_named(weights, pca) -> None:
    """On what read_apgem returns (``state_dict.<key>``, ``pca.Landmarks_clean.<array>``)."""
    raw = {f"state_dict.module.{k}": v for k, v in weights.items() if k != "layer3.7.conv2.weight"}
    raw.update({f"pca.Landmarks_clean.{k}": torch.from_numpy(v) for k, v in pca.items()})
    raw["pca.Landmarks_clean.whiten"] = torch.tensor(True)
    raw["state_dict.module.fc.weight"] = torch.zeros(512, 2048)
    with pytest.raises(ValueError, match=r"layer5\.0\.conv1\.weight"):  # no rule maps it
        apgem_family.convert_apgem({**raw, "state_dict.module.layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError) as info:
        apgem_family.convert_apgem(raw)
    message = str(info.value)
    assert "backbone.net.6.7.conv2.weight" in message
    assert "aggregator.fc.weight (512, 2048) (expected (2048, 2048))" in message
    del raw["pca.Landmarks_clean.explained_variance_"]
    with pytest.raises(ValueError, match="missing.*explained_variance_"):
        apgem_family.convert_apgem(raw)


def test_missing_whitening_and_foreign_classes_are_refused(weights, pca, tmp_path) -> None:
    path = tmp_path / "no_pca.pt"
    save_dirtorch_checkpoint(path, weights, None)
    with pytest.raises(ValueError, match="holds no 'Landmarks_clean' PCA"):
        load_pretrained(NAME, weights=path)
    # any other class in the pickle (here: a training meter, as dirtorch's utils.watcher) is refused by name
    watcher = types.ModuleType("watcher_stub")
    ran: list[str] = []

    class AverageMeter:
        def __setstate__(self, state):  # what a full unpickle would run
            ran.append("code from the file ran")

    AverageMeter.__module__, AverageMeter.__qualname__ = watcher.__name__, "AverageMeter"
    watcher.AverageMeter = AverageMeter
    sys.modules[watcher.__name__] = watcher
    try:
        meter = AverageMeter()
        meter.avg = 0.5
        torch.save({"state_dict": {}, "meter": meter}, tmp_path / "foreign.pt")
    finally:
        del sys.modules[watcher.__name__]
    with pytest.raises(ValueError, match=r"watcher_stub\.AverageMeter.*without running code"):
        apgem_family.read_apgem(tmp_path / "foreign.pt")
    assert ran == []


def test_reader_takes_a_real_sklearn_pca(tmp_path) -> None:
    """A PCA pickled by today's sklearn (``sklearn.decomposition._pca.PCA``) reads as data too."""
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
    fitted = sklearn_decomposition.PCA(whiten=True).fit(np.random.default_rng(0).standard_normal((40, 6)))
    torch.save({"state_dict": {"fc.bias": torch.zeros(3)}, "pca": {"Landmarks_clean": fitted}}, tmp_path / "real.pt")
    raw = apgem_family.read_apgem(tmp_path / "real.pt")
    np.testing.assert_array_equal(raw["pca.Landmarks_clean.components_"].numpy(), fitted.components_)
    np.testing.assert_array_equal(raw["pca.Landmarks_clean.explained_variance_"].numpy(), fitted.explained_variance_)
    assert bool(raw["pca.Landmarks_clean.whiten"]) and list(raw)[0] == "state_dict.fc.bias"


def test_preprocessing_is_native_size_in_both_protocols() -> None:
    entry = published_model(NAME)
    assert entry.eval_preprocessing().describe() == "native size"
    assert entry.eval_preprocessing("vpr-methods-evaluation").describe() == "native size"


def test_offline_names_the_drive_id_and_the_path(monkeypatch, tmp_path) -> None:
    message = check_offline_message(monkeypatch, tmp_path, NAME, (
        "1UWJGDuHtzaQdFhSMojoYVQjmCXhIwVvy", str(tmp_path / "hub" / "dirtorch" / "Resnet-101-AP-GeM.pt")))
    assert "cannot be downloaded by URL" in message


def test_gem_aggregator_fc_and_whitening_options() -> None:
    from vprlab.models.aggregators.gem import GeM

    gem = GeM(8, fc_dim=4, whitening=True)
    assert gem.descriptor_dim == 4 and GeM.output_dim(8, fc_dim=4) == 4
    assert sorted(gem.state_dict()) == ["fc.bias", "fc.weight", "p", "whiten.bias", "whiten.weight"]
    x = torch.rand(2, 8, 3, 5)
    pooled = x.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1 / 3.0)
    step = F.normalize(pooled @ gem.fc.weight.T + gem.fc.bias, dim=1)
    expected = F.normalize(step @ gem.whiten.weight.T + gem.whiten.bias, dim=1)
    torch.testing.assert_close(gem(x), expected.detach(), atol=1e-6, rtol=1e-6)
    assert sorted(GeM(8).state_dict()) == ["p"]  # the default GeM is unchanged


def test_hub_entry_loads_the_local_file(weights, pca, release_file) -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    model = torch.hub.load(str(repo), "apgem", source="local", weights=str(release_file))
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(images), ref_apgem(images, weights, pca), **TOL)
    assert model.eval_preprocessing.describe() == "native size"
