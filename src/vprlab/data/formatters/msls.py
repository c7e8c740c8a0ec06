"""Mapillary Street-Level Sequences (MSLS) validation set: the official 740-query protocol
(``msls_val``), every validation query (``msls_val_all``) and the challenge test folders
(``msls_challenge``).

Raw input: the MSLS download extracted into one folder (https://www.mapillary.com/dataset/places,
after logging in), holding ``train_val/<city>/{query,database}/`` with ``images/<key>.jpg``,
``raw.csv`` (``,key,lon,lat,ca,captured_at,pano``), ``postprocessed.csv``
(``,key,easting,northing,unique_cluster,control_panel,night,view_direction``) and
``subtask_index.csv`` (one boolean column per subtask, ``all`` among them), and ``test/<city>/...``.

The 740 queries are what mapillary_sls' own ``MSLS(mode='val', cities='cph,sf', task='im2im',
subtask='all', posDistThr=25)`` (used by its ``evaluate.py`` and to make GSV-Cities'
``msls_val_*.npy``) selects: per city, in the order cph then sf and in csv row order, the images
marked ``all`` in ``subtask_index.csv`` and not panoramas in ``raw.csv``, for the database and the
queries alike (18,871 database images, 747 queries); a query counts (``qIdx``) when a database
image of its city lies within 25 m in the ``postprocessed.csv`` UTM coordinates (740 of the 747),
and ``pIdx`` lists those database images. The released GSV-Cities lists have the same shape:
``msls_val_qImages.npy`` 747 entries, ``msls_val_qIdx.npy`` 740.

OpenVPRLab's ``msls-val.zip`` (``cph/``, ``sf/`` and ``msls_val_{ref_image_names,query_image_names,
ground_truth_25m}.npy``, the 740 queries already selected) is also accepted for ``msls_val``: its lists
are checked and renamed to the ones the config reads.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprlab.data.benchmark_readers import positives_within_radius
from vprlab.data.formatters._common import (
    FormatResult,
    downloader_name,
    find_lists,
    image_files,
    place_all,
    place_tree,
    positives_array,
    refuse_existing_lists,
    repackage_lists,
    require,
    require_raw_dir,
    staged_folder,
    utm_zone,
    write_npy_lists,
)
from vprlab.utils.errors import DataError, MissingFileError

VAL_CITIES = ("cph", "sf")  # mapillary_sls default_cities['val'], in its order
POSITIVE_RADIUS_M = 25.0
RAW_HINT = "the MSLS download extracted into one folder (train_val/<city>/{query,database}/ ...)"


@dataclass
class _Split:
    """One ``train_val/<city>/<query|database>`` folder's rows."""

    city: str
    folder: str  # query | database
    keys: list[str]
    utm: np.ndarray
    lat: list[float]
    lon: list[float]
    pano: np.ndarray
    in_all: np.ndarray
    night: list[bool]
    view: list[str]

    def path(self, i: int) -> str:
        return f"train_val/{self.city}/{self.folder}/images/{self.keys[i]}.jpg"


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _column(path: Path, rows: list[dict[str, str]], columns: list[str], name: str) -> list[str]:
    if name not in columns:
        raise DataError(f"{path} has columns {columns}, no {name!r}; it is not an MSLS metadata file")
    return [row[name] for row in rows]


def _flag(values: list[str], path: Path, name: str) -> np.ndarray:
    unknown = sorted({v for v in values if v not in ("True", "False")})
    if unknown:
        raise DataError(f"{path}: column {name!r} holds {unknown[:3]}, not True/False")
    return np.array([v == "True" for v in values], dtype=bool)


def read_split(raw_dir: Path, city: str, folder: str) -> _Split:
    """The metadata of ``train_val/<city>/<folder>``, its three csv files checked against each other."""
    base = f"train_val/{city}/{folder}"
    raw_path = require(raw_dir, f"{base}/raw.csv", "MSLS metadata", RAW_HINT)
    post_path = require(raw_dir, f"{base}/postprocessed.csv", "MSLS metadata", RAW_HINT)
    sub_path = require(raw_dir, f"{base}/subtask_index.csv", "MSLS subtask index", RAW_HINT)
    raw_cols, raw = _rows(raw_path)
    post_cols, post = _rows(post_path)
    sub_cols, sub = _rows(sub_path)
    if not len(raw) == len(post) == len(sub):
        raise DataError(f"{raw_dir / base}: raw.csv has {len(raw)} rows, postprocessed.csv {len(post)} and "
                        f"subtask_index.csv {len(sub)}; they must describe the same images, row by row")
    keys = _column(raw_path, raw, raw_cols, "key")
    for other_path, other, other_cols in ((post_path, post, post_cols), (sub_path, sub, sub_cols)):
        if "key" in other_cols and _column(other_path, other, other_cols, "key") != keys:
            raise DataError(f"{other_path} lists other keys (or another order) than {raw_path}")
    try:
        utm = np.array([[float(e), float(n)] for e, n in zip(_column(post_path, post, post_cols, "easting"),
                                                              _column(post_path, post, post_cols, "northing"))],
                       dtype=np.float64).reshape(-1, 2)
        lat = [float(v) for v in _column(raw_path, raw, raw_cols, "lat")]
        lon = [float(v) for v in _column(raw_path, raw, raw_cols, "lon")]
    except ValueError as err:
        raise DataError(f"{raw_dir / base}: a coordinate is not a number ({err})") from None
    return _Split(
        city=city, folder=folder, keys=keys, utm=utm, lat=lat, lon=lon,
        pano=_flag(_column(raw_path, raw, raw_cols, "pano"), raw_path, "pano"),
        in_all=_flag(_column(sub_path, sub, sub_cols, "all"), sub_path, "all"),
        night=[v == "True" for v in _column(post_path, post, post_cols, "night")],  # only names the file
        view=_column(post_path, post, post_cols, "view_direction"),
    )


def official_selection(raw_dir: Path) -> dict[str, object]:
    """Database, queries, qIdx and pIdx of the official protocol (see the module docstring)."""
    db_images: list[str] = []
    q_images: list[str] = []
    q_index: list[int] = []
    positives: list[np.ndarray] = []
    for city in VAL_CITIES:
        db, q = read_split(raw_dir, city, "database"), read_split(raw_dir, city, "query")
        db_rows = np.flatnonzero(db.in_all & ~db.pano)
        q_rows = np.flatnonzero(q.in_all & ~q.pano)
        found = positives_within_radius(db.utm[db_rows], q.utm[q_rows], POSITIVE_RADIUS_M)
        for i, pos in enumerate(found):
            if len(pos):
                q_index.append(len(q_images) + i)
                positives.append(pos + len(db_images))
        db_images.extend(db.path(i) for i in db_rows)
        q_images.extend(q.path(i) for i in q_rows)
    return {"dbImages": db_images, "qImages": q_images, "qIdx": q_index, "pIdx": positives}


OPENVPRLAB_FILES = ("msls_val_ref_image_names.npy", "msls_val_query_image_names.npy", "msls_val_ground_truth_25m.npy")


def format_msls_val(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``msls_val``: ``msls_val_{dbImages,qImages,qIdx,pIdx}.npy`` in ``out_dir`` and the listed
    images (hard links of the raw files where possible). From the raw MSLS download
    (``train_val/``: the official selection is computed) or from OpenVPRLab's ``msls-val.zip``
    (``cph/``, ``sf/`` and its three lists, taken as they are)."""
    raw_dir, out_dir = require_raw_dir(raw_dir), Path(out_dir)
    release = find_lists(raw_dir, OPENVPRLAB_FILES, ("msls-val", "msls_val"))
    if release is not None and not (raw_dir / "train_val").is_dir():
        return repackage_lists("msls_val", "msls_val", release, out_dir, OPENVPRLAB_FILES, query_index=True)
    if not (raw_dir / "train_val").is_dir():
        raise MissingFileError(
            f"raw folder {raw_dir}: expected the MSLS download (train_val/<city>/{{query,database}}/) or OpenVPRLab's "
            f"msls-val release ({', '.join(OPENVPRLAB_FILES)} next to cph/ and sf/); found neither"
        )
    refuse_existing_lists(out_dir, "msls_val")
    sel = official_selection(raw_dir)
    place_tree(raw_dir, out_dir, [*sel["dbImages"], *sel["qImages"]], "msls_val images")
    write_npy_lists(out_dir, "msls_val", {
        "dbImages": np.array(sel["dbImages"]),
        "qImages": np.array(sel["qImages"]),
        "qIdx": np.asarray(sel["qIdx"], dtype=np.int64),
        "pIdx": positives_array(sel["pIdx"]),
    })
    return FormatResult("msls_val", out_dir, len(sel["dbImages"]), len(sel["qIdx"]))


def _utm_name(split: _Split, i: int) -> str:
    zone, letter = utm_zone(split.lat[i], split.lon[i])
    note = f"{'night' if split.night[i] else 'day'}_{split.view[i].lower()}_{split.city}"
    return downloader_name(split.utm[i, 0], split.utm[i, 1], zone, letter, split.lat[i], split.lon[i],
                           pano_id=split.keys[i], note=note)


def format_msls_val_all(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``msls_val_all``: ``database/`` = the official 18,871 database images, ``queries/`` = every
    non-panorama query image of cph and sf (no subtask filter), named
    ``@east@north@zone@letter@lat@lon@<key>@...@<day|night>_<view>_<city>@.jpg`` with the UTM of
    ``postprocessed.csv`` (the coordinates the official ground truth uses)."""
    raw_dir = require_raw_dir(raw_dir)
    pairs = []
    counts = {"database": 0, "queries": 0}
    with staged_folder(out_dir) as stage:
        for city in VAL_CITIES:
            for folder, target, use_subtask in (("database", "database", True), ("query", "queries", False)):
                split = read_split(raw_dir, city, folder)
                keep = ~split.pano & (split.in_all if use_subtask else True)
                for i in np.flatnonzero(keep):
                    src = require(raw_dir, split.path(i), "an MSLS image listed in raw.csv", RAW_HINT)
                    pairs.append((src, stage / target / _utm_name(split, i)))
                    counts[target] += 1
        names = [dst for _, dst in pairs]
        if len(set(names)) != len(names):
            raise DataError(f"raw folder {raw_dir}: two MSLS images map to one file name; the csv files list a key twice")
        place_all(pairs, "msls_val_all images")
    return FormatResult("msls_val_all", Path(out_dir), counts["database"], counts["queries"])


def format_msls_challenge(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``msls_challenge``: the test cities' ``test/<city>/{query,database}/images/*.jpg`` placed under
    ``out_dir`` as they are (the config reads them with glob patterns; no ground truth exists)."""
    raw_dir = require_raw_dir(raw_dir)
    test = require(raw_dir, "test", "the MSLS test folder test/<city>/{query,database}/images/", RAW_HINT)
    pairs, counts = [], {"database": 0, "query": 0}
    with staged_folder(out_dir) as stage:
        for city in sorted(p.name for p in test.iterdir() if p.is_dir()):
            for folder in ("database", "query"):
                images = image_files(require(raw_dir, f"test/{city}/{folder}/images", "MSLS test images", RAW_HINT))
                pairs.extend((p, stage / p.relative_to(raw_dir)) for p in images)
                counts[folder] += len(images)
        if not counts["query"]:
            raise MissingFileError(f"raw folder {raw_dir}: no images in test/<city>/query/images/")
        place_all(pairs, "msls_challenge images")
    return FormatResult("msls_challenge", Path(out_dir), counts["database"], counts["query"])
