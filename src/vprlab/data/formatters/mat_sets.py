"""Sets described by a NetVLAD ``dbStruct`` .mat file: Pittsburgh 30k/250k and Tokyo 24/7.

The ``dbStruct`` (Arandjelovic et al., NetVLAD) has the fields ``whichSet``, ``dbImageFns``
(database file names, relative to the image root), ``utmDb`` (2 x N UTM east/north), ``qImageFns``,
``utmQ``, ``numImages``, ``numQueries``, ``posDistThr`` (25 m), ``posDistSqThr`` and
``nonTrivPosDistSqThr``. It is read with :func:`scipy.io.loadmat` (MATLAB v5 files; nothing in it
is executed).

Pittsburgh (images from the authors, https://www.di.ens.fr/willow/research/netvlad/): the raw
folder holds ``000/``...``010/`` (database), ``queries_real/`` and ``datasets/pitts30k_{train,val,test}.mat``
/ ``pitts250k_{train,val,test}.mat`` (VPR-datasets-downloader's ``format_pitts30k.py`` expects the
same tree). Output: the GSV-Cities lists ``<name>_{dbImages,qImages,gt}.npy`` with the paths of
``dbImageFns`` and ``queries_real/`` + ``qImageFns`` (the released lists name images exactly so),
positives = database images within ``posDistThr`` of the query, and the listed images under the
same relative paths. OpenVPRLab's ``pitts30k-val.zip`` (images with ``pitts30k_val_{dbImages,qImages,gt_25m}.npy``)
is taken as it is, its lists renamed to the ones the config reads.

Tokyo 24/7 (database from the authors, queries ``247query_subset_v2.zip`` from
https://data.ciirc.cvut.cz/public/projects/2015netVLAD/Tokyo247/queries/): the raw folder holds
``datasets/tokyo247.mat``, ``tokyo247/03814/`` ... ``03829/`` (database PNGs; the .mat names them
.jpg) and the queries, ``<id>.jpg`` + ``<id>.csv`` (first line ``pano_id,lat,lon,...``), in
``247query_subset_v2/`` or ``queries/``, or the zip ``247query_subset_v2.zip`` itself (read in place).
As VPR-datasets-downloader's ``format_tokyo247.py`` does, database PNGs are saved as JPEG, queries
resized to 480 pixels on the short side, and names carry the UTM of the .mat (database) or of the
csv's lat/lon (queries).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vprlab.data.benchmark_readers import positives_within_radius
from vprlab.data.formatters._common import (
    FormatResult,
    downloader_name,
    find_lists,
    folder_or_zip,
    latlon_to_utm,
    open_source,
    place_tree,
    positives_array,
    refuse_existing_lists,
    repackage_lists,
    require,
    require_raw_dir,
    staged_folder,
    write_npy_lists,
)
from vprlab.utils.errors import DataError, MissingFileError
from vprlab.utils.progress import progress_bar

PITTS_HINT = "the Pittsburgh images (000/ ... and queries_real/) and datasets/<split>.mat from the authors"
TOKYO_HINT = "datasets/tokyo247.mat, tokyo247/038XX/ (database) and 247query_subset_v2/ or its .zip (queries)"
TOKYO_QUERY_SIZE = 480  # short side, as format_tokyo247.py resizes the queries
DB_STRUCT_FIELDS = ("dbImageFns", "utmDb", "qImageFns", "utmQ")


def _cell_strings(cells: np.ndarray) -> list[str]:
    out = []
    for cell in np.asarray(cells, dtype=object).ravel():
        while isinstance(cell, np.ndarray):
            if cell.size != 1:
                raise DataError(f"a dbStruct file-name cell holds {cell.size} values where one name was expected")
            cell = cell.ravel()[0]
        out.append(str(cell).strip())
    return out


def read_db_struct(path: Path) -> dict[str, object]:
    """Database/query file names and UTM coordinates (N x 2) and ``posDistThr`` of a dbStruct .mat."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except (NotImplementedError, ValueError, OSError) as err:
        raise DataError(f"{path} is not a readable MATLAB v5 .mat file ({err}); use the file from the authors") from None
    if "dbStruct" not in mat:
        raise DataError(f"{path} holds {sorted(k for k in mat if not k.startswith('__'))}, no dbStruct")
    struct = mat["dbStruct"]
    names = struct.dtype.names or ()
    missing = [f for f in DB_STRUCT_FIELDS if f not in names]
    if missing:
        raise DataError(f"{path}: dbStruct has fields {list(names)}, missing {missing}")
    record = struct.ravel()[0]
    db, q = _cell_strings(record["dbImageFns"]), _cell_strings(record["qImageFns"])
    utm_db = np.asarray(record["utmDb"], dtype=np.float64)
    utm_q = np.asarray(record["utmQ"], dtype=np.float64)
    if utm_db.shape != (2, len(db)) or utm_q.shape != (2, len(q)):
        raise DataError(f"{path}: utmDb is {utm_db.shape} for {len(db)} database images and utmQ {utm_q.shape} for "
                        f"{len(q)} queries; expected 2 x N")
    threshold = float(np.asarray(record["posDistThr"]).ravel()[0]) if "posDistThr" in names else 25.0
    return {"db": db, "q": q, "utm_db": utm_db.T, "utm_q": utm_q.T, "pos_dist_thr": threshold}


def _format_pittsburgh(name: str, mat_name: str, raw_dir: Path, out_dir: Path) -> FormatResult:
    raw_dir, out_dir = require_raw_dir(raw_dir), Path(out_dir)
    released = (f"{name}_dbImages.npy", f"{name}_qImages.npy", f"{name}_gt_25m.npy")
    release = find_lists(raw_dir, released, (name.replace("_", "-"),))
    if release is not None and not (raw_dir / "datasets" / mat_name).is_file():
        return repackage_lists(name, name, release, out_dir, released, query_index=False)
    refuse_existing_lists(out_dir, name)
    struct = read_db_struct(require(
        raw_dir, f"datasets/{mat_name}", "the Pittsburgh split file",
        PITTS_HINT + f" (or OpenVPRLab's {name.replace('_', '-')} release: {', '.join(released)} with the images)"))
    db = list(struct["db"])
    queries = [f"queries_real/{q}" for q in struct["q"]]
    positives = positives_within_radius(struct["utm_db"], struct["utm_q"], struct["pos_dist_thr"])
    place_tree(raw_dir, out_dir, db + queries, f"{name} images")
    write_npy_lists(out_dir, name, {
        "dbImages": np.array(db), "qImages": np.array(queries), "gt": positives_array(positives),
    })
    return FormatResult(name, out_dir, len(db), len(queries))


def format_pitts30k_val(raw_dir: Path, out_dir: Path) -> FormatResult:
    return _format_pittsburgh("pitts30k_val", "pitts30k_val.mat", raw_dir, out_dir)


def format_pitts30k_test(raw_dir: Path, out_dir: Path) -> FormatResult:
    return _format_pittsburgh("pitts30k_test", "pitts30k_test.mat", raw_dir, out_dir)


def format_pitts250k_test(raw_dir: Path, out_dir: Path) -> FormatResult:
    return _format_pittsburgh("pitts250k_test", "pitts250k_test.mat", raw_dir, out_dir)


def _tokyo_db_name(filename: str, east: float, north: float) -> str:
    stem = Path(filename).stem
    tile = re.search(r"_012_(\d+)$", stem)
    return downloader_name(east, north, 54, "S", pano_id=stem[:22], tile_num=int(tile.group(1)) // 30 if tile else None)


def _resize_short_side(image, size: int):
    from PIL import Image

    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return image.resize(new, Image.BILINEAR)


def _tokyo_query(text: str, where: str) -> tuple[str, float, float]:
    lines = text.splitlines()
    fields = lines[0].split(",") if lines else []
    try:
        return fields[0].replace(".jpg", ""), float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise DataError(f"{where}: the first line should be 'pano_id,lat,lon,...'; got {fields[:3]}") from None


def format_tokyo247(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``tokyo247``: ``database/`` (75,984 JPEGs from the .mat list) and ``queries/`` (315)."""
    from PIL import Image

    raw_dir = require_raw_dir(raw_dir)
    struct = read_db_struct(require(raw_dir, "datasets/tokyo247.mat", "the Tokyo 24/7 dbStruct", TOKYO_HINT))
    sources = [require(raw_dir, f"tokyo247/{Path(f).with_suffix('.png')}", "a Tokyo 24/7 database image", TOKYO_HINT)
               for f in struct["db"]]
    query_files = folder_or_zip(raw_dir, "247query_subset_v2", "247query_subset_v2.zip", "the Tokyo 24/7 queries",
                                TOKYO_HINT, folders=("queries",))
    query_images = sorted(n for n in query_files if n.lower().endswith(".jpg"))
    if not query_images:
        raise DataError(f"raw folder {raw_dir}: the Tokyo 24/7 query folder holds no .jpg queries")
    for name in query_images:
        if Path(name).with_suffix(".csv").name not in query_files:
            raise MissingFileError(f"raw folder {raw_dir}: expected {Path(name).with_suffix('.csv').name}, the "
                                   f"position file of the query {name}, next to it ({TOKYO_HINT})")
    with staged_folder(out_dir) as stage:
        (stage / "database").mkdir()
        (stage / "queries").mkdir()
        for src, filename, (east, north) in progress_bar(list(zip(sources, struct["db"], struct["utm_db"])),
                                                         desc="tokyo247 database", unit="img"):
            with Image.open(src) as image:
                image.convert("RGB").save(stage / "database" / _tokyo_db_name(filename, east, north))
        for name in progress_bar(query_images, desc="tokyo247 queries", unit="img"):
            csv_source = query_files[str(Path(name).with_suffix(".csv"))]
            text = csv_source.decode() if isinstance(csv_source, bytes) else csv_source.read_text()
            pano, lat, lon = _tokyo_query(text, f"{raw_dir}: {Path(name).with_suffix('.csv')}")
            east, north, zone, letter = latlon_to_utm(lat, lon)
            with open_source(query_files[name]) as f, Image.open(f) as image:
                _resize_short_side(image.convert("RGB"), TOKYO_QUERY_SIZE).save(
                    stage / "queries" / downloader_name(east, north, zone, letter, lat, lon, pano_id=pano))
        num_db = len(list((stage / "database").iterdir()))
        if num_db != len(sources):
            raise DataError(f"{len(sources)} database images in {raw_dir}/datasets/tokyo247.mat map to {num_db} file "
                            "names; the .mat lists an image twice")
    return FormatResult("tokyo247", Path(out_dir), len(sources), len(query_images))
