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
import hashlib
import inspect
import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vprlab.data.benchmark import Benchmark, _as_positive_arrays, _require_file
from vprlab.data.synthetic import SyntheticConfig
from vprlab.utils.errors import DataError, MissingFileError
from vprlab.utils.images import as_hw
from vprlab.utils.io import load_npy

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"})
PATHS_FILE_SUFFIX = "_images_paths.txt"
_GLOB_CHARS = re.compile(r"[*?\[]")
_LAST_INTEGER = re.compile(r"(\d+)(?!.*\d)")

ImageSize = int | Sequence[int] | None
log = logging.getLogger(__name__)


def is_hidden(name: str) -> bool:
    """``.DS_Store``, macOS ``._photo.jpg`` resource forks, ``.thumbnails/``: never benchmark images."""
    return name.startswith(".")


def _is_image(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike, where: str, what: str = "images") -> list[str]:
    """Image paths (sorted) for ``where``, relative to ``root``: a folder searched recursively,
    the ``<folder>_images_paths.txt`` list next to it when there is one, or a glob pattern
    (``test/*/query/images/*.jpg``). Hidden files and folders (``.*``, macOS ``._*``) are skipped."""
    root = Path(root)
    if _GLOB_CHARS.search(where):
        paths = sorted(
            str(p) for p in root.glob(where)
            if _is_image(p.name) and not any(is_hidden(part) for part in p.relative_to(root).parts)
        )
        if not paths:
            raise MissingFileError(f"no {what} match {root / where}; check the benchmark root and the pattern")
        return paths
    folder = root / where
    listing = Path(str(folder) + PATHS_FILE_SUFFIX)
    if listing.is_file():
        relative = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not relative:
            raise DataError(f"{listing} lists no images; delete it to list {folder} instead")
        paths = [str(folder / line) for line in relative]
        if not Path(paths[0]).is_file():
            raise MissingFileError(
                f"{listing} lists {relative[0]!r} but {paths[0]} does not exist; the list does not belong to "
                f"{folder} (paths must be relative to it), regenerate or delete it"
            )
        return paths
    if not folder.is_dir():
        raise MissingFileError(
            f"{what} folder {folder} does not exist; set the benchmark root (the folder that holds "
            f"{where!r}), or the {where!r} option if it is named differently"
        )
    paths = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories[:] = [d for d in subdirectories if not is_hidden(d)]  # .thumbnails/, .git/ ...
        paths.extend(os.path.join(directory, name) for name in names if _is_image(name))
    paths.sort()
    if not paths:
        raise MissingFileError(f"{what} folder {folder} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


# --------------------------------------------------------------------------- UTM folders


def utm_from_filename(path: str | os.PathLike) -> tuple[float, float]:
    """(east, north) from a ``@UTM_east@UTM_north@...`` file name."""
    fields = Path(path).name.split("@")
    try:
        return float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise DataError(
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
        raise DataError(f"positive radius must be > 0 metres, got {radius}")
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
        raise MissingFileError(
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
        raise DataError(f"frame_id={source!r}; use one of {FRAME_ID_SOURCES}")
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
            raise DataError(
                f"image {path}: no frame number in {where}; set frame_id to one of {FRAME_ID_SOURCES} "
                "to match how the dataset names its frames"
            ) from None
    return frames


def positives_within_frames(db_frames: np.ndarray, query_frames: np.ndarray, threshold: int) -> list[np.ndarray]:
    """Per query, the sorted database indices whose frame differs by at most ``threshold``."""
    if threshold < 0:
        raise DataError(f"frame_threshold must be >= 0, got {threshold}")
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
        raise MissingFileError(f"benchmark root {root} does not exist; it should hold {database!r} and {queries!r}")
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


GT_DB_COUNT, GT_DB_HASH = "db_count", "db_names_sha256"


def database_record(db_paths: Sequence[str], database_dir: str | os.PathLike) -> tuple[int, str]:
    """(count, SHA-256 of the sorted names) of a database: what a ``gt.csv`` records about the
    database it was made for. Names are relative to ``database_dir``, with ``/`` separators."""
    names = sorted(Path(os.path.relpath(p, database_dir)).as_posix() for p in db_paths)
    return len(names), hashlib.sha256("\n".join(names).encode()).hexdigest()


def write_gt_csv(
    root: str | os.PathLike, positives: Sequence[Sequence[int]], query_files: Sequence[str] | None = None,
    gt_file: str = "gt.csv", database: str = "database", queries: str = "queries",
) -> Path:
    """Write ``<root>/<gt_file>`` for the images now in ``<root>/<database>`` and ``<root>/<queries>``:
    one row per query with its positive database indices and files, and the database record
    (``db_count``, ``db_names_sha256``) that :func:`load_gt_csv_benchmark` checks. ``query_files``
    default to the query folder's images in name order."""
    from vprlab.utils.io import atomic_write_text

    root = Path(root)
    db_paths = list_images(root, database, "database images")
    if query_files is None:
        query_files = [Path(os.path.relpath(p, root)).as_posix() for p in list_images(root, queries, "query images")]
    if len(query_files) != len(positives):
        raise DataError(f"{len(query_files)} queries but {len(positives)} positive lists")
    count, digest = database_record(db_paths, root / database)
    lines = [["query_index", "query_file", "positive_db_indices", "positive_db_files", GT_DB_COUNT, GT_DB_HASH]]
    for i, (query, listed) in enumerate(zip(query_files, positives)):
        listed = [int(j) for j in listed]
        files = " ".join(Path(os.path.relpath(db_paths[j], root)).as_posix() for j in listed)
        lines.append([str(i), query, " ".join(map(str, listed)), files, str(count), digest])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return atomic_write_text(root / gt_file, buffer.getvalue())


def record_gt_database(root: str | os.PathLike, gt_file: str = "gt.csv", database: str = "database") -> Path:
    """Add (or refresh) the database record of an existing ``gt.csv`` from the database folder as it
    is now. Only for a folder known to be the one the ground truth was made for."""
    from vprlab.utils.io import atomic_write_text

    root = Path(root)
    gt_path = root / gt_file
    with gt_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [c for c in (reader.fieldnames or []) if c not in (GT_DB_COUNT, GT_DB_HASH)]
        rows = list(reader)
    count, digest = database_record(list_images(root, database, "database images"), root / database)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, [*header, GT_DB_COUNT, GT_DB_HASH], lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, GT_DB_COUNT: count, GT_DB_HASH: digest} for row in rows)
    return atomic_write_text(gt_path, buffer.getvalue())


def _int_list(text: str, where: str, column: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise DataError(f"{where}: {column} {text!r} is not a list of integers") from None


def _read_gt_rows(gt_path: Path, required: Sequence[str]) -> tuple[list[tuple[int, dict[str, str]]], set[str]]:
    """(line number, row) of every row of the CSV, and its columns; a row with a missing field, an extra
    one or an empty ``required`` one is an error naming the file and the line."""
    with gt_path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row:
                raise DataError(f"{gt_path} line {line}: {len(reader.fieldnames) + len(row[None])} fields where the "
                                 f"header has {len(reader.fieldnames)}; fix or delete that row")
            short = [c for c in reader.fieldnames if row.get(c) is None]
            empty = [c for c in required if c in columns and row.get(c) is not None and not row[c].strip()]
            if short or empty:
                what = (f"{len(reader.fieldnames) - len(short)} fields where the header has {len(reader.fieldnames)} "
                        f"(no {', '.join(short)})" if short else f"an empty {', '.join(empty)}")
                raise DataError(f"{gt_path} line {line}: {what}; fix or delete that row")
            rows.append((line, row))
    return rows, columns


def _check_database_record(
    gt_path: Path, rows: list[tuple[int, dict[str, str]]], db_paths: list[str], database_dir: Path, file_column: str,
) -> None:
    """Refuse a database folder other than the one ``gt_path`` records (count and hash of names)."""
    recorded = {(row[GT_DB_COUNT].strip(), row[GT_DB_HASH].strip()) for _, row in rows}
    if len(recorded) != 1:
        raise DataError(f"{gt_path}: the {GT_DB_COUNT}/{GT_DB_HASH} columns differ between rows; "
                         "each row records the same database")
    ((count_text, digest),) = recorded
    try:
        count = int(count_text)
    except ValueError:
        raise DataError(f"{gt_path} line {rows[0][0]}: {GT_DB_COUNT} {count_text!r} is not an integer") from None
    actual_count, actual_digest = database_record(db_paths, database_dir)
    if (actual_count, actual_digest) == (count, digest):
        return
    names = {os.path.normpath(p) for p in db_paths}
    root = gt_path.parent
    listed = sorted({f for _, row in rows for f in (row.get(file_column) or "").split()})
    gone = [f for f in listed if os.path.normpath(root / f) not in names]
    what = (f"{database_dir} holds {actual_count} images but {gt_path.name} was made for {count}"
            if actual_count != count else
            f"the {actual_count} image names in {database_dir} differ from those {gt_path.name} was made for "
            f"({GT_DB_HASH} {actual_digest[:12]}..., recorded {digest[:12]}...)")
    if gone:
        what += f"; missing: {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}"
    raise DataError(
        f"{gt_path}: {what}. Its indices count positions in the name-sorted database, so another set of "
        "images would shift them and give wrong recalls. Restore the database folder as it was (added, "
        "deleted or renamed images, a partial copy), or remake the ground truth for this folder "
        "(vprlab.data.benchmark_readers.write_gt_csv)"
    )


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
    to the database folder's images sorted by name. The CSV records the database it was made for,
    ``db_count`` and ``db_names_sha256`` (the SHA-256 of the sorted names, see
    :func:`database_record`), and a database folder that differs is refused; when the CSV also
    names the files (``positive_db_files`` / ``db_file``) they are checked against that order too.
    ``index_tolerance=n`` also accepts the n database images on either side of each positive.
    Every parse error names the file and the line.
    """
    root = Path(root)
    gt_path = root / gt_file
    if not gt_path.is_file():
        raise MissingFileError(
            f"ground-truth file {gt_path} does not exist; a gt_csv benchmark needs {gt_file} next to "
            f"{database}/ and {queries}/ in the benchmark root"
        )
    db_paths = list_images(root, database, "database images")
    rows, columns = _read_gt_rows(gt_path, ("query_index", "query_file", "db_index", GT_DB_COUNT, GT_DB_HASH))
    if not rows:
        raise DataError(f"{gt_path} has no rows; it must list every query")
    if "query_file" not in columns or not ({"positive_db_indices", "db_index"} & columns):
        raise DataError(
            f"{gt_path} has columns {sorted(columns)}; it needs query_file and positive_db_indices "
            "(space-separated) or db_index"
        )
    if "query_index" in columns:
        for line, row in rows:
            try:
                row["query_index"] = int(row["query_index"])
            except ValueError:
                raise DataError(f"{gt_path} line {line}: query_index {row['query_index']!r} is not an integer") from None
        rows.sort(key=lambda item: item[1]["query_index"])
        indices = [row["query_index"] for _, row in rows]
        if indices != list(range(len(rows))):
            raise DataError(f"{gt_path}: query_index must run 0..{len(rows) - 1} once each; got {indices[:5]}...")
    many = "positive_db_indices" in columns
    file_column = "positive_db_files" if many else "db_file"
    if {GT_DB_COUNT, GT_DB_HASH} <= columns:
        _check_database_record(gt_path, rows, db_paths, root / database, file_column)
    elif file_column not in columns:
        log.warning(
            "%s records neither the database it was made for (%s, %s) nor the database files (%s): a database "
            "folder that changed would shift its indices unnoticed; add the record with "
            "vprlab.data.benchmark_readers.record_gt_database(%r) while the folder is as it was",
            gt_path, GT_DB_COUNT, GT_DB_HASH, file_column, str(root),
        )
    resolved_db = [os.path.normpath(p) for p in db_paths]
    tolerance = int(index_tolerance)
    if tolerance < 0:
        raise DataError(f"index_tolerance must be >= 0, got {index_tolerance}")
    query_paths, positives = [], []
    for line, row in rows:
        where = f"{gt_path} line {line}"
        query_paths.append(str(root / row["query_file"].strip()))
        column = "positive_db_indices" if many else "db_index"
        listed = _int_list(row[column], where, column)
        for index in listed:
            if not 0 <= index < len(db_paths):
                raise DataError(f"{where}: database index {index} outside [0, {len(db_paths)}) of {root / database}")
        if row.get(file_column):
            files = row[file_column].split()
            if len(files) != len(listed):
                raise DataError(f"{where}: {len(listed)} positive indices but {len(files)} files")
            for index, file in zip(listed, files):
                if os.path.normpath(root / file) != resolved_db[index]:
                    raise DataError(
                        f"{where}: database index {index} is {db_paths[index]} in name order but the file "
                        f"says {file}; the folder holds other images than the ground truth was made for"
                    )
        if tolerance:
            listed = [j for i in listed for j in range(i - tolerance, i + tolerance + 1) if 0 <= j < len(db_paths)]
        positives.append(np.unique(np.asarray(listed, dtype=np.int64)))
    missing = [p for p in query_paths if not Path(p).is_file()]
    if missing:
        raise MissingFileError(f"{gt_path} lists {len(missing)} query images that do not exist, e.g. {missing[0]}")
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
        raise DataError(
            f"benchmark {name!r} in {root} was detected as format {fmt!r}, which does not take {unknown}; "
            f"its options are {sorted(accepted - {'root', 'name'})}"
        )
    return reader(root=root, name=name, **options)


def detect_format(root: str | os.PathLike, name: str, prefix: str | None = None, lists_dir: str | None = None) -> str:
    """The format of the benchmark in ``root``: npy, gt_csv or utm_folder."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"benchmark root {root} does not exist")
    if (Path(lists_dir or root) / f"{prefix or name}_dbImages.npy").is_file():
        return "npy"
    if prefix is None and npy_prefixes(Path(lists_dir or root)):
        return "npy"
    if (root / "gt.csv").is_file():
        return "gt_csv"
    if (root / "database").is_dir() or Path(str(root / "database") + PATHS_FILE_SUFFIX).is_file():
        return "utm_folder"
    raise MissingFileError(
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
    # Only the synthetic benchmark is generated here; a real one (Pitts30k, Nordland...) is downloaded.
    get = ("generate it with `vprlab synth --root <data_dir>/synthetic` (or `make quickstart`)"
           if name == SyntheticConfig.benchmark_name else
           "get the data as docs/evaluation.md's benchmark table says (`vprlab benchmarks` lists the roots)")
    hint = (
        f"the .npy benchmark {name!r} needs {', '.join(files)} in {lists} and the images under {root}; "
        f"fix the benchmark root (or lists_dir/prefix), or {get}"
    )
    if not root.is_dir():
        raise MissingFileError(f"benchmark root {root} does not exist; {hint}")
    db = load_npy(_require_file(lists / files[0], "database list", hint), "database list")
    q = load_npy(_require_file(lists / files[1], "query list", hint), "query list")
    gt = load_npy(_require_file(lists / files[2], "ground-truth file", hint), "ground-truth file")
    if query_index_suffix:
        query_index = load_npy(_require_file(lists / files[3], "query index file", hint), "query index file")
        query_index = np.asarray(query_index, dtype=np.int64).reshape(-1)
        if len(query_index) and (query_index.min() < 0 or query_index.max() >= len(q)):
            raise DataError(
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
