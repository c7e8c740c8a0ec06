"""`vprlab data list|format|verify` and the verified column of `vprlab benchmarks` (formatters faked here:
the real ones live in vprlab.data.formatters and have their own tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprlab.commands import data as data_cmd
from vprlab.commands.benchmarks import benchmark_table
from vprlab.data.download import FolderExistsError
from vprlab.data.sources import SF_LANDMARK_POSES, SOURCES, config_names, get_source
from vprlab.data.verify import MANIFEST_NAME
from vprlab.utils.errors import MissingFileError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(f"{p.parent.name}/{p.stem}" for group in ("dataset", "benchmark") for p in (REPO / "conf" / group).glob("*.yaml"))


def test_every_config_is_in_the_catalog():
    assert {"benchmark/sf_landmark", "benchmark/baidu", "benchmark/tokyo247", "dataset/gsv_cities"} <= set(CONFIGS)
    missing = sorted(set(CONFIGS) - config_names())
    assert missing == [], f"configs with no catalog entry in vprlab.data.sources: {missing}"


def test_the_catalog_names_each_formatter_and_every_formatter_is_a_config():
    from vprlab.data.formatters import FORMATTERS

    named = {source.name: source.formatter for source in SOURCES if source.formatter}
    assert {name: f for name, f in named.items() if f not in FORMATTERS} == {}
    assert named["svox"] == "svox_all" and named["sf_xl"] == "sfxl_v1" and named["msls"] == "msls_val_all"
    # no alias: every formatter key is the name of a config the catalog covers (one name, in one place)
    assert set(FORMATTERS) - {config.split("/", 1)[1] for config in config_names()} == set()


def test_sf_landmark_downloads_the_query_poses_its_formatter_reads():
    from vprlab.data.formatters.folder_sets import SF_POSES_ARCHIVE

    files = {f.file_name: f for f in get_source("sf_landmark").files}
    assert files[SF_POSES_ARCHIVE].url == "http://www.ok.sc.e.titech.ac.jp/~torii/project/vlocalization/icons/reference_poses_598.zip"
    assert files[SF_POSES_ARCHIVE].extract and "BuildingQueryImagesCartoIDCorrected-Upright.zip" in files
    assert len([name for name in files if name.startswith("PCIs_")]) == 139


def test_catalog_entries_say_how_and_where():
    for source in SOURCES:
        assert source.method in ("http", "kaggle", "gdrive", "rsync", "manual", "request", "synthetic", "shared", "own")
        assert source.source and source.terms and source.size, source.name
        if source.method == "http":
            assert source.files, source.name
        for remote in source.files:  # https, except the SF-Landmark query poses (served over http only)
            assert remote.url.startswith("https://") or remote.url == SF_LANDMARK_POSES, remote.url
        if source.method in ("request", "manual"):
            assert "<raw>" in source.request and "vprlab data" in source.request, source.name
        if source.method == "rsync":
            assert source.rsync_source.startswith("rsync://vandaldata.polito.it/sf_xl/VPR-datasets-downloader/")


def test_data_list_shows_every_config_and_exits_0(tmp_path):
    env = {**os.environ, "VPRLAB_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "vprlab", "data", "list"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for config in CONFIGS:
        row = next((line for line in lines if line.split()[1:2] == [config]), None)
        assert row is not None, f"{config} not listed"
    msls = next(line.split() for line in lines if line.split()[1:2] == ["benchmark/msls_val"])
    assert msls[:6] == ["msls_val", "benchmark/msls_val", "validation", "http", "1.2", "GB"]
    assert msls[6:] == ["no", "-", str(tmp_path / "data" / "msls")]
    assert "terms: https://www.mapillary.com/dataset/places" in result.stdout


def _fake_formatters(monkeypatch, **formatters) -> list:
    calls = []

    def wrap(fn):
        def run(raw, out):
            calls.append((Path(raw), Path(out)))
            return fn(Path(raw), Path(out))
        return run

    module = types.ModuleType("vprlab.data.formatters")
    module.FORMATTERS = {name: wrap(fn) for name, fn in formatters.items()}
    monkeypatch.setitem(sys.modules, "vprlab.data.formatters", module)
    import vprlab.data

    monkeypatch.setattr(vprlab.data, "formatters", module, raising=False)
    return calls


def _utm_benchmark(raw: Path, out: Path) -> None:
    """A formatter stand-in: VPR-datasets-downloader names from a raw folder of numbered images."""
    for folder in ("database", "queries"):
        (out / folder).mkdir(parents=True)
        for source in sorted((raw / folder).iterdir()):
            east = 100.0 * int(source.stem)
            Image.open(source).save(out / folder / f"@{east:.2f}@5000.00@56@J@@@@@@@@@@@.jpg")


def _raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw" / "custom"
    for folder in ("database", "queries"):
        (raw / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(raw / folder / f"{i}.jpg")
    return raw


def test_format_dispatches_writes_the_config_root_and_verifies(tmp_path, monkeypatch, capsys):
    calls = _fake_formatters(monkeypatch, custom=_utm_benchmark)
    data_dir = tmp_path / "data"
    raw = _raw(tmp_path)
    assert data_cmd.main(["format", "custom", "--from", str(raw), "--data-dir", str(data_dir), "--no-progress"]) == 0
    out = data_dir / "custom"
    assert calls == [(raw, data_dir / ".custom.formatting")]  # written beside the target, then renamed
    assert len(list((out / "database").iterdir())) == 3 and not (data_dir / ".custom.formatting").exists()
    assert (out / MANIFEST_NAME).is_file()
    assert "benchmark/custom: verified (3 database images, 3 queries" in capsys.readouterr().out

    row = next(r for r in benchmark_table(data_dir, check=False) if r["name"] == "custom")
    assert row["verified"] == "verified"
    next((out / "queries").iterdir()).unlink()
    row = next(r for r in benchmark_table(data_dir, check=False) if r["name"] == "custom")
    assert row["verified"].startswith("changed: 1 missing: queries/@")
    assert data_cmd.main(["verify", "custom", "--data-dir", str(data_dir), "--no-progress", "--update"]) == 0


def test_format_without_from_reads_where_download_put_the_raw_data(tmp_path, monkeypatch):
    """`vprlab data format NAME` after `vprlab data download NAME`: the raw folder is <data_dir>/raw/NAME."""
    calls = _fake_formatters(monkeypatch, custom=_utm_benchmark)
    data_dir = tmp_path / "data"
    with pytest.raises(MissingFileError, match=r"raw/custom is not a folder.*or name the raw folder with --from"):
        data_cmd.main(["format", "custom", "--data-dir", str(data_dir), "--no-verify"])
    raw = _raw(data_dir)  # data_dir/raw/custom
    assert data_cmd.main(["format", "custom", "--data-dir", str(data_dir), "--no-verify"]) == 0
    assert calls == [(raw, data_dir / ".custom.formatting")]


def test_format_never_overwrites_other_contents(tmp_path, monkeypatch):
    _fake_formatters(monkeypatch, custom=_utm_benchmark)
    data_dir = tmp_path / "data"
    raw = _raw(tmp_path)
    out = data_dir / "custom"
    (out / "database").mkdir(parents=True)
    clash = out / "database" / "@0.00@5000.00@56@J@@@@@@@@@@@.jpg"
    clash.write_bytes(b"someone else's file")
    with pytest.raises(FolderExistsError, match=r"would replace with other contents, e\.g\. database/@0\.00@5000"):
        data_cmd.main(["format", "custom", "--from", str(raw), "--data-dir", str(data_dir), "--no-verify"])
    assert clash.read_bytes() == b"someone else's file" and sorted(os.listdir(out / "database")) == [clash.name]


def test_format_uses_the_catalog_formatter_of_a_config_name(tmp_path, monkeypatch):
    def lists_only(raw, out):
        out.mkdir()
        np.save(out / "msls_val_dbImages.npy", np.array(["train_val/cph/database/images/a.jpg"]))

    calls = _fake_formatters(monkeypatch, msls_val=lists_only)
    data_dir = tmp_path / "data"
    raw = tmp_path / "raw" / "msls_val"
    raw.mkdir(parents=True)
    assert data_cmd.main(["format", "msls_val", "--from", str(raw), "--data-dir", str(data_dir), "--no-verify"]) == 0
    assert calls == [(raw, data_dir / ".msls.formatting")]
    assert np.load(data_dir / "msls" / "msls_val_dbImages.npy").tolist() == ["train_val/cph/database/images/a.jpg"]


def test_unknown_dataset_names_the_catalog():
    from vprlab.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'; `vprlab data list` shows them: gsv_cities, "):
        data_cmd.main(["download", "nope"])


def test_data_doc_lists_every_catalog_entry_with_how_it_is_obtained():
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in (REPO / "docs" / "data.md").read_text().splitlines()
            if line.startswith("| `")}
    for source in SOURCES:
        assert source.name in rows, f"docs/data.md has no row for {source.name}"
        assert rows[source.name].split()[0] == source.method, source.name


def test_no_config_or_doc_names_the_deleted_download_scripts():
    deleted = ("download_eynsham.py", "download_st_lucia.py", "download_nordland.py")
    files = [*(REPO / "conf").rglob("*.yaml"), *(REPO / "docs").rglob("*.md"), REPO / "README.md"]
    found = [f"{path.relative_to(REPO)}: {name}" for path in files for name in deleted if name in path.read_text()]
    assert found == []


def test_download_command_fetches_from_the_catalog_url_and_names_the_next_step(tmp_path, monkeypatch, capsys):
    import io
    import zipfile
    from dataclasses import replace

    from local_http import LocalServer

    from vprlab.data import sources

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("pitts30k-val/pitts30k_val_dbImages.npy", b"lists")
        zf.writestr("pitts30k-val/images/000/000000_pitch1_yaw1.jpg", b"jpeg")
    with LocalServer() as server:
        server.files["/v0.1/pitts30k-val.zip"] = buffer.getvalue()
        entry = sources.get_source("pitts30k_val")
        local = replace(entry, files=(replace(entry.files[0], url=server.url("/v0.1/pitts30k-val.zip")),))
        monkeypatch.setitem(sources._BY_NAME, "pitts30k_val", local)
        data_dir = tmp_path / "data"
        assert data_cmd.main(["download", "pitts30k_val", "--data-dir", str(data_dir), "--no-progress"]) == 0
    raw = data_dir / "raw" / "pitts30k_val"
    assert (raw / "pitts30k-val" / "images" / "000" / "000000_pitch1_yaw1.jpg").read_bytes() == b"jpeg"
    out = capsys.readouterr().out
    assert f"next: vprlab data format pitts30k_val --from {raw}" in out
    assert server.requests == [("/v0.1/pitts30k-val.zip", None)]


def test_verify_synthetic_reads_both_configs_and_records_them(tmp_path, capsys):
    from conftest import TINY_SYNTHETIC

    from vprlab.data.synthetic import generate_synthetic

    data_dir = tmp_path / "data"
    generate_synthetic(data_dir / "synthetic", **TINY_SYNTHETIC)
    assert data_cmd.main(["verify", "synthetic", "--data-dir", str(data_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dataset/synthetic: verified (" in out and "benchmark/synthetic: verified (12 database images, 12 queries" in out
    rows = {r["config"]: r for r in data_cmd.data_rows(str(data_dir))}
    assert rows["dataset/synthetic"]["verified"] == rows["benchmark/synthetic"]["verified"] == "verified"


def test_a_formatter_that_writes_nothing_is_an_error_not_an_empty_dataset(tmp_path, monkeypatch):
    from vprlab.utils.errors import DataError

    _fake_formatters(monkeypatch, custom=lambda raw, out: None)
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(DataError, match=r"the custom formatter wrote nothing from"):
        data_cmd.main(["format", "custom", "--from", str(raw), "--data-dir", str(tmp_path / "data")])
    assert not (tmp_path / "data" / "custom").exists() and not (tmp_path / "data" / ".custom.formatting").exists()


def _corridor_copy(tmp_path: Path) -> Path:
    """A writable copy of the shared folder holding the real corridor set (as a shared folder can be writable)."""
    import shutil

    shared = tmp_path / "shared"
    shutil.copytree(REPO.parent / "shared" / "data" / "real" / "corridor_vprbench", shared / "data" / "real" / "corridor_vprbench")
    return shared


def test_verify_never_writes_into_the_shared_data_even_when_writable(tmp_path, monkeypatch, capsys):
    shared = _corridor_copy(tmp_path)
    root = shared / "data" / "real" / "corridor_vprbench"
    before = sorted(p.relative_to(shared) for p in shared.rglob("*"))
    monkeypatch.setenv("VPRLAB_SHARED_DIR", str(shared))
    data_dir = tmp_path / "data"
    assert data_cmd.main(["verify", "real_corridor", "--data-dir", str(data_dir), "--no-progress"]) == 0
    assert sorted(p.relative_to(shared) for p in shared.rglob("*")) == before  # nothing written there
    stored = list((data_dir / ".vprlab-manifests").glob("corridor_vprbench-*.json"))
    assert len(stored) == 1
    out = capsys.readouterr().out
    assert f"benchmark/real_corridor: verified (111 database images, 111 queries, every image decodes); manifest {stored[0]}" in out
    assert "kept outside the root" in out
    import json

    manifest = json.loads(stored[0].read_text())
    assert "real_corridor" in manifest["verified"] and "gt.csv" in manifest["files"]
    rows = {r["config"]: r for r in data_cmd.data_rows(str(data_dir))}
    assert rows["benchmark/real_corridor"]["verified"] == "verified"
    assert rows["benchmark/real_gardenspoint"]["verified"] == "-"  # not in the copy
    row = next(r for r in benchmark_table(data_dir, check=False) if r["name"] == "real_corridor")
    assert row["verified"] == "verified"
    # a change in the shared copy is still noticed through the manifest kept outside it
    image = sorted((root / "queries").iterdir())[0]
    image.write_bytes(image.read_bytes() + b"\0")
    row = next(r for r in benchmark_table(data_dir, check=False) if r["name"] == "real_corridor")
    assert row["verified"] == f"changed: 1 changed: queries/{image.name}"


def test_verify_of_the_read_only_shared_data_writes_only_into_the_data_dir(tmp_path, monkeypatch):
    shared = REPO.parent / "shared"
    if not (shared / "data" / "real" / "gardenspoint_sample10").is_dir():
        pytest.skip("no shared folder next to the checkout")
    monkeypatch.delenv("VPRLAB_SHARED_DIR", raising=False)
    monkeypatch.delenv("VPRLAB_ROOT", raising=False)
    data_dir = tmp_path / "data"
    assert data_cmd.main(["verify", "real_gardenspoint", "--data-dir", str(data_dir), "--no-progress"]) == 0
    assert not (shared / "data" / "real" / "gardenspoint_sample10" / MANIFEST_NAME).exists()
    assert [p.name.split("-")[0] for p in (data_dir / ".vprlab-manifests").iterdir()] == ["gardenspoint_sample10"]


def test_format_of_a_catalog_name_uses_the_formatter_the_catalog_names(tmp_path, monkeypatch):
    def gallery_only(raw, out):
        (out / "gallery").mkdir(parents=True)
        (out / "gallery" / "a.txt").write_text("a")

    calls = _fake_formatters(monkeypatch, svox_all=gallery_only)  # no "svox" key: the catalog says svox_all
    data_dir = tmp_path / "data"
    raw = tmp_path / "raw" / "svox"
    raw.mkdir(parents=True)
    assert data_cmd.main(["format", "svox", "--from", str(raw), "--data-dir", str(data_dir), "--no-verify"]) == 0
    assert calls == [(raw, data_dir / "svox" / "images" / ".test.formatting")]
    assert (data_dir / "svox" / "images" / "test" / "gallery" / "a.txt").read_text() == "a"


def test_data_doc_names_every_set_given_on_request_and_an_example_per_route():
    text = (REPO / "docs" / "data.md").read_text()
    paragraph = text.split("Need a request to their authors:", 1)[1].split("\n\n", 1)[0]
    for source in SOURCES:
        if source.method == "request":
            assert all(f"`{config.split('/', 1)[1]}`" in paragraph for config in source.configs), source.name
    examples = text.split("## From nothing to a verified benchmark: two commands", 1)[1].split("\n## ", 1)[0]
    for method in ("http", "rsync", "kaggle", "manual", "request"):  # each route: a set of it formatted
        assert any(f"vprlab data format {s.name} --from" in examples for s in SOURCES if s.method == method), method
    assert "[data_formats.md](data_formats.md)" in text
