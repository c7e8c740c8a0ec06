"""`vprlab data verify`: published counts, ground truth against the image lists, every image decodes,
and a manifest that notices a later change (changed, missing and extra files named)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_gsv_tree import write_gsv_tree
from PIL import Image

from vprlab.data.verify import (
    MANIFEST_NAME,
    read_manifest,
    sha256_of,
    verification_status,
    verify_benchmark,
    verify_training_set,
)
from vprlab.utils.errors import DataError, MissingFileError


def utm_name(east: float, north: float) -> str:
    """VPR-datasets-downloader naming: @UTM_east@UTM_north@zone@letter@lat@lon@...@.jpg"""
    return f"@{east:.2f}@{north:.2f}@56@J@-27.5@153.0@@@@@@@@.jpg"


def write_utm_benchmark(root: Path, num_db: int = 4, num_queries: int = 2) -> Path:
    for folder, count, offset in (("database", num_db, 0.0), ("queries", num_queries, 3.0)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(root / folder / utm_name(100.0 * i + offset, 5000.0))
    return root


def st_lucia_cfg(root: Path, **changes) -> dict:
    cfg = {"format": "utm_folder", "root": str(root), "name": "st_lucia", "database": "database", "queries": "queries",
           "positive_radius_m": 25, "image_size": None, "queries_without_positive": "miss",
           "expected_num_db": 4, "expected_num_queries": 2, "strict_counts": False, "source": "test"}
    return {**cfg, **changes}


def test_verify_writes_a_manifest_of_every_file(tmp_path):
    root = write_utm_benchmark(tmp_path / "st_lucia" / "images" / "test")
    report = verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)
    assert (report.num_db, report.num_queries) == (4, 2)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert sorted(manifest["files"]) == files
    first = files[0]
    assert manifest["files"][first]["sha256"] == sha256_of(root / first)
    assert manifest["files"][first]["size"] == (root / first).stat().st_size
    assert manifest["verified"]["st_lucia"]["num_db"] == 4
    assert verification_status(root, "st_lucia") == "verified"
    assert verification_status(root, "other") == "unverified"


def test_a_later_change_is_noticed_and_named(tmp_path):
    root = write_utm_benchmark(tmp_path / "bench")
    verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)
    db = sorted((root / "database").iterdir())
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(db[1])  # same name, other pixels
    db[2].unlink()
    (root / "notes.txt").write_text("added later")
    status = verification_status(root, "st_lucia")
    assert status.startswith("changed: ")
    with pytest.raises(DataError, match=rf"1 changed: database/{db[1].name}; 1 missing: database/{db[2].name}; "
                                        r"1 extra: notes.txt"):
        verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)


def test_a_change_with_the_same_size_and_time_is_still_found_by_verify(tmp_path):
    import os

    root = write_utm_benchmark(tmp_path / "bench")
    verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)
    target = sorted((root / "database").iterdir())[0]
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # same size
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time: only a full re-hash sees it
    assert verification_status(root, "st_lucia") == "verified"  # the quick listing check trusts size + time
    with pytest.raises(DataError, match=rf"1 changed: database/{target.name}"):
        verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)


def test_update_records_the_new_state(tmp_path):
    root = write_utm_benchmark(tmp_path / "bench")
    verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)
    (root / "readme.txt").write_text("x")
    report = verify_benchmark("st_lucia", st_lucia_cfg(root), update=True, progress=False)
    assert report.changes.extra == ["readme.txt"]
    assert "readme.txt" in read_manifest(root)["files"]
    assert verification_status(root, "st_lucia") == "verified"


def test_counts_other_than_published_fail(tmp_path):
    root = write_utm_benchmark(tmp_path / "bench", num_db=3)
    with pytest.raises(DataError, match=r"has 3 database images where the published protocol has 4"):
        verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)
    assert not (root / MANIFEST_NAME).exists()


def test_an_undecodable_image_is_named(tmp_path):
    root = write_utm_benchmark(tmp_path / "bench")
    query = sorted((root / "queries").iterdir())[1]
    query.write_bytes(query.read_bytes()[:20])  # a truncated JPEG
    with pytest.raises(DataError, match=rf"1 image\(s\) missing or undecodable, e\.g\. {query}: "):
        verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False)
    assert not (root / MANIFEST_NAME).exists()


def test_npy_ground_truth_pointing_outside_the_database_fails(tmp_path):
    root = tmp_path / "SPEDTEST"
    for part in ("ref", "query"):
        (root / part).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / part / f"{i:05d}.jpg")
    np.save(root / "SPED_dbImages.npy", np.array(["ref/00000.jpg", "ref/00001.jpg"]))
    np.save(root / "SPED_qImages.npy", np.array(["query/00000.jpg", "query/00001.jpg"]))
    gt = np.empty(2, dtype=object)
    gt[0], gt[1] = np.array([0]), np.array([5])
    np.save(root / "SPED_gt.npy", gt, allow_pickle=True)
    cfg = {"format": "npy", "root": str(root), "name": "sped", "prefix": "SPED", "expected_num_db": 2, "expected_num_queries": 2}
    with pytest.raises(DataError, match=r"database \[0, 2\)"):
        verify_benchmark("sped", cfg, progress=False)


def test_duplicate_images_in_a_list_fail(tmp_path):
    root = tmp_path / "SPEDTEST"
    (root / "ref").mkdir(parents=True)
    (root / "query").mkdir()
    for part in ("ref", "query"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / part / "00000.jpg")
    np.save(root / "SPED_dbImages.npy", np.array(["ref/00000.jpg", "ref/00000.jpg"]))
    np.save(root / "SPED_qImages.npy", np.array(["query/00000.jpg"]))
    np.save(root / "SPED_gt.npy", np.array([[0]]))
    cfg = {"format": "npy", "root": str(root), "name": "sped", "prefix": "SPED", "expected_num_db": 2, "expected_num_queries": 1}
    with pytest.raises(DataError, match=r"1 database images listed twice"):
        verify_benchmark("sped", cfg, progress=False)


def test_missing_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(MissingFileError, match=r"root .* does not exist; download and format it first"):
        verify_benchmark("st_lucia", st_lucia_cfg(tmp_path / "nope"), progress=False)


def test_training_set_every_listed_image_decodes(tmp_path):
    root = write_gsv_tree(tmp_path / "gsv-cities")
    report = verify_training_set("gsv_cities", root, ["London", "Boston"], progress=False)
    assert report.num_images == 19  # LAYOUT in data_gsv_tree: 4+4+2 + 5+4
    assert verification_status(root, "gsv_cities") == "verified"
    victim = sorted((root / "Images" / "London").iterdir())[0]
    victim.unlink()
    (root / MANIFEST_NAME).unlink()
    with pytest.raises(DataError, match=rf"{victim}: missing"):
        verify_training_set("gsv_cities", root, ["London", "Boston"], progress=False)


def test_manifests_of_shared_or_unwritable_roots_are_kept_in_the_data_dir(tmp_path, monkeypatch):
    import hashlib

    from vprlab.data import verify as verify_mod

    shared, data_dir = tmp_path / "shared", tmp_path / "data"
    inside, own = shared / "data" / "real" / "corridor", tmp_path / "mine"
    inside.mkdir(parents=True)
    own.mkdir()
    assert verify_mod.manifest_store(own, data_dir, [shared]) is None
    assert verify_mod.manifest_path(own) == own / MANIFEST_NAME
    store = verify_mod.manifest_store(inside, data_dir, [shared])
    assert store == data_dir / ".vprlab-manifests"
    digest = hashlib.sha256(str(inside.resolve()).encode()).hexdigest()[:12]
    assert verify_mod.manifest_path(inside, store) == store / f"corridor-{digest}.json"
    monkeypatch.setattr(verify_mod.os, "access", lambda path, mode: Path(path) != own.resolve())
    assert verify_mod.manifest_store(own, data_dir, [shared]) == store  # a folder this user cannot write

    root = write_utm_benchmark(tmp_path / "st_lucia")
    kept = verify_mod.manifest_path(root, store)
    report = verify_benchmark("st_lucia", st_lucia_cfg(root), progress=False, manifest=kept)
    assert report.manifest == kept and not (root / MANIFEST_NAME).exists()
    assert verification_status(root, "st_lucia", kept) == "verified"
    assert verification_status(root, "st_lucia") == "unverified"  # nothing in the root itself
