"""Every formatter on a tiny raw tree in its source's real folder structure and file naming, read back
through the benchmark config with vprlab's own loader; positives checked against a computation here."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF
from omegaconf import OmegaConf
from PIL import Image
from scipy.io import savemat

from vprlab.data.benchmarks import load_benchmark
from vprlab.data.formatters import FORMATTERS, FormatResult, latlon_to_utm
from vprlab.utils.errors import UserError


def _image(path: Path, colour=(90, 120, 150), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _within(db: np.ndarray, queries: np.ndarray, radius: float = 25.0) -> list[list[int]]:
    """Brute force: per query, the database rows at Euclidean distance <= radius."""
    d = np.hypot(queries[:, None, 0] - db[None, :, 0], queries[:, None, 1] - db[None, :, 1])
    return [np.flatnonzero(row <= radius).tolist() for row in d]


def _load(name: str, root: Path, num_db: int | None, num_queries: int | None):
    """The benchmark through its config file (conf/benchmark/<name>.yaml), root pointed at ``root``,
    with the toy counts checked strictly (the loader's published-count mechanism, set to the counts
    this tree must give)."""
    cfg = OmegaConf.load(CONF / "benchmark" / f"{name}.yaml")[name]
    cfg.root = str(root)
    cfg.expected_num_db, cfg.expected_num_queries, cfg.strict_counts = num_db, num_queries, True
    return load_benchmark(cfg)


def _utm(path: str) -> tuple[float, float]:
    fields = Path(path).name.split("@")
    return float(fields[1]), float(fields[2])


def _field(path: str, index: int) -> str:
    return Path(path).name.split("@")[index]


def _positive_names(bench, key) -> dict[str, set[str]]:
    return {key(q): {key(bench.db_paths[i]) for i in pos} for q, pos in zip(bench.query_paths, bench.positives)}


# --------------------------------------------------------------------------- coverage


def _external_configs(group: str) -> set[str]:
    """Configs whose root comes from a dataset's own environment variable (not VPRLAB_*): the ones
    that read data obtained from outside (custom, synthetic and the shared small sets do not)."""
    names = set()
    for path in (CONF / group).glob("*.yaml"):
        found = re.search(r"oc\.env:([A-Z0-9_]+)", path.read_text())
        if found and not found.group(1).startswith("VPRLAB_"):
            names.add(path.stem)
    return names


def test_formatters_cover_every_config_that_reads_external_data():
    expected = _external_configs("benchmark") | _external_configs("dataset")
    assert {"msls_val", "pitts30k_test", "tokyo247", "sf_landmark", "baidu", "gsv_cities"} <= expected
    assert set(FORMATTERS) == expected  # config names only: the catalog says which one formats a download
    assert FORMATTERS["svox_all"] is FORMATTERS["svox_night"] is FORMATTERS["svox_sun"]


# --------------------------------------------------------------------------- lat/lon -> UTM


def test_latlon_to_utm_matches_the_published_example_and_ground_distances():
    # The `utm` package's README example: from_latlon(51.2, 7.5) = (395201.31038, 5673135.24118, 32, 'U').
    east, north, zone, letter = latlon_to_utm(51.2, 7.5)
    assert (zone, letter) == (32, "U")
    assert east == pytest.approx(395201.3103811303, abs=1e-3) and north == pytest.approx(5673135.241182375, abs=1e-3)
    assert latlon_to_utm(-33.9, 151.2)[2:] == (56, "H") and latlon_to_utm(35.68, 139.76)[2:] == (54, "S")
    # The UTM grid's exceptions: south-west Norway is zone 32V, Svalbard uses zones 31/33/35/37 X.
    assert latlon_to_utm(60.0, 5.0)[2:] == (32, "V") and latlon_to_utm(78.0, 15.0)[2:] == (33, "X")
    # A small step on the WGS84 ellipsoid (local radii of curvature), times the UTM point scale
    # k0 (1 + x^2 / 2R^2) at the point's distance x from the central meridian.
    a_axis, e2 = 6378137.0, 0.00669438
    for lat, lon in ((35.68, 139.76), (37.77, -122.42), (55.68, 12.57), (-33.9, 151.2)):
        e1, n1, *_ = latlon_to_utm(lat, lon)
        e2_, n2_, *_ = latlon_to_utm(lat + 0.0002, lon + 0.0003)
        phi = math.radians(lat + 0.0001)
        w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
        north_m = a_axis * (1 - e2) / w**3 * math.radians(0.0002)
        east_m = a_axis / w * math.cos(phi) * math.radians(0.0003)
        scale = 0.9996 * (1 + ((e1 + e2_) / 2 - 500000) ** 2 / (2 * 6371000.0**2))
        assert math.hypot(e2_ - e1, n2_ - n1) == pytest.approx(math.hypot(east_m, north_m) * scale, rel=1e-4)


# --------------------------------------------------------------------------- MSLS

_MSLS_CITY = {"cph": (55.68, 12.57, 720000.0, 6170000.0), "sf": (37.77, -122.42, 550000.0, 4180000.0)}


def _msls_split(raw: Path, city: str, folder: str, rows: list[dict]) -> None:
    base = raw / "train_val" / city / folder
    lat0, lon0, _, _ = _MSLS_CITY[city]
    raw_lines = [",key,lon,lat,ca,captured_at,pano"]
    post_lines = [",key,easting,northing,unique_cluster,control_panel,night,view_direction"]
    sub_lines = [",all,s2w,w2s,o2n,n2o,d2n,n2d"]
    seq_lines = [",key,sequence_key,frame_number"]
    for i, row in enumerate(rows):
        raw_lines.append(f"{i},{row['key']},{lon0 + i * 1e-4},{lat0 + i * 1e-4},90.0,2017-06-01 12:00:00,{row['pano']}")
        post_lines.append(f"{i},{row['key']},{row['utm'][0]},{row['utm'][1]},0,False,{row['night']},Forward")
        sub_lines.append(f"{i},{row['all']},False,False,False,False,False,False")
        seq_lines.append(f"{i},{row['key']},seq{city},{i}")
        _image(base / "images" / f"{row['key']}.jpg")
    for name, lines in (("raw", raw_lines), ("postprocessed", post_lines), ("subtask_index", sub_lines),
                        ("seq_info", seq_lines)):
        (base / f"{name}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def msls_raw(tmp_path):
    """Two val cities; panoramas and images outside the 'all' subtask in both folders; one query
    of each city with no database image within 25 m."""
    raw = tmp_path / "raw_msls"
    truth = {}
    for c, city in enumerate(("cph", "sf")):
        _, _, e0, n0 = _MSLS_CITY[city]
        db_offsets = [(0, 0), (10, 0), (40, 0), (80, 0), (120, 0), (200, 0)]
        db = [{"key": f"{city}db{i}", "utm": (e0 + dx, n0 + dy), "pano": i == 4, "all": i != 5, "night": False}
              for i, (dx, dy) in enumerate(db_offsets)]
        q_offsets = [(5, 0), (60, 0), (121, 0), (1000, 1000), (0, 24), (40, 25.0)]
        q = [{"key": f"{city}q{i}", "utm": (e0 + dx, n0 + dy), "pano": i == 1 and c == 0, "all": i != 4,
              "night": i == 2} for i, (dx, dy) in enumerate(q_offsets)]
        _msls_split(raw, city, "database", db)
        _msls_split(raw, city, "query", q)
        truth[city] = (db, q)
    for city in ("miami", "athens"):
        for folder in ("database", "query"):
            for i in range(2):
                _image(raw / "test" / city / folder / "images" / f"{city}{folder}{i}.jpg")
    return raw, truth


def _msls_expected(truth, queries_filter):
    """Official selection computed here: filtered rows per city, positives by brute force."""
    db_keys, q_keys, positives = [], [], {}
    for city in ("cph", "sf"):
        db, q = truth[city]
        db_rows = [r for r in db if r["all"] and r["pano"] is False]
        q_rows = [r for r in q if queries_filter(r)]
        found = _within(np.array([r["utm"] for r in db_rows]), np.array([r["utm"] for r in q_rows]))
        for r, pos in zip(q_rows, found):
            positives[r["key"]] = {db_rows[i]["key"] for i in pos}
        db_keys += [r["key"] for r in db_rows]
        q_keys += [r["key"] for r in q_rows]
    return db_keys, q_keys, positives


def test_msls_val_official_queries(msls_raw, tmp_path):
    raw, truth = msls_raw
    db_keys, q_keys, positives = _msls_expected(truth, lambda r: r["all"] and not r["pano"])
    counted = [k for k in q_keys if positives[k]]
    assert len(counted) < len(q_keys)  # the tree has queries without a positive: the 740-of-747 case
    out = tmp_path / "msls"
    result = FORMATTERS["msls_val"](raw, out)
    assert result == FormatResult("msls_val", out, len(db_keys), len(counted))
    bench = _load("msls_val", out, len(db_keys), len(counted))
    key = lambda p: Path(p).stem  # noqa: E731
    assert [key(p) for p in bench.db_paths] == db_keys  # cph then sf, csv row order
    assert [key(p) for p in bench.query_paths] == counted
    assert _positive_names(bench, key) == {k: positives[k] for k in counted}
    assert all(Path(p).is_file() for p in bench.db_paths + bench.query_paths)
    assert bench.db_paths[0].endswith("train_val/cph/database/images/cphdb0.jpg")
    with pytest.raises(UserError, match="never overwritten"):
        FORMATTERS["msls_val"](raw, out)


def test_msls_val_all_queries(msls_raw, tmp_path):
    raw, truth = msls_raw
    db_keys, q_keys, positives = _msls_expected(truth, lambda r: not r["pano"])
    out = tmp_path / "msls" / "images" / "val"
    result = FORMATTERS["msls_val_all"](raw, out)
    assert (result.num_db, result.num_queries) == (len(db_keys), len(q_keys))
    bench = _load("msls_val_all", out, len(db_keys), len(q_keys))
    key = lambda p: _field(p, 7)  # noqa: E731 - the pano_id field holds the MSLS key
    assert sorted(key(p) for p in bench.db_paths) == sorted(db_keys)
    assert _positive_names(bench, key) == positives
    night = [p for p in bench.query_paths if key(p) == "cphq2"][0]
    # Copenhagen: zone 33, and 55.68 N is in band U (48-56 N).
    assert _field(night, 14) == "night_forward_cph" and _field(night, 3) == "33" and _field(night, 4) == "U"


def test_msls_challenge(msls_raw, tmp_path):
    raw, _ = msls_raw
    out = tmp_path / "msls_test"
    assert FORMATTERS["msls_challenge"](raw, out).num_queries == 4
    bench = _load("msls_challenge", out, 4, 4)
    assert not bench.has_ground_truth
    assert sorted(Path(p).name for p in bench.query_paths)[0] == "athensquery0.jpg"


def test_msls_missing_metadata_names_the_raw_folder_and_file(msls_raw, tmp_path):
    raw, _ = msls_raw
    (raw / "train_val" / "sf" / "query" / "subtask_index.csv").unlink()
    with pytest.raises(UserError, match=r"raw folder .*raw_msls.*train_val/sf/query/subtask_index\.csv"):
        FORMATTERS["msls_val"](raw, tmp_path / "out")
    with pytest.raises(UserError, match="subtask_index.csv"):
        FORMATTERS["msls_val_all"](raw, tmp_path / "out_all")
    assert not (tmp_path / "out_all").exists() and not list(tmp_path.glob(".out_all.partial-*"))


# --------------------------------------------------------------------------- Pittsburgh (.mat dbStruct)


def _cells(names: list[str]) -> np.ndarray:
    cells = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = name
    return cells


def _write_db_struct(path: Path, which: str, db: list[str], utm_db: np.ndarray, q: list[str], utm_q: np.ndarray):
    """A dbStruct .mat in NetVLAD's field order, cell arrays of names and 2 x N UTM matrices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = {
        "whichSet": which, "dbImageFns": _cells(db), "utmDb": utm_db.T, "qImageFns": _cells(q), "utmQ": utm_q.T,
        "numImages": float(len(db)), "numQueries": float(len(q)), "posDistThr": 25.0, "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    savemat(str(path), {"dbStruct": struct})


def _pitts_names(rng, folder_count: int, n: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{i % folder_count:03d}/{rng.integers(0, 999999):06d}_pitch{1 + i % 2}_yaw{1 + i % 12}.jpg"
            for i in range(n)]


@pytest.fixture
def pittsburgh_raw(tmp_path):
    rng = np.random.default_rng(5)
    raw = tmp_path / "raw_pitts"
    splits = {}
    for name in ("pitts30k_val", "pitts30k_test", "pitts250k_test"):
        db = sorted(set(_pitts_names(rng, 3, 14)))
        q = sorted(set(_pitts_names(rng, 2, 6)))
        utm_db = (rng.uniform(0, 120, (len(db), 2)) + [585000, 4477000]).round(2)
        utm_q = (rng.uniform(0, 120, (len(q), 2)) + [585000, 4477000]).round(2)
        utm_q[0] = utm_db[2] + [15.0, 20.0]  # exactly 25 m: counts
        _write_db_struct(raw / "datasets" / f"{name}.mat", name.split("_")[1], db, utm_db, q, utm_q)
        for f in db:
            _image(raw / f)
        for f in q:
            _image(raw / "queries_real" / f)
        splits[name] = (db, q, utm_db, utm_q)
    return raw, splits


@pytest.mark.parametrize("name", ["pitts30k_val", "pitts30k_test", "pitts250k_test"])
def test_pittsburgh_splits(pittsburgh_raw, tmp_path, name):
    raw, splits = pittsburgh_raw
    db, q, utm_db, utm_q = splits[name]
    out = tmp_path / "Pittsburgh"
    result = FORMATTERS[name](raw, out)
    assert (result.num_db, result.num_queries) == (len(db), len(q))
    bench = _load(name, out, len(db), len(q))
    assert [str(Path(p).relative_to(out)) for p in bench.db_paths] == db
    assert [str(Path(p).relative_to(out)) for p in bench.query_paths] == [f"queries_real/{f}" for f in q]
    assert [p.tolist() for p in bench.positives] == _within(utm_db, utm_q)
    assert 2 in bench.positives[0]


def test_pittsburgh_splits_share_one_root(pittsburgh_raw, tmp_path):
    raw, splits = pittsburgh_raw
    out = tmp_path / "Pittsburgh"
    FORMATTERS["pitts30k_val"](raw, out)
    FORMATTERS["pitts30k_test"](raw, out)
    for name in ("pitts30k_val", "pitts30k_test"):
        assert _load(name, out, len(splits[name][0]), len(splits[name][1])).num_db == len(splits[name][0])
    with pytest.raises(UserError, match="pitts30k_val_dbImages.npy"):
        FORMATTERS["pitts30k_val"](raw, out)


def test_pittsburgh_missing_mat_and_image(pittsburgh_raw, tmp_path):
    raw, splits = pittsburgh_raw
    (raw / "datasets" / "pitts250k_test.mat").unlink()
    expected = r"raw folder .*raw_pitts: expected the Pittsburgh split file at .*datasets/pitts250k_test\.mat"
    with pytest.raises(UserError, match=expected):
        FORMATTERS["pitts250k_test"](raw, tmp_path / "P")
    (raw / splits["pitts30k_val"][0][0]).unlink()
    with pytest.raises(UserError, match="listed images do not exist"):
        FORMATTERS["pitts30k_val"](raw, tmp_path / "P")
    assert not (tmp_path / "P" / "pitts30k_val_dbImages.npy").exists()


# --------------------------------------------------------------------------- Tokyo 24/7


def test_tokyo247(tmp_path):
    raw = tmp_path / "raw_tokyo"
    query_pos = [(35.6581, 139.7017), (35.6895, 139.6917)]
    q_utm = np.array([latlon_to_utm(*p)[:2] for p in query_pos])
    utm_db = np.array([q_utm[0] + [3, 4], q_utm[0] + [60, 0], q_utm[1] + [-10, 10], q_utm[1] + [300, 0]]).round(2)
    db = [f"0381{4 + i % 2}/0381{4 + i % 2}0{i}0000000000000_012_{30 * i:03d}.jpg" for i in range(len(utm_db))]
    _write_db_struct(raw / "datasets" / "tokyo247.mat", "test", db, utm_db, [], np.zeros((0, 2)))
    for f in db:
        _image(raw / "tokyo247" / Path(f).with_suffix(".png"))
    for i, (lat, lon) in enumerate(query_pos):
        _image(raw / "247query_subset_v2" / f"q{i:05d}.jpg", size=(64, 32))
        (raw / "247query_subset_v2" / f"q{i:05d}.csv").write_text(f"q{i:05d}.jpg,{lat},{lon},0,0\n")
    out = tmp_path / "tokyo247" / "images" / "test"
    assert FORMATTERS["tokyo247"](raw, out).num_db == 4
    bench = _load("tokyo247", out, 4, 2)
    key = lambda p: _field(p, 7)  # noqa: E731
    expected = {f"q{j:05d}": {db[i][6:28] for i in pos} for j, pos in enumerate(_within(utm_db, q_utm))}
    assert _positive_names(bench, key) == expected == {"q00000": {db[0][6:28]}, "q00001": {db[2][6:28]}}
    with Image.open(bench.query_paths[0]) as image:
        assert image.size == (960, 480)  # short side 480, as format_tokyo247.py resizes
    assert all(p.endswith(".jpg") and Image.open(p).format == "JPEG" for p in bench.db_paths)
    # pano_id = first 22 characters, tile = the _012_<angle> heading // 30, as format_tokyo247.py names them.
    assert {_field(p, 7): _field(p, 8) for p in bench.db_paths} == {f[6:28]: f"{i:02d}" for i, f in enumerate(db)}


# --------------------------------------------------------------------------- VPR-Bench: Nordland*, SPED


def _vpr_bench(raw: Path, num_db: int, num_q: int) -> None:
    for i in range(num_db):
        _image(raw / "ref" / f"{i:07d}.jpg")
    for i in range(num_q):
        _image(raw / "query" / f"{i:07d}.jpg")


def test_nordland_vpr_bench_split(tmp_path):
    raw = tmp_path / "raw_nordland"
    _vpr_bench(raw, 31, 4)
    out = tmp_path / "Nordland"
    FORMATTERS["nordland"](raw, out)
    bench = _load("nordland", out, 31, 4)
    # Query j is winter frame 10 j; positives: summer frames within 1 frame of it.
    expected = [[i for i in range(31) if abs(i - 10 * j) <= 1] for j in range(4)]
    assert [p.tolist() for p in bench.positives] == expected == [[0, 1], [9, 10, 11], [19, 20, 21], [29, 30]]
    assert [str(Path(p).relative_to(out)) for p in bench.query_paths][1] == "query/0000001.jpg"


def test_nordland_refuses_a_gap(tmp_path):
    raw = tmp_path / "raw_nordland"
    _vpr_bench(raw, 12, 2)
    (raw / "ref" / "0000005.jpg").unlink()
    with pytest.raises(UserError, match="image number 5 is missing"):
        FORMATTERS["nordland"](raw, tmp_path / "N")


def test_sped(tmp_path):
    raw = tmp_path / "raw" / "SPEDTEST"  # as SPEDTEST.zip unpacks
    _vpr_bench(raw, 5, 5)
    out = tmp_path / "SPED"
    FORMATTERS["sped"](tmp_path / "raw", out)
    bench = _load("sped", out, 5, 5)
    assert [p.tolist() for p in bench.positives] == [[j] for j in range(5)]
    _image(raw / "query" / "0000005.jpg")
    with pytest.raises(UserError, match="ref/ holds 5 images and query/ 6"):
        FORMATTERS["sped"](raw, tmp_path / "SPED2")


# --------------------------------------------------------------------------- VPR-datasets-downloader folders


def _utm_folder(root: Path, folder: str, positions: np.ndarray, tag: str) -> None:
    for i, (e, n) in enumerate(positions):
        _image(root / folder / f"@{e:.2f}@{n:.2f}@30@U@@@{tag}{i}@@@@@@@@.jpg")


@pytest.mark.parametrize("name,dataset_dir", [("eynsham", "eynsham"), ("st_lucia", "st_lucia"), ("baidu", "baidu")])
def test_rsync_served_utm_sets(tmp_path, name, dataset_dir):
    rng = np.random.default_rng(len(name))
    raw = tmp_path / "rsync"
    root = raw / dataset_dir / "images" / "test"
    db = (rng.uniform(0, 150, (20, 2)) + 600000).round(2)
    q = (rng.uniform(0, 150, (7, 2)) + 600000).round(2)
    q[0] = db[4] + [0, 25.0]
    _utm_folder(root, "database", db, "d")
    _utm_folder(root, "queries", q, "q")
    out = tmp_path / name / "images" / "test"
    assert FORMATTERS[name](raw, out).num_queries == 7
    bench = _load(name, out, 20, 7)
    key = lambda p: _field(p, 7)  # noqa: E731
    expected = {f"q{j}": {f"d{i}" for i in pos} for j, pos in enumerate(_within(db, q))}
    assert _positive_names(bench, key) == expected and "d4" in expected["q0"]


def test_utm_set_with_a_bad_name_is_refused_and_leaves_nothing(tmp_path):
    root = tmp_path / "raw" / "images" / "test"
    _utm_folder(root, "database", np.array([[1.0, 2.0]]), "d")
    _image(root / "queries" / "IMG_0001.jpg")
    with pytest.raises(UserError, match="IMG_0001.jpg"):
        FORMATTERS["eynsham"](tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    with pytest.raises(UserError, match=r"raw folder .*nowhere does not exist"):
        FORMATTERS["st_lucia"](tmp_path / "nowhere", tmp_path / "out")


def test_existing_output_folder_is_never_overwritten(tmp_path):
    root = tmp_path / "raw"
    _utm_folder(root, "database", np.array([[1.0, 2.0]]), "d")
    _utm_folder(root, "queries", np.array([[1.0, 2.0]]), "q")
    out = tmp_path / "out"
    _image(out / "database" / "mine.jpg")
    with pytest.raises(UserError, match="never overwritten"):
        FORMATTERS["baidu"](root, out)
    assert [p.name for p in (out / "database").iterdir()] == ["mine.jpg"]


def test_nordland_10frames(tmp_path):
    root = tmp_path / "raw" / "nordland" / "images" / "test"
    for folder, frames in (("database", range(0, 40)), ("queries", range(0, 40, 7))):
        for f in frames:
            _image(root / folder / f"@0@{f * 10}@@@@@{f:05d}@@@@@@@@.jpg")
    out = tmp_path / "nordland" / "images" / "test"
    FORMATTERS["nordland_10frames"](tmp_path / "raw", out)
    bench = _load("nordland_10frames", out, 40, 6)
    frame = lambda p: int(_field(p, 7))  # noqa: E731
    for q, pos in zip(bench.query_paths, bench.positives):
        assert sorted(frame(bench.db_paths[i]) for i in pos) == [f for f in range(40) if abs(f - frame(q)) <= 10]


def test_svox_conditions_share_one_root(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "raw" / "svox" / "images" / "test"
    gallery = (rng.uniform(0, 100, (15, 2)) + 620000).round(2)
    _utm_folder(root, "gallery", gallery, "g")
    queries = {}
    for k, folder in enumerate(("queries", "queries_night", "queries_overcast", "queries_rain", "queries_snow",
                                "queries_sun")):
        queries[folder] = (rng.uniform(0, 100, (2 + k, 2)) + 620000).round(2)
        _utm_folder(root, folder, queries[folder], folder[-3:])
    out = tmp_path / "svox" / "images" / "test"
    result = FORMATTERS["svox_night"](tmp_path / "raw", out)
    assert result.query_sets["queries_night"] == 3 and result.num_db == 15
    for folder, positions in queries.items():
        name = "svox_all" if folder == "queries" else "svox_" + folder.split("_")[1]
        bench = _load(name, out, 15, len(positions))
        ordered = np.array([_utm(p) for p in bench.query_paths])
        assert [p.tolist() for p in bench.positives] == _within(np.array([_utm(p) for p in bench.db_paths]), ordered)
        assert sorted(map(tuple, ordered)) == sorted(map(tuple, positions))
    with pytest.raises(UserError, match="never overwritten"):
        FORMATTERS["svox_sun"](tmp_path / "raw", out)


def test_sfxl_processed_test_split(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "raw" / "sf_xl" / "processed" / "test"
    db = (rng.uniform(0, 100, (12, 2)) + 550000).round(2)
    _utm_folder(root, "database/37.77_-122.42", db[:6], "a")
    _utm_folder(root, "database/37.78_-122.41", db[6:], "b")
    _utm_folder(root, "queries_v1", (rng.uniform(0, 100, (4, 2)) + 550000).round(2), "v1_")
    _utm_folder(root, "queries_v2", (rng.uniform(0, 100, (3, 2)) + 550000).round(2), "v2_")
    out = tmp_path / "sf_xl" / "processed" / "test"
    FORMATTERS["sfxl_v1"](tmp_path / "raw", out)
    listing = (out / "database_images_paths.txt").read_text().split()
    assert len(listing) == 12 and listing[0].startswith("37.77_-122.42/@")
    for name, n in (("sfxl_v1", 4), ("sfxl_v2", 3)):
        bench = _load(name, out, 12, n)
        db_utm = np.array([_utm(p) for p in bench.db_paths])
        assert [p.tolist() for p in bench.positives] == _within(db_utm, np.array([_utm(p) for p in bench.query_paths]))


def test_amstertime_pairs(tmp_path):
    raw = tmp_path / "raw_amstertime" / "AmsterTime-v1.0"
    for pair in (3, 17, 250):
        _image(raw / "new" / f"{pair:04d}.png", colour=(pair % 255, 0, 0))
        _image(raw / "old" / f"{pair:04d}.jpg")
    out = tmp_path / "amstertime" / "images" / "test"
    FORMATTERS["amstertime"](tmp_path / "raw_amstertime", out)
    bench = _load("amstertime", out, 3, 3)
    # Each query's one positive is the modern image of its own pair.
    assert [[Path(bench.db_paths[i]).name for i in pos] for pos in bench.positives] == \
        [[Path(q).name] for q in bench.query_paths]
    assert all(Image.open(p).format == "JPEG" for p in bench.db_paths)
    (raw / "old" / "0017.jpg").unlink()
    with pytest.raises(UserError, match="unpaired"):
        FORMATTERS["amstertime"](tmp_path / "raw_amstertime", tmp_path / "out2")


@pytest.mark.parametrize("poses_as", ["folder", "zip"])
def test_sf_landmark(tmp_path, poses_as):
    import zipfile

    raw = tmp_path / "raw_sf"
    db_pos = [(37.7750, -122.4190), (37.7760, -122.4180), (37.7800, -122.4100)]
    for i, (lat, lon) in enumerate(db_pos):
        _image(raw / "00011000_00012000" / f"0001{i}" / f"x_y_pano{i}_{lat}_{lon}_b{i}_{i}_c{i}_090_010.jpg")
    db_utm = np.array([latlon_to_utm(*p)[:2] for p in db_pos])
    q_utm = np.array([db_utm[0] + [10, 10], db_utm[2] + [0, -30], db_utm[1] + [-5, 0]]).round(2)
    lines = ["n id x y w z east north extra"]
    for i, (e, n) in enumerate(q_utm):
        lines.append(f"{i} q{i:04d} 0.1 0.2 0.3 0.9 {e} {n} 0")
        _image(raw / "BuildingQueryImagesCartoIDCorrected-Upright" / f"q{i:04d}.jpg")
    if poses_as == "folder":
        (raw / "reference_poses_598").mkdir()
        (raw / "reference_poses_598" / "reference_poses_addTM_all_598.txt").write_text("\n".join(lines) + "\n")
    else:  # reference_poses_598.zip as download_san_francisco.py fetches it
        with zipfile.ZipFile(raw / "reference_poses_598.zip", "w") as zf:
            zf.writestr("reference_poses_598/reference_poses_addTM_all_598.txt", "\n".join(lines) + "\n")
    out = tmp_path / "san_francisco" / "images" / "test"
    assert FORMATTERS["sf_landmark"](raw, out) == FormatResult("sf_landmark", out, 3, 3)
    bench = _load("sf_landmark", out, 3, 3)
    key = lambda p: _field(p, 7)  # noqa: E731
    expected = {f"q{j:04d}": {f"pano{i}" for i in pos} for j, pos in enumerate(_within(db_utm, q_utm))}
    assert _positive_names(bench, key) == expected == {"q0000": {"pano0"}, "q0001": set(), "q0002": {"pano1"}}


def test_gsv_cities_training_set(tmp_path):
    raw = tmp_path / "kaggle"
    for city in ("Boston", "Rome"):
        (raw / "Dataframes").mkdir(parents=True, exist_ok=True)
        (raw / "Dataframes" / f"{city}.csv").write_text("place_id,year,month,northdeg,city_id,lat,lon,panoid\n")
        for i in range(3):
            _image(raw / "Images" / city / f"{city}_{i:07d}_2017_06_090_42.0_-71.0_p{i}.jpg")
    out = tmp_path / "gsv-cities"
    assert FORMATTERS["gsv_cities"](raw, out) == FormatResult("gsv_cities", out, 6, 0)
    assert (out / "Dataframes" / "Rome.csv").is_file() and len(list((out / "Images" / "Boston").iterdir())) == 3
    assert (raw / "Images" / "Rome").is_dir()  # the raw download is left as it was


# --------------------------------------------------------------------------- releases and archives read as shipped


def test_msls_val_from_the_openvprlab_release(tmp_path):
    """msls-val.zip of OpenVPRLab v0.1: cph/, sf/ and three lists (paths relative to the folder)."""
    raw = tmp_path / "raw" / "msls-val"
    db = [f"cph/database/images/d{i}.jpg" for i in range(3)] + ["sf/database/images/d3.jpg"]
    queries = ["cph/query/images/q0.jpg", "sf/query/images/q1.jpg"]
    for f in db + queries:
        _image(raw / f)
    gt = np.empty(2, dtype=object)
    gt[0], gt[1] = np.array([0, 2]), np.array([3])
    np.save(raw / "msls_val_ref_image_names.npy", np.array(db))
    np.save(raw / "msls_val_query_image_names.npy", np.array(queries))
    np.save(raw / "msls_val_ground_truth_25m.npy", gt, allow_pickle=True)
    out = tmp_path / "msls"
    FORMATTERS["msls_val"](tmp_path / "raw", out)
    bench = _load("msls_val", out, 4, 2)
    assert [str(Path(p).relative_to(out)) for p in bench.query_paths] == queries
    assert [p.tolist() for p in bench.positives] == [[0, 2], [3]]


def test_pitts30k_val_from_the_openvprlab_release(tmp_path):
    raw = tmp_path / "raw" / "pitts30k-val"
    db = ["000/000001_pitch1_yaw1.jpg", "000/000001_pitch1_yaw2.jpg"]
    queries = ["queries_real/000/000002_pitch1_yaw1.jpg"]
    for f in db + queries:
        _image(raw / f)
    np.save(raw / "pitts30k_val_dbImages.npy", np.array(db))
    np.save(raw / "pitts30k_val_qImages.npy", np.array(queries))
    np.save(raw / "pitts30k_val_gt_25m.npy", np.array([[1]]))
    out = tmp_path / "Pittsburgh"
    FORMATTERS["pitts30k_val"](tmp_path / "raw", out)
    bench = _load("pitts30k_val", out, 2, 1)
    assert bench.positives[0].tolist() == [1] and Path(bench.db_paths[1]).is_file()
    np.save(raw / "pitts30k_val_gt_25m.npy", np.array([[2]]))
    with pytest.raises(UserError, match=r"query 0 lists a database index outside \[0, 2\)"):
        FORMATTERS["pitts30k_val"](tmp_path / "raw", tmp_path / "P2")


def test_archives_are_read_without_unpacking(tmp_path):
    """AmsterTime-v1.0.zip (inside the downloaded archive) and the Tokyo query zip, read in place."""
    import zipfile

    raw = tmp_path / "raw_amstertime"
    raw.mkdir()
    with zipfile.ZipFile(raw / "AmsterTime-v1.0.zip", "w") as zf:
        for pair in (1, 2):
            for folder, ext in (("new", "png"), ("old", "jpg")):
                buffer = _image(tmp_path / "tmp" / f"{folder}{pair}.{ext}")
                zf.write(buffer, f"AmsterTime-v1.0/{folder}/{pair:04d}.{ext}")
    out = tmp_path / "amstertime"
    assert FORMATTERS["amstertime"](raw, out).num_db == 2
    bench = _load("amstertime", out, 2, 2)
    assert [p.tolist() for p in bench.positives] == [[0], [1]]
    assert list(raw.iterdir()) == [raw / "AmsterTime-v1.0.zip"]  # nothing unpacked into the raw folder

    raw = tmp_path / "raw_tokyo"
    lat, lon = 35.6581, 139.7017
    east, north = latlon_to_utm(lat, lon)[:2]
    _write_db_struct(raw / "datasets" / "tokyo247.mat", "test", ["03814/a_012_000.jpg"],
                     np.array([[east + 3, north]]), [], np.zeros((0, 2)))
    _image(raw / "tokyo247" / "03814" / "a_012_000.png")
    with zipfile.ZipFile(raw / "247query_subset_v2.zip", "w") as zf:
        zf.write(_image(tmp_path / "tmp" / "q.jpg", size=(40, 60)), "247query_subset_v2/q1.jpg")
        zf.writestr("247query_subset_v2/q1.csv", f"q1.jpg,{lat},{lon},x\n")
    bench = _load("tokyo247", FORMATTERS["tokyo247"](raw, tmp_path / "tokyo").out_dir, 1, 1)
    assert bench.positives[0].tolist() == [0] and Image.open(bench.query_paths[0]).size == (480, 720)


def test_missing_raw_layouts_name_what_was_expected(tmp_path):
    raw = tmp_path / "empty"
    raw.mkdir()
    with pytest.raises(UserError, match=r"raw folder .*empty: expected the MSLS download .* or OpenVPRLab's msls-val"):
        FORMATTERS["msls_val"](raw, tmp_path / "o1")
    with pytest.raises(UserError, match=r"raw folder .*empty: expected the VPR-Bench folders, folders ref/, query/"):
        FORMATTERS["nordland"](raw, tmp_path / "o2")
    with pytest.raises(UserError, match=r"raw folder .*empty: expected .*new/ or the archive AmsterTime-v1.0.zip"):
        FORMATTERS["amstertime"](raw, tmp_path / "o3")
    with pytest.raises(UserError, match=r"raw folder .*empty: expected the San Francisco query poses, reference_poses"):
        FORMATTERS["sf_landmark"](raw, tmp_path / "o4")
    raw = tmp_path / "tokyo"
    _write_db_struct(raw / "datasets" / "tokyo247.mat", "test", ["03814/a_012_000.jpg"], np.array([[1.0, 2.0]]),
                     [], np.zeros((0, 2)))
    _image(raw / "tokyo247" / "03814" / "a_012_000.png")
    _image(raw / "queries" / "q7.jpg")  # its q7.csv (the position) is missing
    with pytest.raises(UserError, match=r"raw folder .*tokyo: expected q7.csv, the position file of the query q7.jpg"):
        FORMATTERS["tokyo247"](raw, tmp_path / "o5")
    assert not any(p.name.startswith(".o") for p in tmp_path.iterdir())  # no staging folder left behind


def test_images_are_hard_linked_or_copied_across_file_systems(tmp_path, monkeypatch):
    import errno
    import os

    from vprlab.data.formatters import _common

    raw = tmp_path / "SPEDTEST"
    _vpr_bench(raw, 2, 2)
    FORMATTERS["sped"](raw, tmp_path / "linked")
    assert os.stat(tmp_path / "linked" / "ref" / "0000000.jpg").st_ino == os.stat(raw / "ref" / "0000000.jpg").st_ino

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(_common.os, "link", cross_device)
    FORMATTERS["sped"](raw, tmp_path / "copied")
    copied, original = tmp_path / "copied" / "ref" / "0000001.jpg", raw / "ref" / "0000001.jpg"
    assert copied.read_bytes() == original.read_bytes() and os.stat(copied).st_ino != os.stat(original).st_ino
