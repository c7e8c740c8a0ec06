"""Sets read as folders of ``@UTM@`` (or ``@frame@``) named images, the VPR-datasets-downloader /
VPR-methods-evaluation layout: ``<root>/database/`` (SVOX: ``gallery/``) and ``<root>/queries*/``.

Already in that layout when obtained (placed as they are, every name checked):

- Eynsham, St Lucia, Nordland (Patch-NetVLAD split, ``nordland_10frames``), Baidu: the folders
  VPR-datasets-downloader serves by rsync (``rsync://vandaldata.polito.it/sf_xl/VPR-datasets-downloader/<name>``),
  ``<name>/images/test/{database,queries}``;
- SVOX: the archive ``download_svox.py`` fetches, ``svox/images/test/{gallery,queries,queries_<condition>}``;
- SF-XL: the processed test split from the CosPlace authors, ``sf_xl/processed/test/{database,queries_v1,queries_v2}``
  (a ``database_images_paths.txt`` is written so that 2.8M files are not listed at every evaluation).

Formatted here from the source's own files, as VPR-datasets-downloader's scripts do:

- AmsterTime (``download_amstertime.py``): ``new/<pair>.png`` (database, saved as JPEG) and
  ``old/<pair>.jpg`` (queries), or ``AmsterTime-v1.0.zip`` holding them, read in place; the pairs have no positions, so pair ``k`` is placed at the mock
  UTM position east 0, north ``1000 k``: both images of a pair at one point, pairs 1 km apart;
- San Francisco Landmark (``download_san_francisco.py``): database images named
  ``<a>_<b>_<pano>_<lat>_<lon>_<building>_<tile>_<carto>_<heading>_<pitch>.jpg`` anywhere under the raw
  folder (the extracted ``PCIs_*.tar`` archives), the 598 queries in
  ``BuildingQueryImagesCartoIDCorrected-Upright/<id>.jpg`` (or its zip) with their UTM (zone 10S) in
  ``reference_poses_598/reference_poses_addTM_all_598.txt`` (or ``reference_poses_598.zip``).
- GSV-Cities (training set, the Kaggle download): ``Dataframes/<City>.csv`` + ``Images/<City>/``,
  placed as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from vprlab.data.benchmark_readers import frame_numbers, utm_from_filename
from vprlab.data.formatters._common import (
    FormatResult,
    downloader_name,
    find_layout,
    folder_or_zip,
    image_files,
    latlon_to_utm,
    open_source,
    place_all,
    put_source,
    require,
    require_raw_dir,
    staged_folder,
    write_paths_file,
    zip_member,
)
from vprlab.utils.errors import DataError, MissingFileError
from vprlab.utils.progress import progress_bar


def _check_names(paths: Sequence[Path], frames: bool) -> None:
    if frames:
        frame_numbers([str(p) for p in paths], source="at_field")
    else:
        for path in paths:
            utm_from_filename(path)


def _place_folders(
    name: str, raw_dir: Path, out_dir: Path, folders: Sequence[str], dataset_dir: str, database: str = "database",
    frames: bool = False, paths_file: bool = False,
) -> FormatResult:
    """Find ``folders`` in the raw download, check every image name, place them under ``out_dir``."""
    raw_dir = require_raw_dir(raw_dir)
    root = find_layout(raw_dir, folders, ["", "images/test", f"{dataset_dir}/images/test", "processed/test",
                                          f"{dataset_dir}/processed/test"], f"the {name} folders")
    counts = {}
    pairs = []
    with staged_folder(out_dir) as stage:
        for folder in folders:
            images = image_files(root / folder, recursive=True)
            if not images:
                raise MissingFileError(f"raw folder {raw_dir}: {root / folder} holds no images")
            _check_names(images, frames)
            counts[folder] = len(images)
            pairs.extend((p, stage / folder / p.relative_to(root / folder)) for p in images)
        place_all(pairs, f"{name} images")
        if paths_file:
            write_paths_file(stage / database, [dst for _, dst in pairs if dst.is_relative_to(stage / database)])
    queries = {f: n for f, n in counts.items() if f != database}
    return FormatResult(name, Path(out_dir), counts[database], sum(queries.values()), queries)


def format_eynsham(raw_dir: Path, out_dir: Path) -> FormatResult:
    return _place_folders("eynsham", raw_dir, out_dir, ["database", "queries"], "eynsham")


def format_st_lucia(raw_dir: Path, out_dir: Path) -> FormatResult:
    return _place_folders("st_lucia", raw_dir, out_dir, ["database", "queries"], "st_lucia")


def format_baidu(raw_dir: Path, out_dir: Path) -> FormatResult:
    return _place_folders("baidu", raw_dir, out_dir, ["database", "queries"], "baidu")


def format_nordland_10frames(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``nordland_10frames``: the frame number of every image must be in its 7th ``@`` field."""
    return _place_folders("nordland_10frames", raw_dir, out_dir, ["database", "queries"], "nordland", frames=True)


SVOX_QUERY_FOLDERS = ("queries", "queries_night", "queries_overcast", "queries_rain", "queries_snow", "queries_sun")


def format_svox(raw_dir: Path, out_dir: Path) -> FormatResult:
    """Every ``svox_*`` benchmark: ``gallery/`` and the six query folders in one root."""
    return _place_folders("svox", raw_dir, out_dir, ["gallery", *SVOX_QUERY_FOLDERS], "svox", database="gallery")


def format_sfxl(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``sfxl_v1`` and ``sfxl_v2``: ``database/``, ``queries_v1/``, ``queries_v2/`` in one root."""
    return _place_folders("sfxl", raw_dir, out_dir, ["database", "queries_v1", "queries_v2"], "sf_xl",
                          paths_file=True)


AMSTERTIME_HINT = "the AmsterTime release: new/*.png and old/*.jpg, or AmsterTime-v1.0.zip holding them"


def format_amstertime(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``amstertime``: ``database/`` and ``queries/``, 1,231 pairs in the released archive (read from
    ``new/`` + ``old/`` or, not unpacked, from ``AmsterTime-v1.0.zip``)."""
    from PIL import Image

    raw_dir = require_raw_dir(raw_dir)
    database = folder_or_zip(raw_dir, "new", "AmsterTime-v1.0.zip", "the AmsterTime database images", AMSTERTIME_HINT)
    queries = folder_or_zip(raw_dir, "old", "AmsterTime-v1.0.zip", "the AmsterTime query images", AMSTERTIME_HINT)
    db_by_stem = {Path(n).stem: s for n, s in database.items() if not n.endswith(".csv")}
    q_by_stem = {Path(n).stem: s for n, s in queries.items() if not n.endswith(".csv")}
    if sorted(db_by_stem) != sorted(q_by_stem) or not db_by_stem:
        unpaired = sorted(set(db_by_stem) ^ set(q_by_stem))
        raise DataError(f"raw folder {raw_dir}: new/ and old/ must hold the same pair names; "
                        f"unpaired: {unpaired[:5] or 'no images at all'}")
    with staged_folder(out_dir) as stage:
        (stage / "database").mkdir()
        (stage / "queries").mkdir()
        for stem in progress_bar(sorted(db_by_stem), desc="amstertime pairs", unit="pair"):
            try:
                pair = int(stem)
            except ValueError:
                raise DataError(f"raw folder {raw_dir}: {stem} is not a numbered AmsterTime pair") from None
            name = downloader_name(0, 1000 * pair, pano_id=stem)
            with open_source(db_by_stem[stem]) as f, Image.open(f) as image:
                image.convert("RGB").save(stage / "database" / name, format="JPEG")
            put_source(q_by_stem[stem], stage / "queries" / name)
    return FormatResult("amstertime", Path(out_dir), len(db_by_stem), len(q_by_stem))


SF_QUERY_FOLDER = "BuildingQueryImagesCartoIDCorrected-Upright"
SF_POSES_FILE = "reference_poses_addTM_all_598.txt"
SF_POSES_ARCHIVE = "reference_poses_598.zip"
SF_HINT = ("the extracted PCIs_*.tar database archives, BuildingQueryImagesCartoIDCorrected-Upright/ (or its .zip) "
           "and reference_poses_598/ (or reference_poses_598.zip): download_san_francisco.py's files")


def _heading_from_quaternion(x: float, y: float, w: float, z: float) -> float:
    yaw = math.atan2(2.0 * (z * x + y * w), -1.0 + 2.0 * (x * x + y * y))
    return (((yaw / math.pi) + 1) * 180 + 180) % 360


def _sf_poses(raw_dir: Path) -> tuple[str, list[str]]:
    """(where, lines) of the query pose file: reference_poses_598/<file>, or read from the zip."""
    for path in (raw_dir / "reference_poses_598" / SF_POSES_FILE, *sorted(raw_dir.glob(f"*/{SF_POSES_FILE}"))):
        if path.is_file():
            return str(path), path.read_text().splitlines()
    for archive in (raw_dir / SF_POSES_ARCHIVE, *sorted(raw_dir.glob(f"*/{SF_POSES_ARCHIVE}"))):
        if archive.is_file():
            return f"{archive}:{SF_POSES_FILE}", zip_member(archive, SF_POSES_FILE).decode().splitlines()
    raise MissingFileError(f"raw folder {raw_dir}: expected the San Francisco query poses, "
                           f"reference_poses_598/{SF_POSES_FILE} or {SF_POSES_ARCHIVE}; found neither ({SF_HINT})")


def _sf_database_name(raw_dir: Path, path: Path) -> str:
    fields = path.stem.split("_")
    if len(fields) != 10:
        raise DataError(f"raw folder {raw_dir}: {path.name} is not a San Francisco database name "
                        "(<a>_<b>_<pano>_<lat>_<lon>_<building>_<tile>_<carto>_<heading>_<pitch>.jpg)")
    _, _, pano, lat, lon, _, tile, _, heading, pitch = fields
    try:
        east, north, zone, letter = latlon_to_utm(float(lat), float(lon))
        return downloader_name(east, north, zone, letter, float(lat), float(lon), pano_id=pano,
                               tile_num=int(float(tile)), heading=float(heading), pitch=float(pitch))
    except ValueError:
        raise DataError(f"raw folder {raw_dir}: {path.name} has a non-numeric position or angle") from None


def format_sf_landmark(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``sf_landmark``: San Francisco Landmark database (UTM from each file name's lat/lon) and its
    598 queries (UTM from the reference poses)."""
    raw_dir = require_raw_dir(raw_dir)
    where, lines = _sf_poses(raw_dir)
    queries = folder_or_zip(raw_dir, SF_QUERY_FOLDER, f"{SF_QUERY_FOLDER}.zip", "the San Francisco query images", SF_HINT)
    database = [p for p in image_files(raw_dir, recursive=True) if SF_QUERY_FOLDER not in p.relative_to(raw_dir).parts]
    if not database:
        raise MissingFileError(f"raw folder {raw_dir}: no database images (extract the PCIs_*.tar archives there)")
    pairs: list[tuple[object, str]] = [(p, "database/" + _sf_database_name(raw_dir, p)) for p in database]
    rows = [line for line in lines[1:] if line.strip()]
    for number, line in enumerate(rows, start=2):
        fields = line.split(" ")
        try:
            image_id = fields[1]
            x, y, w, z, east, north = (float(v) for v in fields[2:8])
        except (IndexError, ValueError):
            raise DataError(f"{where} line {number}: expected '<n> <image id> x y w z east north ...'") from None
        if f"{image_id}.jpg" not in queries:
            raise MissingFileError(f"raw folder {raw_dir}: expected the query image {SF_QUERY_FOLDER}/{image_id}.jpg "
                                   f"that {where} line {number} places; the query download is incomplete")
        name = downloader_name(east, north, 10, "S", pano_id=image_id, heading=_heading_from_quaternion(x, y, w, z))
        pairs.append((queries[f"{image_id}.jpg"], "queries/" + name))
    names = [name for _, name in pairs]
    if len(set(names)) != len(names):
        raise DataError(f"raw folder {raw_dir}: two images map to one file name (a database archive extracted twice?)")
    with staged_folder(out_dir) as stage:
        for source, name in progress_bar(pairs, desc="sf_landmark images", unit="img"):
            put_source(source, stage / name)
    return FormatResult("sf_landmark", Path(out_dir), len(database), len(rows))


def format_gsv_cities(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``gsv_cities`` (training): ``Dataframes/<City>.csv`` and ``Images/<City>/`` placed as they are;
    ``num_db`` counts the images, ``num_queries`` is 0."""
    raw_dir = require_raw_dir(raw_dir)
    root = find_layout(raw_dir, ["Dataframes", "Images"], ["", "gsv-cities", "gsv_cities"], "the GSV-Cities folders")
    frames = sorted((root / "Dataframes").glob("*.csv"))
    if not frames:
        raise MissingFileError(f"raw folder {raw_dir}: {root / 'Dataframes'} holds no <City>.csv")
    pairs = [(p, Path("Dataframes") / p.name) for p in frames]
    images = 0
    for csv_path in frames:
        city_images = image_files(require(root, f"Images/{csv_path.stem}", "the images of " + csv_path.stem))
        images += len(city_images)
        pairs.extend((p, p.relative_to(root)) for p in city_images)
    with staged_folder(out_dir) as stage:
        place_all([(src, stage / rel) for src, rel in pairs], "gsv_cities files")
    return FormatResult("gsv_cities", Path(out_dir), images, 0)
