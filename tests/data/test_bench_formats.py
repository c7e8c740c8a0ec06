"""Every benchmark reader on a tiny tree written in its real on-disk format."""

from __future__ import annotations

import csv
import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF
from PIL import Image

from vprlab.data.benchmark_readers import (
    frame_numbers,
    list_images,
    load_frame_window_benchmark,
    load_gt_csv_benchmark,
    load_npy_benchmark,
    load_utm_folder_benchmark,
    positives_within_radius,
    record_gt_database,
    write_gt_csv,
)
from vprlab.data.benchmarks import BenchmarkCountWarning, load_benchmark


def _touch(path: Path, colour=(90, 120, 150)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), colour).save(path)
    return path


def _utm_name(east: float, north: float, extra: str = "") -> str:
    # @UTM_east@UTM_north@zone@letter@lat@lon@pano_id@tile@heading@pitch@roll@height@timestamp@note@.jpg
    return f"@{east:.2f}@{north:.2f}@17@T@40.44@-79.99@{extra}@@@@@@@@.jpg"


def _brute_force_radius(db: np.ndarray, queries: np.ndarray, radius: float) -> list[list[int]]:
    distances = np.hypot(queries[:, None, 0] - db[None, :, 0], queries[:, None, 1] - db[None, :, 1])
    return [np.flatnonzero(row <= radius).tolist() for row in distances]


# --------------------------------------------------------------------------- utm_folder


@pytest.fixture
def utm_tree(tmp_path):
    """images/test/{database,queries} in the VPR-methods-evaluation layout, some db images in a subfolder."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images" / "test"
    db = rng.uniform(0, 150, size=(40, 2)).round(2)
    queries = rng.uniform(0, 150, size=(12, 2)).round(2)
    queries[0] = db[3] + [15.0, 20.0]  # exactly 25 m from db 3: on the boundary, which counts
    queries[1] = db[5] + [15.0, 20.01]  # just outside
    queries[2] = [5000.0, 5000.0]  # far from everything: no positive
    for i, (e, n) in enumerate(db):
        sub = "part2/" if i % 3 == 0 else ""
        _touch(root / "database" / f"{sub}{_utm_name(e + 500000, n + 4400000, f'db{i}')}")
    for i, (e, n) in enumerate(queries):
        _touch(root / "queries" / _utm_name(e + 500000, n + 4400000, f"q{i}"))
    return root


def test_utm_positives_match_a_brute_force_distance_computation(utm_tree):
    bench = load_utm_folder_benchmark(utm_tree, "tiny_utm")
    assert bench.num_db == 40 and bench.num_queries == 12
    assert bench.db_paths == sorted(bench.db_paths)  # stable, sorted database order
    db_utm = np.array([[float(Path(p).name.split("@")[i]) for i in (1, 2)] for p in bench.db_paths])
    q_utm = np.array([[float(Path(p).name.split("@")[i]) for i in (1, 2)] for p in bench.query_paths])
    expected = _brute_force_radius(db_utm, q_utm, 25.0)
    assert [p.tolist() for p in bench.positives] == expected
    assert sum(len(p) for p in expected) > 12  # the check is not vacuous
    boundary_db = [i for i, p in enumerate(bench.db_paths) if "@db3@" in p][0]
    assert boundary_db in bench.positives[bench.query_paths.index(next(p for p in bench.query_paths if "@q0@" in p))]
    assert bench.num_queries_without_positive >= 1 and bench.has_ground_truth
    wider = load_utm_folder_benchmark(utm_tree, "tiny_utm", positive_radius_m=60)
    assert [p.tolist() for p in wider.positives] == _brute_force_radius(db_utm, q_utm, 60.0)


def test_radius_search_against_brute_force_on_random_points():
    rng = np.random.default_rng(1)
    db, queries = rng.uniform(0, 300, (500, 2)), rng.uniform(0, 300, (80, 2))
    found = positives_within_radius(db, queries, 25.0)
    assert [p.tolist() for p in found] == _brute_force_radius(db, queries, 25.0)


def test_images_paths_file_replaces_listing_a_huge_folder(utm_tree):
    names = sorted(p.name for p in (utm_tree / "queries").iterdir())
    chosen = names[:5][::-1]  # the file's order is kept
    (utm_tree / "queries_images_paths.txt").write_text("\n".join(chosen) + "\n")
    bench = load_utm_folder_benchmark(utm_tree, "listed")
    assert [Path(p).name for p in bench.query_paths] == chosen
    (utm_tree / "queries_images_paths.txt").write_text("missing/@1@2@@@@@@@@@@@@@.jpg\n")
    with pytest.raises(FileNotFoundError, match="queries_images_paths.txt lists 'missing/"):
        load_utm_folder_benchmark(utm_tree, "listed")


def test_file_names_without_utm_are_named(tmp_path):
    _touch(tmp_path / "database" / "plain.jpg")
    _touch(tmp_path / "queries" / "other.jpg")
    with pytest.raises(ValueError, match=r"plain\.jpg: the file name is not in the @UTM_east@UTM_north"):
        load_utm_folder_benchmark(tmp_path, "bad")
    with pytest.raises(FileNotFoundError, match="query images folder .*nowhere does not exist"):
        load_utm_folder_benchmark(tmp_path, "bad", queries="nowhere")


def test_msls_challenge_layout_without_ground_truth(tmp_path):
    """Raw MSLS test layout (test/<city>/{query,database}/images/<key>.jpg), read through its config."""
    for city in ("amman", "kampala"):
        for k in range(3):
            _touch(tmp_path / "test" / city / "database" / "images" / f"{city}DB{k}.jpg")
        _touch(tmp_path / "test" / city / "query" / "images" / f"{city}Q0.jpg")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / "benchmark" / "msls_challenge.yaml").msls_challenge
    cfg.root, cfg.strict_counts = str(tmp_path), False
    bench = load_benchmark(cfg)
    assert bench.num_db == 6 and bench.num_queries == 2
    assert not bench.has_ground_truth and bench.submission_format == "msls"
    assert all(len(p) == 0 for p in bench.positives)


# --------------------------------------------------------------------------- frames (Nordland)


def test_nordland_frame_window_from_downloader_names(tmp_path):
    """VPR-datasets-downloader Nordland: @0@<north>@@@@@<frame>@@@@@@@@.jpg, correct within 10 frames."""
    db_frames, q_frames = list(range(0, 60)), [0, 7, 25, 59, 80]
    for f in db_frames:
        _touch(tmp_path / "database" / f"@0@{f * 2.38:.1f}@@@@@{f}@@@@@@@@.jpg")
    for f in q_frames:
        _touch(tmp_path / "queries" / f"@0@{f * 2.38:.1f}@@@@@{f}@@@@@@@@.jpg")
    bench = load_frame_window_benchmark(tmp_path, "nordland_tiny", frame_threshold=10)
    frames_db = frame_numbers(bench.db_paths)
    frames_q = frame_numbers(bench.query_paths)
    assert sorted(frames_db.tolist()) == db_frames  # path order is by name, not by frame
    for q, positives in enumerate(bench.positives):
        expected = sorted(np.flatnonzero(np.abs(frames_db - frames_q[q]) <= 10).tolist())
        assert positives.tolist() == expected
    by_frame = dict(zip(frames_q.tolist(), bench.positives))
    assert len(by_frame[25]) == 21 and len(by_frame[0]) == 11 and len(by_frame[80]) == 0
    one = load_frame_window_benchmark(tmp_path, "nordland_tiny", frame_threshold=1)
    assert sorted(frames_db[one.positives[frames_q.tolist().index(7)]].tolist()) == [6, 7, 8]


def test_frame_numbers_from_plain_names_and_positions(tmp_path):
    paths = ["a/images-00010.png", "a/images-00020.png", "a/images-00100.png"]
    assert frame_numbers(paths).tolist() == [10, 20, 100]
    assert frame_numbers(paths, "position").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="no frame number"):
        frame_numbers(["a/summer.png"])


def test_nordland_configs_follow_the_boq_readme():
    from omegaconf import OmegaConf

    star = OmegaConf.load(CONF / "benchmark" / "nordland.yaml").nordland
    two_stars = OmegaConf.load(CONF / "benchmark" / "nordland_10frames.yaml").nordland_10frames
    assert star.format == "npy" and star.expected_num_db == 27592 and star.expected_num_queries == 2760
    assert two_stars.format == "frames" and two_stars.frame_threshold == 10


# --------------------------------------------------------------------------- gt.csv


def _write_gt_csv(root: Path, header: list[str], rows: list[list]) -> None:
    with (root / "gt.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def csv_tree(tmp_path):
    for i in range(6):
        _touch(tmp_path / "database" / f"{i:07d}.jpg")
    for i in range(4):
        _touch(tmp_path / "queries" / f"{i:07d}.jpg")
    return tmp_path


def test_gt_csv_with_positive_lists_and_files(csv_tree):
    rows = [[i, f"queries/{i:07d}.jpg", f"{i} {i + 1}", f"database/{i:07d}.jpg database/{i + 1:07d}.jpg"] for i in range(4)]
    _write_gt_csv(csv_tree, ["query_index", "query_file", "positive_db_indices", "positive_db_files"], rows[::-1])
    bench = load_gt_csv_benchmark(csv_tree, "corridor_like")
    assert bench.num_db == 6 and bench.num_queries == 4
    assert [p.tolist() for p in bench.positives] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert bench.query_paths[2].endswith("queries/0000002.jpg")
    widened = load_gt_csv_benchmark(csv_tree, "corridor_like", index_tolerance=1)
    assert [p.tolist() for p in widened.positives] == [[0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]


def test_gt_csv_with_one_positive_per_query_and_a_wrong_file_name(csv_tree):
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index", "db_file"],
                  [[i, f"queries/{i:07d}.jpg", 5 - i, f"database/{5 - i:07d}.jpg"] for i in range(4)])
    assert [p.tolist() for p in load_gt_csv_benchmark(csv_tree, "gp").positives] == [[5], [4], [3], [2]]
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index", "db_file"],
                  [[0, "queries/0000000.jpg", 1, "database/0000004.jpg"]])
    with pytest.raises(ValueError, match="line 2: database index 1 is .*0000001.jpg in name order but the file says"):
        load_gt_csv_benchmark(csv_tree, "gp")


def test_gt_csv_errors_name_the_file(csv_tree):
    with pytest.raises(FileNotFoundError, match="gt.csv does not exist"):
        load_gt_csv_benchmark(csv_tree, "x")
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index"], [[0, "queries/0000000.jpg", 9]])
    with pytest.raises(ValueError, match=r"database index 9 outside \[0, 6\)"):
        load_gt_csv_benchmark(csv_tree, "x")


# --------------------------------------------------------------------------- npy (MSLS, prefixes)


def test_msls_val_lists_select_queries_with_qidx(tmp_path):
    """The GSV-Cities MSLS-val files: queries are qImages[qIdx]; pIdx has one entry per selected query."""
    root, lists = tmp_path / "msls", tmp_path / "gsv_lists"
    lists.mkdir(parents=True)
    root.mkdir()
    db = np.array([f"train_val/sf/database/images/d{i}.jpg" for i in range(5)])
    q = np.array([f"train_val/sf/query/images/q{i}.jpg" for i in range(6)])
    np.save(lists / "msls_val_dbImages.npy", db)
    np.save(lists / "msls_val_qImages.npy", q)
    np.save(lists / "msls_val_qIdx.npy", np.array([1, 4, 5]))
    pidx = np.empty(3, dtype=object)
    pidx[:] = [np.array([0, 2]), np.array([4]), np.array([1])]
    np.save(lists / "msls_val_pIdx.npy", pidx, allow_pickle=True)
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / "benchmark" / "msls_val.yaml").msls_val
    cfg.root, cfg.lists_dir, cfg.strict_counts = str(root), str(lists), False
    with pytest.warns(BenchmarkCountWarning, match="5 database images where the published protocol has 18871"):
        bench = load_benchmark(cfg)
    assert [Path(p).name for p in bench.query_paths] == ["q1.jpg", "q4.jpg", "q5.jpg"]
    assert bench.query_paths[0] == str(root / "train_val/sf/query/images/q1.jpg")
    assert [p.tolist() for p in bench.positives] == [[0, 2], [4], [1]]
    # A ground truth with one entry per qImages row is selected with qIdx as well.
    full = np.empty(6, dtype=object)
    full[:] = [np.array([i % 5]) for i in range(6)]
    np.save(lists / "msls_val_pIdx.npy", full, allow_pickle=True)
    bench = load_npy_benchmark(root, "msls_val", lists_dir=lists, gt_suffix="pIdx", query_index_suffix="qIdx")
    assert [p.tolist() for p in bench.positives] == [[1], [4], [0]]


def test_npy_prefix_differs_from_the_benchmark_name(tmp_path):
    np.save(tmp_path / "Nordland_dbImages.npy", np.array(["ref/0.png", "ref/1.png"]))
    np.save(tmp_path / "Nordland_qImages.npy", np.array(["query/0.png"]))
    np.save(tmp_path / "Nordland_gt.npy", np.array([[1]]))
    bench = load_npy_benchmark(tmp_path, "nordland", prefix="Nordland")
    assert bench.name == "nordland" and bench.positives[0].tolist() == [1]


# --------------------------------------------------------------------------- auto, counts, globs


def test_auto_detects_each_format(utm_tree, csv_tree, tmp_path):
    assert load_benchmark(format="auto", root=utm_tree, name="a").protocol.startswith("database images within 25 m")
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index"], [[0, "queries/0000000.jpg", 2]])
    assert load_benchmark(format="auto", root=csv_tree, name="b").positives[0].tolist() == [2]
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "c_dbImages.npy", np.array(["x.jpg"]))
    np.save(npy / "c_qImages.npy", np.array(["y.jpg"]))
    np.save(npy / "c_gt.npy", np.array([[0]]))
    assert load_benchmark(format="auto", root=npy, name="c").num_db == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cannot tell the format"):
        load_benchmark(format="auto", root=tmp_path / "empty", name="d")


def test_count_mismatch_warns_or_raises(csv_tree):
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index"], [[0, "queries/0000000.jpg", 2]])
    kwargs = dict(format="gt_csv", root=csv_tree, name="counted", source="the tiny tree")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_benchmark(**kwargs, expected_num_db=6, expected_num_queries=1)  # agrees: silent
    with pytest.warns(BenchmarkCountWarning, match=r"'counted' has 1 queries where the published protocol has 2.*the tiny tree"):
        load_benchmark(**kwargs, expected_num_queries=2)
    with pytest.raises(ValueError, match="6 database images where the published protocol has 7.*strict_counts=false"):
        load_benchmark(**kwargs, expected_num_db=7, strict_counts=True)


def test_glob_patterns_and_image_extensions(tmp_path):
    _touch(tmp_path / "a" / "x" / "1.JPG")
    _touch(tmp_path / "b" / "x" / "2.png")
    (tmp_path / "a" / "x" / "notes.txt").write_text("not an image")
    assert [Path(p).name for p in list_images(tmp_path, "*/x/*")] == ["1.JPG", "2.png"]
    with pytest.raises(FileNotFoundError, match="no images match"):
        list_images(tmp_path, "*/y/*.jpg")


def test_every_issue_benchmark_has_a_config():
    names = {p.stem for p in (CONF / "benchmark").glob("*.yaml")}
    wanted = {
        "msls_val", "msls_val_all", "msls_challenge", "pitts30k_test", "pitts250k_test", "tokyo247", "nordland",
        "nordland_10frames", "sped", "amstertime", "eynsham", "st_lucia", "svox_night", "svox_sun", "svox_rain",
        "svox_snow", "svox_overcast", "svox_all", "sfxl_v1", "sfxl_v2", "custom", "real_nordland64",
        "real_corridor", "real_gardenspoint", "synthetic", "pitts30k_val",
    }
    assert wanted <= names


# --------------------------------------------------------------------------- gt.csv: database record, parse errors


def _gt_lines(root: Path) -> list[str]:
    return (root / "gt.csv").read_text().splitlines()


def test_written_gt_csv_records_its_database_and_reads_back(csv_tree):
    write_gt_csv(csv_tree, [[0, 1], [2], [], [5]])
    header = _gt_lines(csv_tree)[0].split(",")
    assert header[-2:] == ["db_count", "db_names_sha256"]
    names = "\n".join(f"{i:07d}.jpg" for i in range(6))
    assert _gt_lines(csv_tree)[1].split(",")[-2:] == ["6", hashlib.sha256(names.encode()).hexdigest()]
    bench = load_gt_csv_benchmark(csv_tree, "recorded")
    assert [p.tolist() for p in bench.positives] == [[0, 1], [2], [], [5]]


@pytest.mark.parametrize("change", ["deleted", "renamed", "added"])
def test_a_database_other_than_the_recorded_one_is_refused(csv_tree, change):
    write_gt_csv(csv_tree, [[0], [1], [4], [5]])
    # Only indices and the record (a gt.csv without file columns): what used to shift silently.
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index", "db_count", "db_names_sha256"],
                  [[*line.split(",")[:3], *line.split(",")[-2:]] for line in _gt_lines(csv_tree)[1:]])
    assert load_gt_csv_benchmark(csv_tree, "ok").positives[2].tolist() == [4]
    if change == "deleted":
        (csv_tree / "database" / "0000002.jpg").unlink()
        expected = r"database holds 5 images but gt.csv was made for 6"
    elif change == "renamed":
        (csv_tree / "database" / "0000002.jpg").rename(csv_tree / "database" / "0000002b.jpg")
        expected = r"the 6 image names in .*database differ from those gt.csv was made for \(db_names_sha256"
    else:
        _touch(csv_tree / "database" / "0000001a.jpg")
        expected = r"database holds 7 images but gt.csv was made for 6"
    with pytest.raises(ValueError, match=expected + r".*shift them.*Restore the database folder"):
        load_gt_csv_benchmark(csv_tree, "changed")


def test_a_refused_database_names_the_missing_files_when_the_csv_lists_them(csv_tree):
    write_gt_csv(csv_tree, [[0, 1], [2], [3], [5]])
    (csv_tree / "database" / "0000002.jpg").unlink()
    with pytest.raises(ValueError, match=r"holds 5 images but gt.csv was made for 6; missing: database/0000002.jpg"):
        load_gt_csv_benchmark(csv_tree, "changed")


def test_an_old_gt_csv_without_record_still_reads_and_can_be_given_one(csv_tree, caplog):
    _write_gt_csv(csv_tree, ["query_index", "query_file", "db_index"], [[0, "queries/0000000.jpg", 2]])
    with caplog.at_level("WARNING", logger="vprlab.data.benchmark_readers"):
        assert load_gt_csv_benchmark(csv_tree, "old").positives[0].tolist() == [2]
    assert "records neither the database it was made for" in caplog.text and "record_gt_database" in caplog.text
    record_gt_database(csv_tree)
    assert _gt_lines(csv_tree)[0] == "query_index,query_file,db_index,db_count,db_names_sha256"
    (csv_tree / "database" / "0000000.jpg").unlink()
    with pytest.raises(ValueError, match="holds 5 images but gt.csv was made for 6"):
        load_gt_csv_benchmark(csv_tree, "old")


@pytest.mark.parametrize("rows, expected", [
    (["0,queries/0000000.jpg,1", "1,queries/0000001.jpg"], r"gt.csv line 3: 2 fields where the header has 3 \(no db_index\)"),
    (["0,queries/0000000.jpg,1", "1,,2"], r"gt.csv line 3: an empty query_file"),
    (["0,queries/0000000.jpg,1", "1,queries/0000001.jpg,x7"], r"gt.csv line 3: db_index 'x7' is not a list of integers"),
    (["0,queries/0000000.jpg,1", "one,queries/0000001.jpg,2"], r"gt.csv line 3: query_index 'one' is not an integer"),
    (["0,queries/0000000.jpg,1,9", "1,queries/0000001.jpg,2"], r"gt.csv line 2: 4 fields where the header has 3"),
])
def test_every_gt_csv_parse_error_names_the_file_and_line(csv_tree, rows, expected):
    (csv_tree / "gt.csv").write_text("query_index,query_file,db_index\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(csv_tree)) + ".*" + expected):
        load_gt_csv_benchmark(csv_tree, "broken")


def test_hidden_files_are_never_benchmark_images(csv_tree):
    _touch(csv_tree / "database" / "._0000001.jpg")  # a macOS resource fork next to its image
    _touch(csv_tree / "database" / ".hidden.jpg")
    _touch(csv_tree / "database" / ".thumbnails" / "0000001.jpg")
    _touch(csv_tree / "queries" / "._0000000.jpg")
    paths = list_images(csv_tree, "database")
    assert [Path(p).name for p in paths] == [f"{i:07d}.jpg" for i in range(6)]
    globbed = [Path(p).relative_to(csv_tree).as_posix() for p in list_images(csv_tree, "*/*.jpg")]
    assert globbed == [f"database/{i:07d}.jpg" for i in range(6)] + [f"queries/{i:07d}.jpg" for i in range(4)]
    write_gt_csv(csv_tree, [[0], [1], [2], [3]])
    assert load_gt_csv_benchmark(csv_tree, "hidden").num_queries == 4
