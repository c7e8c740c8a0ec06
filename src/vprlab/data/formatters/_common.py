"""What every formatter shares: the result type, raw-file checks, atomic output folders, image
placement (hard link, else copy), the VPR-datasets-downloader file names and lat/lon -> UTM.

Two kinds of output:

- a folder of its own (``utm_folder`` / ``frames`` benchmarks: ``database/`` + ``queries/``):
  built in a hidden sibling ``.<out>.partial-<pid>`` and renamed onto ``out_dir`` at the end
  (:func:`staged_folder`); an existing non-empty ``out_dir`` is refused, never overwritten;
- ``.npy`` lists next to the images (``npy`` benchmarks, several of which share one root such as
  ``data/Pittsburgh``): the images go in first (:func:`place_tree`), the lists last
  (:func:`write_npy_lists`, atomic files, ``<prefix>_dbImages.npy`` the very last), so the
  benchmark is readable only once complete; existing lists of the same benchmark are refused.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vprlab.utils.errors import DataError, MissingFileError
from vprlab.utils.io import atomic_write_bytes, atomic_write_text
from vprlab.utils.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class FormatResult:
    """What a formatter wrote: the benchmark root (``out_dir``, the folder a config's ``root`` points
    at) and how many database images and queries it holds. ``query_sets`` gives the count of every
    query folder when one root serves several benchmarks (SVOX conditions, SF-XL v1/v2)."""

    name: str
    out_dir: Path
    num_db: int
    num_queries: int
    query_sets: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- raw input checks


def require(raw_dir: Path, relative: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``raw_dir / relative`` when it exists, else a MissingFileError naming both."""
    path = Path(raw_dir) / relative
    if not path.exists():
        raise MissingFileError(
            f"raw folder {raw_dir}: expected {what} at {path}, which does not exist"
            + (f"; {hint}" if hint else "") + ". Check --from (the folder holding the raw download) "
            "and docs/data_formats.md for the files each dataset needs"
        )
    return path


def require_raw_dir(raw_dir: str | os.PathLike) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise MissingFileError(f"raw folder {raw_dir} does not exist; pass the folder that holds the raw download")
    return raw_dir


def find_layout(raw_dir: Path, folders: Sequence[str], candidates: Sequence[str], what: str) -> Path:
    """The first of ``raw_dir/<candidate>`` that holds every one of ``folders`` (a downloaded set is
    accepted as the dataset folder itself, its ``images/test`` or ``<name>/images/test``)."""
    tried = []
    for candidate in candidates:
        root = raw_dir / candidate if candidate else raw_dir
        tried.append(str(root))
        if all((root / folder).is_dir() for folder in folders):
            return root
    raise MissingFileError(
        f"raw folder {raw_dir}: expected {what}, folders {', '.join(f + '/' for f in folders)} in one of "
        f"{', '.join(tried)}; none holds them all. Point --from at the downloaded folder "
        "(see docs/data_formats.md)"
    )


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files of ``folder`` (hidden files skipped)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- output


def _refuse_existing(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(
            f"output folder {out_dir} already exists and is not empty; a formatted dataset is never "
            "overwritten. Delete it (or choose another output folder) to format again"
        )


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden sibling of ``out_dir`` to build into; rename it onto ``out_dir`` when the block
    ends without an error, delete it otherwise. A non-empty ``out_dir`` is refused up front."""
    out_dir = Path(out_dir)
    _refuse_existing(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        _refuse_existing(out_dir)  # appeared meanwhile
        if out_dir.is_dir():
            out_dir.rmdir()
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def place(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst``: a hard link (no extra disk space) when both are on one file system,
    else a copy. The raw file is never moved or changed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except FileExistsError:
        raise DataError(f"{src} and another raw image map to the same output file {dst.name}; the raw folder "
                        "holds one image twice (an archive extracted twice?)") from None
    except OSError:  # another file system, or links not allowed there
        shutil.copy2(src, dst)


def place_all(pairs: Sequence[tuple[Path, Path]], desc: str) -> None:
    for src, dst in progress_bar(pairs, desc=desc, unit="img"):
        place(src, dst)


def place_tree(raw_root: Path, out_dir: Path, relative_paths: Sequence[str], desc: str) -> None:
    """Place ``raw_root/<p>`` at ``out_dir/<p>`` for every listed path (shared roots: a file already
    there with the same size is kept, one that differs is an error)."""
    missing = [p for p in relative_paths if not (raw_root / p).is_file()]
    if missing:
        raise MissingFileError(
            f"raw folder {raw_root}: {len(missing)} listed images do not exist, e.g. {raw_root / missing[0]}; "
            "the download is incomplete or --from points at the wrong folder"
        )
    todo = []
    for p in relative_paths:
        src, dst = raw_root / p, out_dir / p
        if dst.exists():
            if dst.stat().st_size != src.stat().st_size:
                raise DataError(f"{dst} already exists and differs from {src}; the output folder holds "
                                "another copy of the dataset. Use an empty output folder")
            continue
        todo.append((src, dst))
    place_all(todo, desc)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Ragged ground truth is an object array of int64 arrays, as in the released GSV-Cities lists;
    # vprlab reads it back with vprlab.utils.io.load_npy, which never runs pickled code.
    np.save(buffer, array, allow_pickle=array.dtype == object)
    return buffer.getvalue()


def positives_array(positives: Sequence[np.ndarray]) -> np.ndarray:
    gt = np.empty(len(positives), dtype=object)
    for i, p in enumerate(positives):
        gt[i] = np.asarray(p, dtype=np.int64)
    return gt


def write_npy_lists(out_dir: Path, prefix: str, lists: dict[str, np.ndarray]) -> None:
    """Write ``<prefix>_<suffix>.npy`` for every entry of ``lists``, ``dbImages`` last (the list a
    reader opens first, so a cut-off run never leaves a readable half benchmark). Lists of this
    benchmark that exist already are refused."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = [f"{prefix}_{s}.npy" for s in lists if (out_dir / f"{prefix}_{s}.npy").exists()]
    if existing:
        raise DataError(
            f"{out_dir} already holds {', '.join(existing)}; a formatted benchmark is never overwritten. "
            "Delete those files to format it again"
        )
    for suffix in sorted(lists, key=lambda s: s == "dbImages"):
        atomic_write_bytes(out_dir / f"{prefix}_{suffix}.npy", _npy_bytes(lists[suffix]))


def refuse_existing_lists(out_dir: Path, prefix: str) -> None:
    if (out_dir / f"{prefix}_dbImages.npy").exists():
        raise DataError(
            f"{out_dir} already holds {prefix}_dbImages.npy; a formatted benchmark is never overwritten. "
            f"Delete {out_dir}/{prefix}_*.npy to format it again"
        )


def write_paths_file(folder: Path, paths: Sequence[Path]) -> None:
    """``<folder>_images_paths.txt``: the images of ``folder``, relative to it (the benchmark reader
    uses it instead of listing a folder of millions of files)."""
    lines = sorted(str(p.relative_to(folder)) for p in paths)
    atomic_write_text(Path(str(folder) + "_images_paths.txt"), "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- file names and coordinates

# WGS84 and the UTM scale factor; series of the Transverse Mercator projection (Snyder, "Map
# Projections: A Working Manual", USGS 1987, eqs. 8-9 to 8-10), as the `utm` package computes it.
_K0 = 0.9996
_E2 = 0.00669438
_EP2 = _E2 / (1 - _E2)
_R = 6378137.0
_M1 = 1 - _E2 / 4 - 3 * _E2**2 / 64 - 5 * _E2**3 / 256
_M2 = 3 * _E2 / 8 + 3 * _E2**2 / 32 + 45 * _E2**3 / 1024
_M3 = 15 * _E2**2 / 256 + 45 * _E2**3 / 1024
_M4 = 35 * _E2**3 / 3072
_BANDS = "CDEFGHJKLMNPQRSTUVWXX"


def utm_zone(latitude: float, longitude: float) -> tuple[int, str]:
    """UTM zone number and latitude band letter (with the Norway and Svalbard exceptions)."""
    if not -80.0 <= latitude <= 84.0:
        raise DataError(f"latitude {latitude} is outside the UTM range [-80, 84]")
    if 56 <= latitude < 64 and 3 <= longitude < 12:
        number = 32
    elif 72 <= latitude <= 84 and longitude >= 0:
        number = next((zone for zone, edge in ((31, 9), (33, 21), (35, 33), (37, 42)) if longitude < edge), None)
    else:
        number = None
    if number is None:
        number = int((longitude + 180) // 6) % 60 + 1
    return number, _BANDS[int((latitude + 80) // 8)]


def latlon_to_utm(latitude: float, longitude: float) -> tuple[float, float, int, str]:
    """(easting, northing, zone number, band letter) of a WGS84 position."""
    latitude, longitude = float(latitude), float(longitude)
    number, letter = utm_zone(latitude, longitude)
    lat = math.radians(latitude)
    sin, cos, tan = math.sin(lat), math.cos(lat), math.tan(lat)
    t2, c = tan * tan, _EP2 * cos * cos
    central = math.radians((number - 1) * 6 - 180 + 3)
    a = cos * ((math.radians(longitude) - central + math.pi) % (2 * math.pi) - math.pi)
    n = _R / math.sqrt(1 - _E2 * sin * sin)
    m = _R * (_M1 * lat - _M2 * math.sin(2 * lat) + _M3 * math.sin(4 * lat) - _M4 * math.sin(6 * lat))
    easting = 500000 + _K0 * n * (a + a**3 / 6 * (1 - t2 + c)
                                  + a**5 / 120 * (5 - 18 * t2 + t2 * t2 + 72 * c - 58 * _EP2))
    northing = _K0 * (m + n * tan * (a**2 / 2 + a**4 / 24 * (5 - t2 + 9 * c + 4 * c * c)
                                     + a**6 / 720 * (61 - 58 * t2 + t2 * t2 + 600 * c - 330 * _EP2)))
    if latitude < 0:
        northing += 10_000_000
    return easting, northing, number, letter


def _fixed(value: float, left: int, right: int) -> str:
    # VPR-datasets-downloader's format_coord: zero-padded to left+right+1 characters.
    return f"{float(value):0={left + right + 1}.{right}f}"


def downloader_name(
    easting: float, northing: float, zone: int | None = None, letter: str = "",
    latitude: float | None = None, longitude: float | None = None, pano_id: str = "",
    tile_num: int | None = None, heading: float | None = None, pitch: float | None = None,
    timestamp: str = "", note: str = "", extension: str = ".jpg",
) -> str:
    """The VPR-datasets-downloader file name
    ``@UTM_east@UTM_north@zone@letter@lat@lon@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.jpg``
    (empty fields stay empty; only the two UTM fields are read back)."""
    fields = [
        _fixed(easting, 7, 2), _fixed(northing, 7, 2), f"{int(zone):02d}" if zone is not None else "", letter,
        _fixed(latitude, 3, 5) if latitude is not None else "", _fixed(longitude, 4, 5) if longitude is not None else "",
        str(pano_id), f"{int(tile_num):02d}" if tile_num is not None else "",
        f"{int(heading):03d}" if heading is not None else "", f"{int(pitch):03d}" if pitch is not None else "",
        "", "", timestamp, note,
    ]
    for value in fields:
        if "@" in value or "/" in value:
            raise DataError(f"file-name field {value!r} contains '@' or '/', which the @-separated name cannot hold")
    return "@" + "@".join(fields) + "@" + extension


# --------------------------------------------------------------------------- archives read in place


def zip_images(archive: Path, folder: str) -> dict[str, bytes]:
    """``{stem.suffix: bytes}`` of the images directly inside a folder named ``folder`` (at any depth)
    of a zip archive, read without unpacking it (no member path is ever written to disk)."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            found = {}
            for info in zf.infolist():
                parts = Path(info.filename).parts
                wanted = Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES + (".csv",) if parts else False
                if not info.is_dir() and len(parts) >= 2 and parts[-2] == folder and not parts[-1].startswith(".") and wanted:
                    if parts[-1] in found:
                        raise DataError(f"{archive} holds {parts[-1]} in two folders named {folder}/; "
                                        "it is not the archive the source publishes")
                    found[parts[-1]] = zf.read(info)
            return found
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a readable zip archive (damaged or incomplete download)") from None


def zip_member(archive: Path, filename: str) -> bytes:
    """The bytes of the member of a zip archive whose file name is ``filename`` (at any depth)."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and Path(info.filename).name == filename:
                    return zf.read(info)
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a readable zip archive (damaged or incomplete download)") from None
    raise MissingFileError(f"{archive} holds no {filename}; it is not the archive the source publishes")


Source = Path | bytes  # a raw file on disk, or the bytes of an archive member


def folder_or_zip(raw_dir: Path, folder: str, archive: str, what: str, hint: str,
                  folders: Sequence[str] = ()) -> dict[str, Source]:
    """``{file name: source}`` of the images (and .csv files) of ``folder``: the folder itself
    (``raw_dir/<f>`` for ``f`` in ``(folder, *folders)``, also one level down), else the zip
    ``archive`` (in ``raw_dir`` or one level down) read in place."""
    for name in (folder, *folders):
        for candidate in (raw_dir / name, *sorted(raw_dir.glob(f"*/{name}"))):
            if candidate.is_dir():
                return {p.name: p for p in sorted(candidate.iterdir()) if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in IMAGE_SUFFIXES + (".csv",)}
    for candidate in (raw_dir / archive, *sorted(raw_dir.glob(f"*/{archive}"))):
        if candidate.is_file():
            return zip_images(candidate, folder)
    raise MissingFileError(
        f"raw folder {raw_dir}: expected {what}, the folder {folder}/ "
        + (f"(or {', '.join(f + '/' for f in folders)}) " if folders else "")
        + f"or the archive {archive}, in it or one level down; found neither ({hint})"
    )


def open_source(source: Source):
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def put_source(source: Source, dst: Path) -> None:
    if isinstance(source, bytes):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(source)  # inside a staged folder: published whole or not at all
    else:
        place(source, dst)


# --------------------------------------------------------------------------- lists released with the images


def find_lists(raw_dir: Path, files: Sequence[str], folders: Sequence[str]) -> Path | None:
    """The folder (``raw_dir`` or ``raw_dir/<f>`` for ``f`` in ``folders``) holding every one of ``files``."""
    for root in (raw_dir, *(raw_dir / f for f in folders)):
        if all((root / f).is_file() for f in files):
            return root
    return None


def repackage_lists(
    name: str, prefix: str, lists_root: Path, out_dir: Path, files: Sequence[str], query_index: bool,
) -> FormatResult:
    """A release that ships its images with ``.npy`` lists of another naming (OpenVPRLab's
    ``msls-val.zip`` / ``pitts30k-val.zip``): ``files`` = (database list, query list, ground truth),
    paths relative to ``lists_root``. Read safely, checked, and written as ``<prefix>_dbImages/qImages``
    + ``gt`` (or ``qIdx`` = every query and ``pIdx`` when ``query_index``), with the images placed at
    the same relative paths."""
    from vprlab.utils.io import load_npy

    db = [str(p) for p in load_npy(lists_root / files[0], "database list")]
    queries = [str(p) for p in load_npy(lists_root / files[1], "query list")]
    gt = load_npy(lists_root / files[2], "ground-truth file")
    positives = [np.asarray(p, dtype=np.int64).reshape(-1) for p in gt]
    if len(positives) != len(queries):
        raise DataError(f"{lists_root / files[2]} has {len(positives)} entries for the {len(queries)} queries of "
                        f"{files[1]}; the lists come from different releases")
    bad = [i for i, p in enumerate(positives) if len(p) and (p.min() < 0 or p.max() >= len(db))]
    if bad:
        raise DataError(f"{lists_root / files[2]}: query {bad[0]} lists a database index outside [0, {len(db)})")
    refuse_existing_lists(out_dir, prefix)
    place_tree(lists_root, out_dir, db + queries, f"{name} images")
    lists = {"dbImages": np.array(db), "qImages": np.array(queries)}
    if query_index:
        lists.update(qIdx=np.arange(len(queries), dtype=np.int64), pIdx=positives_array(positives))
    else:
        lists["gt"] = positives_array(positives)
    write_npy_lists(out_dir, prefix, lists)
    return FormatResult(name, out_dir, len(db), len(queries))
