"""Prediction files for benchmarks scored by a server (the MSLS challenge).

MSLS (https://github.com/mapillary/mapillary_sls, Codalab competition 865) takes a text file with one
line per query: the query image key followed by the keys of the predicted database images, best
first, separated by spaces; a key is the image file name without its extension (MSLS image keys).
Lines starting with ``#`` are comments. The server scores Recall@1/5/10/20, so at least 20
predictions are written per query, and it ignores lines for queries it does not score. The file
(named .csv, as in the MSLS examples, though its separator is a space) is uploaded inside a .zip,
which is written next to it.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vprlab.utils.io import atomic_write_bytes, atomic_write_text

MSLS_MIN_PREDICTIONS = 20


def image_key(path: str | os.PathLike) -> str:
    """The MSLS key of an image path: its file name without extension; for a
    VPR-datasets-downloader name (``@...@<key>.jpg``) the last ``@`` field."""
    name = Path(path).name
    key = name.split("@")[-1].rsplit(".", 1)[0] if "@" in name else Path(name).stem
    if not key:
        raise ValueError(f"image {path} has no key (empty file name after the last '@'); MSLS keys name the image")
    return key


def msls_prediction_lines(
    query_paths: Sequence[str], db_paths: Sequence[str], predictions: np.ndarray, top_k: int = 25
) -> list[str]:
    """One ``"<query key> <db key> ..."`` line per query with its ``top_k`` best database keys."""
    predictions = np.asarray(predictions)
    if predictions.shape[0] != len(query_paths):
        raise ValueError(f"{predictions.shape[0]} prediction rows for {len(query_paths)} queries")
    if top_k < MSLS_MIN_PREDICTIONS:
        raise ValueError(f"top_k={top_k}: the MSLS server scores Recall@20, write at least {MSLS_MIN_PREDICTIONS}")
    if predictions.shape[1] < min(top_k, len(db_paths)):
        raise ValueError(f"only {predictions.shape[1]} predictions per query; search with k >= {top_k}")
    db_keys = [image_key(p) for p in db_paths]
    lines = []
    for query, row in zip(query_paths, predictions[:, :top_k]):
        lines.append(" ".join([image_key(query), *(db_keys[int(i)] for i in row)]))
    return lines


def write_msls_predictions(
    path: str | os.PathLike,
    query_paths: Sequence[str],
    db_paths: Sequence[str],
    predictions: np.ndarray,
    top_k: int = 25,
    header: str = "",
) -> tuple[Path, Path]:
    """Write the MSLS predictions file at ``path`` and a .zip holding it; both atomically.
    Returns (text file, zip file)."""
    path = Path(path)
    lines = msls_prediction_lines(query_paths, db_paths, predictions, top_k)
    comments = [f"# {line}" for line in header.splitlines() if line.strip()]
    text = "\n".join(comments + lines) + "\n"
    text_path = atomic_write_text(path, text)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.name, text)
    zip_path = atomic_write_bytes(path.with_suffix(".zip"), buffer.getvalue())
    return text_path, zip_path
