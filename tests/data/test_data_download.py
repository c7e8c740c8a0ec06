"""`vprlab data download`: archives built here with the sources' real folder structure and names, served
by a local HTTP server on 127.0.0.1 (no test reaches another address)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from data_gsv_tree import write_gsv_tree
from local_http import LocalServer, zip_bytes
from PIL import Image

from vprlab.data import download as dl
from vprlab.data.download import (
    DiskSpaceError,
    FolderExistsError,
    download_source,
    extract_archives,
    fetch_file,
    unsafe_members,
)
from vprlab.data.sources import RemoteFile, get_source
from vprlab.utils.errors import DataError, DownloadError, MissingFileError

MSLS_KEYS = ["zQwUmnL3q5dJHNpe1mHCQA", "a1b2C3d4E5f6G7h8I9j0kL"]


def _jpeg(value: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def msls_val_zip() -> bytes:
    """The OpenVPRLab msls-val.zip layout: msls-val/{cph,sf}/{database,query}/images/<key>.jpg + the .npy lists."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for city in ("cph", "sf"):
            for part in ("database", "query"):
                for i, key in enumerate(MSLS_KEYS):
                    zf.writestr(f"msls-val/{city}/{part}/images/{key}.jpg", _jpeg(40 + i))
        for lst in ("dbImages", "qImages", "gt_25m"):
            npy = io.BytesIO()
            np.save(npy, np.array([f"cph/database/images/{MSLS_KEYS[0]}.jpg"]))
            zf.writestr(f"msls-val/msls_val_{lst}.npy", npy.getvalue())
    return buffer.getvalue()


@pytest.fixture
def server():
    with LocalServer() as running:
        yield running


@pytest.fixture
def msls(server):
    """The msls_val catalog entry pointed at the local server."""
    data = msls_val_zip()
    server.files["/v0.1/msls-val.zip"] = data
    source = get_source("msls_val")
    remote = replace(source.files[0], url=server.url("/v0.1/msls-val.zip"), size_bytes=len(data))
    return replace(source, files=(remote,), size_bytes=len(data)), data


def test_full_download_unpacks_the_release_layout_and_removes_the_archive(msls, tmp_path):
    source, data = msls
    raw = download_source(source, tmp_path / "raw" / "msls_val", progress=False)
    assert raw == tmp_path / "raw" / "msls_val"
    for city in ("cph", "sf"):
        assert (raw / "msls-val" / city / "query" / "images" / f"{MSLS_KEYS[1]}.jpg").read_bytes() == _jpeg(41)
    assert np.load(raw / "msls-val" / "msls_val_dbImages.npy").tolist() == [f"cph/database/images/{MSLS_KEYS[0]}.jpg"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["msls_val"]  # no archive, .part or staging left
    record = json.loads((raw / ".vprlab-download.json").read_text())
    assert record["urls"] == [source.files[0].url]
    assert record["archives"] == [{"file": "msls-val.zip", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]


def test_cut_transfer_is_kept_and_resumed_with_range(server, tmp_path):
    data = os.urandom(3 * (1 << 20) + 123)  # several read blocks
    server.files["/f.zip"] = data
    server.cut_next["/f.zip"] = 1
    remote = RemoteFile(server.url("/f.zip"), "f.zip", size_bytes=len(data))
    dest = tmp_path / "f.zip"
    with pytest.raises(DownloadError, match=r"was cut .* run the same command\s+again to resume"):
        fetch_file(remote, dest, progress=False, resume_attempts=0)
    part = tmp_path / "f.zip.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(data)
    half = part.stat().st_size
    assert data.startswith(part.read_bytes())
    fetch_file(remote, dest, progress=False)
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("/f.zip", f"bytes={half}-")


def test_cut_transfer_resumes_automatically_within_one_call(server, tmp_path):
    data = os.urandom(2 * (1 << 20))
    server.files["/g.tar"] = data
    server.cut_next["/g.tar"] = 2
    fetch_file(RemoteFile(server.url("/g.tar"), "g.tar"), tmp_path / "g.tar", progress=False)
    assert (tmp_path / "g.tar").read_bytes() == data
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and len(ranges) == 3


def test_a_server_that_ignores_range_is_read_from_the_start(server, tmp_path):
    data = os.urandom(1 << 20)
    server.files["/h.zip"] = data
    (tmp_path / "h.zip.part").write_bytes(b"stale bytes of another attempt")
    server.ignore_range = True
    fetch_file(RemoteFile(server.url("/h.zip"), "h.zip"), tmp_path / "h.zip", progress=False)
    assert (tmp_path / "h.zip").read_bytes() == data


def test_wrong_checksum_is_refused_and_the_file_not_taken(msls, tmp_path):
    source, data = msls
    assert hashlib.sha256(data).hexdigest() != "0" * 64
    bad = replace(source, files=(replace(source.files[0], checksum="sha256:" + "0" * 64),))
    raw = tmp_path / "raw" / "msls_val"
    with pytest.raises(DataError, match=r"msls-val.zip has sha256 [0-9a-f]{64} where 0{64} is published"):
        download_source(bad, raw, progress=False)
    assert not raw.exists()
    leftovers = [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    assert leftovers == []  # neither the file nor its .part stays
    good = replace(source, files=(replace(source.files[0], checksum="sha256:" + hashlib.sha256(data).hexdigest()),))
    assert download_source(good, raw, progress=False).is_dir()


def test_full_disk_is_refused_before_the_transfer(msls, server, tmp_path, monkeypatch):
    source, data = msls
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: _usage(free=100))
    raw = tmp_path / "raw" / "msls_val"
    with pytest.raises(DiskSpaceError, match=rf"needs .*\({2 * len(data)} bytes\) in {tmp_path / 'raw'} .*\(100 bytes\) free"):
        download_source(source, raw, progress=False)
    assert not raw.exists() and server.requests == []  # refused before any byte was asked for


def test_full_disk_from_content_length_when_the_catalog_has_no_size(server, tmp_path, monkeypatch):
    server.files["/big.zip"] = b"x" * 5000
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: _usage(free=10))
    with pytest.raises(DiskSpaceError, match=r"needs 5.0 KB \(5000 bytes\)"):
        fetch_file(RemoteFile(server.url("/big.zip"), "big.zip"), tmp_path / "big.zip", progress=False)
    assert not (tmp_path / "big.zip").exists()


def _usage(free: int):
    from collections import namedtuple

    return namedtuple("usage", "total used free")(10**12, 0, free)


def test_offline_is_one_attempt_naming_the_url_and_the_place_for_the_file(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = RemoteFile(f"http://127.0.0.1:{port}/msls-val.zip", "msls-val.zip")
    dest = tmp_path / "dl" / "msls-val.zip"
    with pytest.raises(DownloadError, match=rf"could not download http://127.0.0.1:{port}/msls-val.zip .* put it at {dest}"):
        fetch_file(remote, dest, progress=False)


def test_an_archive_member_escaping_the_target_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"SPEDTEST/ref/00001.jpg": _jpeg(), "SPEDTEST/../../escaped.txt": b"x"}))
    target = tmp_path / "out" / "sped"
    target.parent.mkdir()
    with pytest.raises(DataError, match=r"leaves the target folder, e\.g\. 'SPEDTEST/\.\./\.\./escaped\.txt'"):
        extract_archives([archive], target)
    assert not target.exists() and not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the staging folder is gone too

    absolute = tmp_path / "abs.zip"
    absolute.write_bytes(zip_bytes({"/etc/vprlab-test": b"x"}))
    assert unsafe_members(absolute) == ["/etc/vprlab-test"]


def test_a_tar_symlink_pointing_out_is_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        ok = tarfile.TarInfo("svox/images/test/gallery/a.jpg")
        ok.size = 3
        tf.addfile(ok, io.BytesIO(b"abc"))
        inside = tarfile.TarInfo("svox/images/test/queries/a.jpg")
        inside.type, inside.linkname = tarfile.SYMTYPE, "../gallery/a.jpg"
        tf.addfile(inside)
        out = tarfile.TarInfo("svox/images/test/queries/b.jpg")
        out.type, out.linkname = tarfile.SYMTYPE, "../../../../../home"
        tf.addfile(out)
    assert unsafe_members(archive) == ["svox/images/test/queries/b.jpg -> ../../../../../home"]
    with pytest.raises(DataError, match="refusing to unpack"):
        extract_archives([archive], tmp_path / "svox")
    assert not (tmp_path / "svox").exists()


def test_a_complete_folder_is_never_overwritten(msls, tmp_path):
    source, _ = msls
    raw = tmp_path / "raw" / "msls_val"
    raw.mkdir(parents=True)
    (raw / "mine.txt").write_text("keep")
    with pytest.raises(FolderExistsError, match=rf"{raw} already exists; vprlab never overwrites a complete folder\. "
                                                r"Format it with `vprlab data format msls_val --from"):
        download_source(source, raw, progress=False)
    assert [p.name for p in raw.iterdir()] == ["mine.txt"] and (raw / "mine.txt").read_text() == "keep"


def test_from_file_unpacks_a_kaggle_archive_the_user_downloaded(tmp_path):
    tree = write_gsv_tree(tmp_path / "tree")
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(tree).as_posix())
    raw = download_source(get_source("gsv_cities"), tmp_path / "raw" / "gsv_cities", from_file=archive)
    assert (raw / "Dataframes" / "London.csv").read_text() == (tree / "Dataframes" / "London.csv").read_text()
    assert len(list((raw / "Images" / "Boston").glob("*.jpg"))) == 9


def test_kaggle_without_the_package_says_how_to_download_by_hand(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_kaggle(name, *args, **kwargs):
        if name.startswith("kaggle"):
            raise ImportError("no kaggle")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kaggle)
    with pytest.raises(MissingFileError, match=r"https://www.kaggle.com/datasets/amaralibey/gsv-cities .*"
                                               r"vprlab data download gsv_cities --from-file"):
        download_source(get_source("gsv_cities"), tmp_path / "raw" / "gsv_cities")


def test_rsync_sets_run_the_documented_command_or_print_it(tmp_path, monkeypatch):
    source = get_source("eynsham")
    raw = tmp_path / "raw" / "eynsham"
    monkeypatch.setattr(dl.shutil, "which", lambda name: None)
    with pytest.raises(MissingFileError, match=r"rsync -rhz --info=progress2 --partial --ignore-existing "
                                               r"rsync://vandaldata.polito.it/sf_xl/VPR-datasets-downloader/eynsham/"):
        download_source(source, raw)
    assert not raw.exists()

    calls = []

    def fake_rsync(command):
        calls.append(command)
        Path(command[-1], "images", "test", "database").mkdir(parents=True)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(dl.shutil, "which", lambda name: "/usr/bin/rsync")
    assert download_source(source, raw, run=fake_rsync) == raw
    assert (raw / "images" / "test" / "database").is_dir()
    assert calls[0][:2] == ["rsync", "-rhz"] and calls[0][-2] == f"{source.rsync_source}/"


def test_on_request_sets_say_where_to_ask_and_where_to_put_the_files(tmp_path):
    with pytest.raises(MissingFileError, match=r"pitts30k_test cannot be downloaded by vprlab\. Ask the authors of NetVLAD .*"
                                               rf"{tmp_path / 'raw'}/queries_real/ .*{tmp_path / 'raw'}/datasets/"):
        download_source(get_source("pitts30k_test"), tmp_path / "raw")


def test_tokyo247_fetches_its_public_queries_kept_zipped_and_names_the_files_on_request(tmp_path, monkeypatch, capsys):
    from vprlab.commands import data as data_cmd
    from vprlab.data import sources

    query_zip = zip_bytes({"247query_subset_v2/00001.jpg": b"jpeg", "247query_subset_v2/00001.csv": b"00001.jpg,35.6,139.7\n"})
    entry = sources.get_source("tokyo247")
    assert entry.method == "request" and [f.url for f in entry.files] == [sources.TOKYO247_QUERIES]
    with LocalServer() as server:
        server.files["/Tokyo247/queries/247query_subset_v2.zip"] = query_zip
        local = replace(entry, files=(replace(entry.files[0], url=server.url("/Tokyo247/queries/247query_subset_v2.zip")),))
        monkeypatch.setitem(sources._BY_NAME, "tokyo247", local)
        assert data_cmd.main(["download", "tokyo247", "--data-dir", str(tmp_path), "--no-progress"]) == 0
    raw = tmp_path / "raw" / "tokyo247"
    assert (raw / "247query_subset_v2.zip").read_bytes() == query_zip  # read in place by the formatter
    assert not (raw / "247query_subset_v2").exists()
    out = capsys.readouterr().out
    assert "ask the Tokyo 24/7 authors for the link" in out
    assert f"{raw}/tokyo247/03814/ ... {raw}/tokyo247/03829/" in out and f"{raw}/datasets/tokyo247.mat" in out
    assert f"`vprlab data format tokyo247 --from {raw}`" in out


def test_a_set_that_cannot_be_downloaded_leaves_no_folder(tmp_path):
    for name in ("pitts30k_test", "nordland", "sf_xl", "synthetic"):
        with pytest.raises(MissingFileError):
            download_source(get_source(name), tmp_path / "data" / "raw" / name)
    assert list(tmp_path.iterdir()) == []
