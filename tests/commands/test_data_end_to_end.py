"""From nothing to a verified formatted benchmark with `vprlab data`, per route, without the network:
a toy raw archive in its source's real layout is served from 127.0.0.1 (tests/local_http.py; the
catalog URL patched to it) or by an rsync stand-in, then `download`, `format` (which verifies), the
benchmark loaded through its config with `load_benchmark`, `vprlab benchmarks` shows it verified, and a
changed image is named by `verify`. Bad input is a message with exit 2, never a traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from local_http import LocalServer, zip_bytes
from omegaconf import OmegaConf
from PIL import Image

from vprlab.commands import benchmarks as benchmarks_cmd
from vprlab.commands import data as data_cmd
from vprlab.data import sources
from vprlab.data.benchmarks import load_benchmark
from vprlab.data.formatters import latlon_to_utm
from vprlab.utils.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)  # the release's ground truth is a ragged list
    return buffer.getvalue()


def _serve(monkeypatch, server: LocalServer, name: str, archives: dict[str, bytes]) -> None:
    """The catalog entry ``name`` with each file's URL moved to the local server (same file names)."""
    entry = sources.get_source(name)
    files = []
    for remote in entry.files:
        if remote.file_name in archives:
            path = f"/{name}/{remote.file_name}"
            server.files[path] = archives[remote.file_name]
            files.append(replace(remote, url=server.url(path)))
    assert sorted(f.file_name for f in files) == sorted(archives)
    monkeypatch.setitem(sources._BY_NAME, name, replace(entry, files=tuple(files)))


def _toy_counts(monkeypatch, **counts: tuple[int, int]) -> None:
    """Verification enforces the published counts; a toy archive has fewer images, so the counts the
    toy must give replace the published ones (for the configs named here only)."""
    real = data_cmd.config_node

    def config_node(group, name, data_dir):
        node, spec = real(group, name, data_dir)
        if name in counts:
            node.expected_num_db, node.expected_num_queries = counts[name]
        return node, spec

    monkeypatch.setattr(data_cmd, "config_node", config_node)


def _load(name: str, data_dir: Path):
    node, _ = data_cmd.config_node("benchmark", name, data_dir)
    return load_benchmark(OmegaConf.to_container(node, resolve=True))


def _verified(name: str, data_dir: Path) -> str:
    return next(r for r in benchmarks_cmd.benchmark_table(data_dir, check=False) if r["name"] == name)["verified"]


def _run(*args: str, data_dir: Path) -> int:
    return data_cmd.main([*args, "--data-dir", str(data_dir), "--no-progress"])


@pytest.fixture(autouse=True)
def _no_env_roots(monkeypatch):
    for var in ("MSLS_ROOT", "ST_LUCIA_ROOT", "SF_LANDMARK_ROOT", "VPRLAB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- http zip: msls_val


def _msls_val_release() -> tuple[bytes, list[str], list[str], list[list[int]]]:
    """OpenVPRLab's msls-val.zip: msls-val/{cph,sf}/... images and the three release lists."""
    db = [f"cph/database/images/d{i}.jpg" for i in range(4)] + ["sf/database/images/d4.jpg", "sf/database/images/d5.jpg"]
    queries = ["cph/query/images/q0.jpg", "cph/query/images/q1.jpg", "sf/query/images/q2.jpg"]
    positives = [[0, 1], [3], [4, 5]]
    gt = np.empty(len(positives), dtype=object)
    for i, p in enumerate(positives):
        gt[i] = np.array(p)
    members = {f"msls-val/{p}": _jpeg((20 * i, 90, 150)) for i, p in enumerate(db + queries)}
    members["msls-val/msls_val_ref_image_names.npy"] = _npy(np.array(db))
    members["msls-val/msls_val_query_image_names.npy"] = _npy(np.array(queries))
    members["msls-val/msls_val_ground_truth_25m.npy"] = _npy(gt)
    return zip_bytes(members), db, queries, positives


def test_msls_val_download_format_verify_load(tmp_path, monkeypatch, capsys):
    archive, db, queries, positives = _msls_val_release()
    data_dir = tmp_path / "data"
    with LocalServer() as server:
        _serve(monkeypatch, server, "msls_val", {"msls-val.zip": archive})
        assert _run("download", "msls_val", data_dir=data_dir) == 0
    raw = data_dir / "raw" / "msls_val"
    assert f"next: vprlab data format msls_val --from {raw}" in capsys.readouterr().out

    _toy_counts(monkeypatch, msls_val=(6, 3))
    assert _run("format", "msls_val", "--from", str(raw), data_dir=data_dir) == 0
    out = capsys.readouterr().out
    assert "benchmark/msls_val: verified (6 database images, 3 queries, every image decodes)" in out

    bench = _load("msls_val", data_dir)  # the config as it is: root <data_dir>/msls
    root = data_dir / "msls"
    assert (bench.num_db, bench.num_queries) == (6, 3)
    assert [Path(p).relative_to(root).as_posix() for p in bench.db_paths] == db
    assert [Path(p).relative_to(root).as_posix() for p in bench.query_paths] == queries
    assert [sorted(p.tolist()) for p in bench.positives] == positives
    assert _verified("msls_val", data_dir) == "verified"

    changed = root / "sf" / "query" / "images" / "q2.jpg"
    changed.write_bytes(_jpeg((250, 0, 0)))
    assert _verified("msls_val", data_dir).startswith("changed: 1 changed: sf/query/images/q2.jpg")
    with pytest.raises(DataError, match=r"differs from its manifest .*1 changed: sf/query/images/q2\.jpg"):
        _run("verify", "msls_val", data_dir=data_dir)


def test_the_published_counts_are_enforced_on_a_toy_archive(tmp_path, monkeypatch):
    archive, *_ = _msls_val_release()
    data_dir = tmp_path / "data"
    with LocalServer() as server:
        _serve(monkeypatch, server, "msls_val", {"msls-val.zip": archive})
        assert _run("download", "msls_val", data_dir=data_dir) == 0
    with pytest.raises(DataError, match=r"18871"):
        _run("format", "msls_val", "--from", str(data_dir / "raw" / "msls_val"), data_dir=data_dir)
    assert _verified("msls_val", data_dir) == "unverified"


# --------------------------------------------------------------------------- http, several archives: sf_landmark


def test_sf_landmark_download_with_its_query_poses_format_verify_load(tmp_path, monkeypatch, capsys):
    db_pos = [(37.7750, -122.4190), (37.7760, -122.4180), (37.7800, -122.4100)]
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as tf:
        for i, (lat, lon) in enumerate(db_pos):
            data = _jpeg((40 * i, 100, 100))
            info = tarfile.TarInfo(f"00011000_00012000/0001{i}/x_y_pano{i}_{lat}_{lon}_b{i}_{i}_c{i}_090_010.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    db_utm = np.array([latlon_to_utm(*p)[:2] for p in db_pos])
    q_utm = np.array([db_utm[0] + [10, 10], db_utm[2] + [0, -30], db_utm[1] + [-5, 0]]).round(2)
    poses = "n id x y w z east north extra\n" + "".join(
        f"{i} q{i:04d} 0.1 0.2 0.3 0.9 {e} {n} 0\n" for i, (e, n) in enumerate(q_utm))
    archives = {
        "PCIs_00011000_00012000_3.tar": tar_buffer.getvalue(),
        "BuildingQueryImagesCartoIDCorrected-Upright.zip": zip_bytes(
            {f"BuildingQueryImagesCartoIDCorrected-Upright/q{i:04d}.jpg": _jpeg((0, 40 * i, 0)) for i in range(3)}),
        "reference_poses_598.zip": zip_bytes({"reference_poses_598/reference_poses_addTM_all_598.txt": poses.encode()}),
    }
    data_dir = tmp_path / "data"
    with LocalServer() as server:
        _serve(monkeypatch, server, "sf_landmark", archives)
        assert _run("download", "sf_landmark", data_dir=data_dir) == 0
        assert sorted(path for path, _ in server.requests) == sorted(f"/sf_landmark/{name}" for name in archives)
    raw = data_dir / "raw" / "sf_landmark"
    _toy_counts(monkeypatch, sf_landmark=(3, 3))
    assert _run("format", "sf_landmark", "--from", str(raw), data_dir=data_dir) == 0
    assert "benchmark/sf_landmark: verified (3 database images, 3 queries" in capsys.readouterr().out

    bench = _load("sf_landmark", data_dir)
    assert Path(bench.db_paths[0]).parent == data_dir / "san_francisco" / "images" / "test" / "database"
    key = lambda p: Path(p).name.split("@")[7]  # noqa: E731 - the pano / image id field
    d = np.hypot(*(q_utm[:, None, :] - db_utm[None, :, :]).transpose(2, 0, 1))  # independent: 25 m in UTM
    expected = {f"q{j:04d}": {f"pano{i}" for i in np.flatnonzero(row <= 25)} for j, row in enumerate(d)}
    found = {key(q): {key(bench.db_paths[i]) for i in pos} for q, pos in zip(bench.query_paths, bench.positives)}
    assert found == expected == {"q0000": {"pano0"}, "q0001": set(), "q0002": {"pano1"}}
    assert _verified("sf_landmark", data_dir) == "verified"


# --------------------------------------------------------------------------- rsync folder set: st_lucia


def _rsync_stand_in(tmp_path: Path, served: Path) -> Path:
    """An `rsync` on PATH that copies rsync://.../VPR-datasets-downloader/<name>/ from ``served``/<name>."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "rsync"
    script.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        f"prefix = {sources.RSYNC_SERVER + '/'!r}\n"
        "src, dest = sys.argv[-2], sys.argv[-1]\n"
        "assert src.startswith(prefix), src\n"
        f"shutil.copytree({str(served)!r} + '/' + src[len(prefix):].strip('/'), dest, dirs_exist_ok=True)\n"
    )
    script.chmod(0o755)
    return bin_dir


def test_st_lucia_download_format_verify_load(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(7)
    db = (rng.uniform(0, 150, (12, 2)) + 500000).round(2)
    q = (rng.uniform(0, 150, (5, 2)) + 500000).round(2)
    q[0] = db[3] + [0, 20.0]
    served = tmp_path / "server"  # the server folder: st_lucia/images/test/{database,queries}/
    for folder, positions, tag in (("database", db, "d"), ("queries", q, "q")):
        target = served / "st_lucia" / "images" / "test" / folder
        target.mkdir(parents=True)
        for i, (e, n) in enumerate(positions):
            (target / f"@{e:.2f}@{n:.2f}@56@J@@@{tag}{i}@@@@@@@@.jpg").write_bytes(_jpeg((10 * i, 50, 90)))
    monkeypatch.setenv("PATH", f"{_rsync_stand_in(tmp_path, served)}{os.pathsep}{os.environ['PATH']}")
    data_dir = tmp_path / "data"
    assert _run("download", "st_lucia", data_dir=data_dir) == 0
    raw = data_dir / "raw" / "st_lucia"
    assert f"next: vprlab data format st_lucia --from {raw}" in capsys.readouterr().out
    _toy_counts(monkeypatch, st_lucia=(12, 5))
    assert _run("format", "st_lucia", "--from", str(raw), data_dir=data_dir) == 0
    assert "benchmark/st_lucia: verified (12 database images, 5 queries" in capsys.readouterr().out

    bench = _load("st_lucia", data_dir)
    assert (bench.num_db, bench.num_queries) == (12, 5)
    tag = lambda p: Path(p).name.split("@")[7]  # noqa: E731
    d = np.hypot(*(q[:, None, :] - db[None, :, :]).transpose(2, 0, 1))
    expected = {f"q{j}": {f"d{i}" for i in np.flatnonzero(row <= 25)} for j, row in enumerate(d)}
    found = {tag(p): {tag(bench.db_paths[i]) for i in pos} for p, pos in zip(bench.query_paths, bench.positives)}
    assert found == expected and "d3" in expected["q0"]
    assert _verified("st_lucia", data_dir) == "verified"

    image = sorted((data_dir / "st_lucia" / "images" / "test" / "database").iterdir())[5]
    image.write_bytes(b"not a jpeg any more")
    with pytest.raises(DataError, match=rf"1 changed: database/{image.name}"):
        _run("verify", "st_lucia", data_dir=data_dir)


# --------------------------------------------------------------------------- bad input: a message, exit 2


@pytest.mark.parametrize("args,message", [
    (["download", "nosuchname"], "unknown dataset 'nosuchname'; `vprlab data list` shows them"),
    (["format", "st_lucia", "--from", "{tmp}/nowhere"], "--from {tmp}/nowhere is not a folder"),
    (["verify", "st_lucia"], "benchmark st_lucia: root {tmp}/data/st_lucia/images/test does not exist"),
])
def test_bad_input_is_a_message_with_exit_2(tmp_path, args, message):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VPRLAB_DATA_DIR": str(tmp_path / "data")}
    env.pop("ST_LUCIA_ROOT", None)
    result = subprocess.run([sys.executable, "-m", "vprlab", "data", *(a.format(tmp=tmp_path) for a in args)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message.format(tmp=tmp_path) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
