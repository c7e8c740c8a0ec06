"""Readers for the folder formats of VPR benchmarks; each builds the one :class:`Benchmark` type.

- ``utm_folder``: the VPR-methods-evaluation / gsv-cities test layout, ``<root>/database`` and
  ``<root>/queries`` holding ``@UTM_east@UTM_north@zone@letter@lat@lon@...@.jpg`` files (or a
  ``<folder>_images_paths.txt`` next to a huge folder listing its images, one relative path a
  line). A database image is a positive of a query when their UTM positions are at most
  ``positive_radius_m`` apart (25 m, the standard threshold).
- ``frames``: sequences such as Nordland, where a database image is a positive when its frame
  number is within ``frame_threshold`` frames of the query's.
- ``gt_csv``: ``database/``, ``queries/`` and a ``gt.csv`` listing each query's positive
  database indices (the small real datasets in ``shared/data/real``).
- ``npy``: the GSV-Cities / BoQ validation lists (``<prefix>_dbImages.npy`` ...).
- ``auto``: picks one of those from what ``root`` holds.

:data:`READERS` is the one format -> reader table.

Image lists are sorted by path, so database indices are stable across machines.
"""

from __future__ import annotations

import csv
import inspect
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vprlab.data.benchmark import Benchmark, _as_positive_arrays, _require_file
from vprlab.utils.images import as_hw
from vprlab.utils.io import load_npy

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"})
PATHS_FILE_SUFFIX = "_images_paths.txt"
_GLOB_CHARS = re.compile(r"[*?\[]")
_LAST_INTEGER = re.compile(r"(\d+)(?!.*\d)")

ImageSize = int | Sequence[int] | None


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike, where: str, what: str = "images") -> list[str]:
    """Image paths (sorted) for ``where``, relative to ``root``: a folder searched recursively,
    the ``<folder>_images_paths.txt`` list next to it when there is one, or a glob pattern
    (``test/*/query/images/*.jpg``)."""
    root = Path(root)
    if _GLOB_CHARS.search(where):
        paths = sorted(str(p) for p in root.glob(where) if _is_image(p.name))
        if not paths:
            raise FileNotFoundError(f"no {what} match {root / where}; check the benchmark root and the pattern")
        return paths
    folder = root / where
    listing = Path(str(folder) + PATHS_FILE_SUFFIX)
    if listing.is_file():
        relative = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not relative:
            raise ValueError(f"{listing} lists no images; delete it to list {folder} instead")
        paths = [str(folder / line) for line in relative]
        if not Path(paths[0]).is_file():
            raise FileNotFoundError(
                f"{listing} lists {relative[0]!r} but {paths[0]} does not exist; the list does not belong to "
                f"{folder} (paths must be relative to it), regenerate or delete it"
            )
        return paths
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} folder {folder} does not exist; set the benchmark root (the folder that holds "
            f"{where!r}), or the {where!r} option if it is named differently"
        )
    paths = sorted(
        os.path.join(directory, name)
        for directory, _, names in os.walk(folder, followlinks=True)
        for name in names
        if _is_image(name)
    )
    if not paths:
        raise FileNotFoundError(f"{what} folder {folder} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


# --------------------------------------------------------------------------- UTM folders


def utm_from_filename(path: str | os.PathLike) -> tuple[float, float]:
    """(east, north) from a ``@UTM_east@UTM_north@...`` file name."""
    fields = Path(path).name.split("@")
    try:
        return float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"image {path}: the file name is not in the @UTM_east@UTM_north@zone@letter@lat@lon@...@.jpg "
            "format, so its position is unknown; format the dataset with VPR-datasets-downloader, or use "
            "another benchmark format (npy, gt_csv, frames)"
        ) from None


def utm_coordinates(paths: Sequence[str]) -> np.ndarray:
    """[N, 2] float64 UTM (east, north) of every path."""
    return np.array([utm_from_filename(p) for p in paths], dtype=np.float64).reshape(-1, 2)


def positives_within_radius(db_utm: np.ndarray, query_utm: np.ndarray, radius: float) -> list[np.ndarray]:
    """Per query, the sorted database indices at Euclidean distance <= ``radius`` (KD-tree)."""
    from scipy.spatial import cKDTree

    if radius <= 0:
        raise ValueError(f"positive radius must be > 0 metres, got {radius}")
    if len(query_utm) == 0:
        return []
    if len(db_utm) == 0:
        return [np.zeros(0, np.int64) for _ in range(len(query_utm))]
    neighbours = cKDTree(db_utm).query_ball_point(query_utm, r=float(radius))
    return [np.sort(np.asarray(found, dtype=np.int64)) for found in neighbours]


def load_utm_folder_benchmark(
    root: str | os.PathLike,
    name: str,
    database: str = "database",
    queries: str = "queries",
    positive_radius_m: float = 25.0,
    image_size: ImageSize = None,
    queries_without_positive: str = "miss",
    ground_truth: bool = True,
    submission_format: str | None = None,
) -> Benchmark:
    """Database and queries from two folders (or globs) under ``root``; positives within
    ``positive_radius_m`` metres. ``ground_truth=False`` (MSLS challenge) skips the positions:
    the file names need no UTM, recall is not computed and only predictions are written."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"benchmark root {root} does not exist; it should hold {database!r} and {queries!r} "
            "(VPR-datasets-downloader layout: <dataset>/images/test)"
        )
    db_paths = list_images(root, database, "database images")
    query_paths = list_images(root, queries, "query images")
    if ground_truth:
        positives = positives_within_radius(utm_coordinates(db_paths), utm_coordinates(query_paths), positive_radius_m)
        protocol = f"database images within {positive_radius_m:g} m (UTM) of the query"
    else:
        positives = [np.zeros(0, np.int64) for _ in query_paths]
        protocol = "no public ground truth; predictions are scored by the benchmark's server"
    return Benchmark(
        name=name,
        db_paths=db_paths,
        query_paths=query_paths,
        positives=positives,
        image_size=image_size,
        queries_without_positive=queries_without_positive,
        has_ground_truth=bool(ground_truth),
        submission_format=submission_format,
        protocol=protocol,
    )


# --------------------------------------------------------------------------- frame windows

FRAME_ID_SOURCES = ("auto", "at_field", "stem_number", "position")


def frame_numbers(paths: Sequence[str], source: str = "auto", at_field: int = 7) -> np.ndarray:
    """Frame number of every path.

    ``at_field``: the ``@``-separated field ``at_field`` of the file name (the VPR-datasets-downloader
    Nordland stores the frame there, in the pano_id slot); ``stem_number``: the last integer in the
    file name (``images-01230.png`` -> 1230); ``position``: the index in the sorted list;
    ``auto``: ``at_field`` for ``@`` names, else ``stem_number``.
    """
    if source not in FRAME_ID_SOURCES:
        raise ValueError(f"frame_id={source!r}; use one of {FRAME_ID_SOURCES}")
    if source == "position":
        return np.arange(len(paths), dtype=np.int64)
    frames = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        filename = Path(path).name
        use_field = source == "at_field" or (source == "auto" and "@" in filename)
        try:
            if use_field:
                frames[i] = int(filename.split("@")[at_field])
            else:
                frames[i] = int(_LAST_INTEGER.search(Path(filename).stem).group(1))
        except (IndexError, ValueError, AttributeError):
            where = f"field {at_field} of its @-separated name" if use_field else "a number in its file name"
            raise ValueError(
                f"image {path}: no frame number in {where}; set frame_id to one of {FRAME_ID_SOURCES} "
                "to match how the dataset names its frames"
            ) from None
    return frames


def positives_within_frames(db_frames: np.ndarray, query_frames: np.ndarray, threshold: int) -> list[np.ndarray]:
    """Per query, the sorted database indices whose frame differs by at most ``threshold``."""
    if threshold < 0:
        raise ValueError(f"frame_threshold must be >= 0, got {threshold}")
    order = np.argsort(db_frames, kind="stable")
    sorted_frames = db_frames[order]
    low = np.searchsorted(sorted_frames, query_frames - threshold, side="left")
    high = np.searchsorted(sorted_frames, query_frames + threshold, side="right")
    return [np.sort(order[a:b]).astype(np.int64) for a, b in zip(low, high)]


def load_frame_window_benchmark(
    root: str | os.PathLike,
    name: str,
    database: str = "database",
    queries: str = "queries",
    frame_threshold: int = 10,
    frame_id: str = "auto",
    at_field: int = 7,
    image_size: ImageSize = None,
    queries_without_positive: str = "miss",
) -> Benchmark:
    """Database and queries from two folders under ``root``; a database image is a positive when
    its frame number is within ``frame_threshold`` frames of the query's (Nordland: 10)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark root {root} does not exist; it should hold {database!r} and {queries!r}")
    db_paths = list_images(root, database, "database images")
    query_paths = list_images(root, queries, "query images")
    positives = positives_within_frames(
        frame_numbers(db_paths, frame_id, at_field), frame_numbers(query_paths, frame_id, at_field), int(frame_threshold)
    )
    return Benchmark(
        name=name,
        db_paths=db_paths,
        query_paths=query_paths,
        positives=positives,
        image_size=image_size,
        queries_without_positive=queries_without_positive,
        protocol=f"database frames within {int(frame_threshold)} frames of the query",
    )


# --------------------------------------------------------------------------- gt.csv


def _int_list(text: str, where: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a list of integers") from None


def load_gt_csv_benchmark(
    root: str | os.PathLike,
    name: str,
    gt_file: str = "gt.csv",
    database: str = "database",
    queries: str = "queries",
    index_tolerance: int = 0,
    image_size: ImageSize = None,
    queries_without_positive: str = "miss",
) -> Benchmark:
    """A folder with ``database/``, ``queries/`` and a ground-truth CSV.

    The CSV has one row per query: ``query_index``, ``query_file`` (relative to ``root``) and
    either ``positive_db_indices`` (space-separated) or ``db_index`` (one positive). Indices refer
    to the database folder's images sorted by name; when the CSV also names the files
    (``positive_db_files`` / ``db_file``) they are checked against that order.
    ``index_tolerance=n`` also accepts the n database images on either side of each positive.
    """
    root = Path(root)
    gt_path = root / gt_file
    if not gt_path.is_file():
        raise FileNotFoundError(
            f"ground-truth file {gt_path} does not exist; a gt_csv benchmark needs {gt_file} next to "
            f"{database}/ and {queries}/ in the benchmark root"
        )
    db_paths = list_images(root, database, "database images")
    with gt_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{gt_path} has no rows; it must list every query")
    columns = set(rows[0])
    if "query_file" not in columns or not ({"positive_db_indices", "db_index"} & columns):
        raise ValueError(
            f"{gt_path} has columns {sorted(columns)}; it needs query_file and positive_db_indices "
            "(space-separated) or db_index"
        )
    if "query_index" in columns:
        rows.sort(key=lambda row: int(row["query_index"]))
        indices = [int(row["query_index"]) for row in rows]
        if indices != list(range(len(rows))):
            raise ValueError(f"{gt_path}: query_index must run 0..{len(rows) - 1} once each; got {indices[:5]}...")
    many = "positive_db_indices" in columns
    file_column = "positive_db_files" if many else "db_file"
    resolved_db = [os.path.normpath(p) for p in db_paths]
    tolerance = int(index_tolerance)
    if tolerance < 0:
        raise ValueError(f"index_tolerance must be >= 0, got {index_tolerance}")
    query_paths, positives = [], []
    for line, row in enumerate(rows, start=2):
        where = f"{gt_path} line {line}"
        query_paths.append(str(root / row["query_file"].strip()))
        listed = _int_list(row["positive_db_indices" if many else "db_index"], where)
        for index in listed:
            if not 0 <= index < len(db_paths):
                raise ValueError(f"{where}: database index {index} outside [0, {len(db_paths)}) of {root / database}")
        if row.get(file_column):
            files = row[file_column].split()
            if len(files) != len(listed):
                raise ValueError(f"{where}: {len(listed)} positive indices but {len(files)} files")
            for index, file in zip(listed, files):
                if os.path.normpath(root / file) != resolved_db[index]:
                    raise ValueError(
                        f"{where}: database index {index} is {db_paths[index]} in name order but the file "
                        f"says {file}; the folder holds other images than the ground truth was made for"
                    )
        if tolerance:
            listed = [j for i in listed for j in range(i - tolerance, i + tolerance + 1) if 0 <= j < len(db_paths)]
        positives.append(np.unique(np.asarray(listed, dtype=np.int64)))
    missing = [p for p in query_paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{gt_path} lists {len(missing)} query images that do not exist, e.g. {missing[0]}")
    protocol = "positives listed in " + gt_file + (f" (+/- {tolerance} database images)" if tolerance else "")
    return Benchmark(
        name=name,
        db_paths=db_paths,
        query_paths=query_paths,
        positives=positives,
        image_size=image_size,
        queries_without_positive=queries_without_positive,
        protocol=protocol,
    )


# --------------------------------------------------------------------------- auto


def _call_with_options(reader, fmt: str, root: Path, name: str, options: dict[str, Any]) -> Benchmark:
    accepted = set(inspect.signature(reader).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"benchmark {name!r} in {root} was detected as format {fmt!r}, which does not take {unknown}; "
            f"its options are {sorted(accepted - {'root', 'name'})}"
        )
    return reader(root=root, name=name, **options)


def detect_format(root: str | os.PathLike, name: str, prefix: str | None = None, lists_dir: str | None = None) -> str:
    """The format of the benchmark in ``root``: npy, gt_csv or utm_folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark root {root} does not exist")
    if (Path(lists_dir or root) / f"{prefix or name}_dbImages.npy").is_file():
        return "npy"
    if prefix is None and npy_prefixes(Path(lists_dir or root)):
        return "npy"
    if (root / "gt.csv").is_file():
        return "gt_csv"
    if (root / "database").is_dir() or Path(str(root / "database") + PATHS_FILE_SUFFIX).is_file():
        return "utm_folder"
    raise FileNotFoundError(
        f"cannot tell the format of the benchmark in {root}: expected {prefix or name}_dbImages.npy (npy), "
        "gt.csv (gt_csv) or database/ + queries/ with @UTM@ file names (utm_folder); set format= explicitly"
    )


def npy_prefixes(folder: Path) -> list[str]:
    """The prefixes of the ``<prefix>_dbImages.npy`` lists in ``folder`` (with their qImages list)."""
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len("_dbImages.npy")] for p in folder.glob("*_dbImages.npy")
                  if (folder / p.name.replace("_dbImages.npy", "_qImages.npy")).is_file())


def load_auto_benchmark(root: str | os.PathLike, name: str, **options: Any) -> Benchmark:
    """Detect the format of ``root`` (see :func:`detect_format`) and read it with ``options``.
    A folder of ``.npy`` lists with another prefix than ``name`` (``mydata_dbImages.npy`` for the
    benchmark ``custom``) is read with that prefix when it holds one set of lists."""
    fmt = detect_format(root, name, options.get("prefix"), options.get("lists_dir"))
    lists = Path(options.get("lists_dir") or root)
    if fmt == "npy" and not options.get("prefix") and not (lists / f"{name}_dbImages.npy").is_file():
        found = npy_prefixes(lists)
        if len(found) > 1:
            raise ValueError(
                f"benchmark {name!r}: {lists} holds several sets of .npy lists ({', '.join(found)}); "
                f"choose one with +benchmark.{name}.prefix=<one of them> (evaluate.py) or prefix=..."
            )
        options = {**options, "prefix": found[0]}
    reader = READERS[fmt]
    return _call_with_options(reader, fmt, Path(root), name, options)


# --------------------------------------------------------------------------- npy


def load_npy_benchmark(
    root: str | os.PathLike,
    name: str,
    image_size: int | Sequence[int] | None = None,
    queries_without_positive: str = "miss",
    prefix: str | None = None,
    lists_dir: str | os.PathLike | None = None,
    gt_suffix: str = "gt",
    query_index_suffix: str | None = None,
    protocol: str = "positives from the ground-truth .npy file",
) -> Benchmark:
    """Read ``<lists_dir>/<prefix>_{dbImages,qImages,<gt_suffix>}.npy`` into a :class:`Benchmark`.

    ``prefix`` defaults to ``name`` and ``lists_dir`` to ``root`` (the GSV-Cities code ships the
    lists apart from the images: point ``lists_dir`` at them). With ``query_index_suffix``
    (MSLS: ``"qIdx"``) the queries are ``qImages[qIdx]``, and the ground truth has one entry
    per selected query (or per entry of qImages, then it is selected the same way).
    """
    root = Path(root)
    prefix = prefix or name
    lists = Path(lists_dir) if lists_dir else root
    files = [f"{prefix}_dbImages.npy", f"{prefix}_qImages.npy", f"{prefix}_{gt_suffix}.npy"]
    if query_index_suffix:
        files.append(f"{prefix}_{query_index_suffix}.npy")
    hint = (
        f"the .npy benchmark {name!r} needs {', '.join(files)} in {lists} and the images under {root}; "
        "fix the benchmark root (or lists_dir/prefix), or run `make quickstart` for the synthetic benchmark"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark root {root} does not exist; {hint}")
    db = load_npy(_require_file(lists / files[0], "database list", hint), "database list")
    q = load_npy(_require_file(lists / files[1], "query list", hint), "query list")
    gt = load_npy(_require_file(lists / files[2], "ground-truth file", hint), "ground-truth file")
    if query_index_suffix:
        query_index = load_npy(_require_file(lists / files[3], "query index file", hint), "query index file")
        query_index = np.asarray(query_index, dtype=np.int64).reshape(-1)
        if len(query_index) and (query_index.min() < 0 or query_index.max() >= len(q)):
            raise ValueError(
                f"{lists / files[3]} selects query {int(query_index.max())} but {files[1]} lists {len(q)}; "
                "the two files come from different releases"
            )
        if len(gt) == len(q) and len(gt) != len(query_index):
            gt = gt[query_index]
        q = q[query_index]
    return Benchmark(
        name=name,
        db_paths=[str(root / str(p)) for p in db],
        query_paths=[str(root / str(p)) for p in q],
        positives=_as_positive_arrays(gt),
        image_size=as_hw(image_size) if image_size is not None else None,
        queries_without_positive=queries_without_positive,
        protocol=protocol,
    )


READERS: dict[str, Callable[..., Benchmark]] = {
    "npy": load_npy_benchmark,
    "utm_folder": load_utm_folder_benchmark,
    "frames": load_frame_window_benchmark,
    "gt_csv": load_gt_csv_benchmark,
    "auto": load_auto_benchmark,
}
