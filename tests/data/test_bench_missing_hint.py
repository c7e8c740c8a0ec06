"""Messages about missing data point where that data comes from: the synthetic benchmark is generated
here (`vprlab synth`, `make quickstart`); a real one (Pitts30k, Nordland) is downloaded, as
docs/evaluation.md's benchmark table says. The NetVLAD release is named as its URL serves it."""

from __future__ import annotations

import pytest
import torch
from release_reference import forbid_network

from vprlab.data.benchmark_readers import load_npy_benchmark
from vprlab.utils.errors import DownloadError, MissingFileError


@pytest.mark.parametrize("name, prefix", [("pitts30k_test", None), ("nordland", "Nordland")])
def test_a_missing_real_benchmark_points_to_the_docs_not_to_quickstart(tmp_path, name, prefix):
    with pytest.raises(MissingFileError) as error:
        load_npy_benchmark(tmp_path / "nowhere", name=name, prefix=prefix)
    message = str(error.value)
    assert "quickstart" not in message and "vprlab synth" not in message
    assert "docs/evaluation.md's benchmark table" in message and str(tmp_path / "nowhere") in message
    (tmp_path / "present").mkdir()  # the root is there but not the lists
    with pytest.raises(MissingFileError, match="docs/evaluation.md's benchmark table"):
        load_npy_benchmark(tmp_path / "present", name=name, prefix=prefix)


def test_a_missing_synthetic_benchmark_says_how_to_generate_it(tmp_path):
    with pytest.raises(MissingFileError, match=r"generate it with `vprlab synth --root <data_dir>/synthetic` \(or `make quickstart`\)"):
        load_npy_benchmark(tmp_path / "nowhere", name="synthetic")


def test_the_netvlad_download_message_names_the_file_the_url_serves(tmp_path, monkeypatch):
    from vprlab.pretrained.catalog import published_model
    from vprlab.pretrained.load import release_file

    spec = published_model("netvlad_vgg16_pitts30k")
    assert spec.url.endswith("/Pitts30K_struct.mat") and spec.download_name == "Pitts30K_struct.mat"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    forbid_network(monkeypatch)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(DownloadError) as error:
        release_file(spec.name)
    message = str(error.value)
    assert "fetch Pitts30K_struct.mat elsewhere" in message and "pretrained.path=/path/Pitts30K_struct.mat" in message
    # The cache keeps hloc's name for the file (so a copy hloc downloaded is found).
    assert f"copy it to {tmp_path / 'hub' / 'netvlad' / 'VGG16-NetVLAD-Pitts30K.mat'}" in message
    assert published_model("cosplace_resnet18_32").download_name == published_model("cosplace_resnet18_32").file_name
