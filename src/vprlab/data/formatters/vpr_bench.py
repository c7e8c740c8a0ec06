"""VPR-Bench sets read through GSV-Cities-style ``.npy`` lists: Nordland* and SPED.

Raw input (the folder itself, or its parent as the zips unpack: ``Nordland/``, ``SPEDTEST/``): the
dataset folder of the VPR-Bench download (https://github.com/MubarizZaffar/VPR-Bench,
files at https://surfdrive.surf.nl/files/index.php/s/sbZRXzYe3l0v67W), holding ``ref/`` and
``query/`` with images numbered ``0000000.jpg``, ``0000001.jpg``, ... (7 digits, consecutive).

Output: ``<prefix>_{dbImages,qImages,gt}.npy`` next to the placed ``ref/`` and ``query/`` images,
the lists naming ``ref/<n>.jpg`` / ``query/<n>.jpg`` in number order (as the lists shipped with
GSV-Cities / MixVPR / SALAD do).

Ground truth (checked against those shipped lists, every query):

- Nordland* (prefix ``Nordland``): 27,592 summer ``ref`` frames, 2,760 winter ``query`` images, one
  every 10 frames; query ``j`` is frame ``10 j`` and its positives are the reference frames
  ``10 j - 1 .. 10 j + 1`` that exist (the 1-frame tolerance of BoQ's Nordland* row).
- SPED (prefix ``SPED``): 607 pairs, query ``j``'s one positive is reference ``j``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vprlab.data.formatters._common import (
    FormatResult,
    find_layout,
    image_files,
    place_tree,
    positives_array,
    refuse_existing_lists,
    require,
    require_raw_dir,
    write_npy_lists,
)
from vprlab.utils.errors import DataError

NORDLAND_QUERY_STEP = 10  # a winter query every 10 frames
NORDLAND_FRAME_TOLERANCE = 1
_NUMBERED = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
HINT = "the VPR-Bench dataset folder with ref/ and query/ (0000000.jpg, 0000001.jpg, ...)"


def _numbered_images(raw_dir: Path, folder: str) -> list[str]:
    """``folder/<name>`` of every image, checked to be numbered 0..N-1 without gaps."""
    images = image_files(require(raw_dir, folder, f"the VPR-Bench {folder}/ folder", HINT))
    numbered = []
    for path in images:
        match = _NUMBERED.match(path.name)
        if not match:
            raise DataError(f"raw folder {raw_dir}: {path} is not named <number>.jpg like the VPR-Bench images")
        numbered.append((int(match.group(1)), f"{folder}/{path.name}"))
    numbered.sort()
    numbers = [n for n, _ in numbered]
    if numbers != list(range(len(numbers))):
        gap = next(i for i, n in enumerate(numbers) if n != i) if numbers else 0
        raise DataError(f"raw folder {raw_dir}: {folder}/ should hold images 0 .. {len(numbers) - 1} without gaps; "
                        f"image number {gap} is missing (the download is incomplete)")
    if not numbered:
        raise DataError(f"raw folder {raw_dir}: {folder}/ holds no images")
    return [p for _, p in numbered]


def _format(name: str, prefix: str, raw_dir: Path, out_dir: Path, positives_of) -> FormatResult:
    raw_dir, out_dir = require_raw_dir(raw_dir), Path(out_dir)
    # The zips hold Nordland/{ref,query} or SPEDTEST/{ref,query}: accept the folder or its parent.
    raw_dir = find_layout(raw_dir, ["ref", "query"],
                          ["", *sorted(p.name for p in raw_dir.iterdir() if p.is_dir())], "the VPR-Bench folders")
    refuse_existing_lists(out_dir, prefix)
    db, queries = _numbered_images(raw_dir, "ref"), _numbered_images(raw_dir, "query")
    positives = positives_of(len(db), len(queries), raw_dir)
    place_tree(raw_dir, out_dir, db + queries, f"{name} images")
    write_npy_lists(out_dir, prefix, {"dbImages": np.array(db), "qImages": np.array(queries),
                                      "gt": positives_array(positives)})
    return FormatResult(name, out_dir, len(db), len(queries))


def nordland_positives(num_db: int, num_queries: int, raw_dir: Path | None = None) -> list[np.ndarray]:
    last_frame = NORDLAND_QUERY_STEP * (num_queries - 1)
    if last_frame >= num_db:
        raise DataError(f"raw folder {raw_dir}: {num_queries} queries (one every {NORDLAND_QUERY_STEP} frames, up to "
                        f"frame {last_frame}) but only {num_db} reference frames; not the VPR-Bench Nordland split")
    positives = []
    for j in range(num_queries):
        frame = NORDLAND_QUERY_STEP * j
        low, high = max(0, frame - NORDLAND_FRAME_TOLERANCE), min(num_db - 1, frame + NORDLAND_FRAME_TOLERANCE)
        positives.append(np.arange(low, high + 1, dtype=np.int64))
    return positives


def sped_positives(num_db: int, num_queries: int, raw_dir: Path | None = None) -> list[np.ndarray]:
    if num_db != num_queries:
        raise DataError(f"raw folder {raw_dir}: SPED pairs every query with one reference image, but ref/ holds "
                        f"{num_db} images and query/ {num_queries}")
    return [np.array([j], dtype=np.int64) for j in range(num_queries)]


def format_nordland(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``nordland`` (Nordland*): ``Nordland_{dbImages,qImages,gt}.npy`` + ``ref/``, ``query/``."""
    return _format("nordland", "Nordland", raw_dir, out_dir, nordland_positives)


def format_sped(raw_dir: Path, out_dir: Path) -> FormatResult:
    """``sped``: ``SPED_{dbImages,qImages,gt}.npy`` + ``ref/``, ``query/``."""
    return _format("sped", "SPED", raw_dir, out_dir, sped_positives)
