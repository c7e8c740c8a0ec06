"""Published files on disk: downloaded once into the torch hub cache (:func:`release_file`; the
further files of a model that needs several, e.g. AnyLoc's DINOv2 weights: :func:`extra_files`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vprlab.pretrained.registry import PublishedModel, ReleaseFile, published_model
from vprlab.utils.errors import DownloadError, MissingFileError

log = logging.getLogger(__name__)


def files_summary(spec: PublishedModel) -> str:
    """For a model of several files: `` (NAME needs 2 files: A, the ... (URL), at PATH; B ...)``; else ""."""
    if not spec.extra_files:
        return ""
    parts = [f"{f.download_name}, the {f.what} ({f.url or f.manual_download}), at {f.local_path()}" for f in spec.files()]
    return f" ({spec.name} needs {len(parts)} files: {'; '.join(parts)})"


def _fetch(spec: PublishedModel, file: ReleaseFile, use_instead: str, progress: bool) -> Path:
    """``file`` from the cache, else downloaded once (one attempt); errors name the URL and the place."""
    cached = file.local_path()
    if cached.is_file():
        return cached
    if file.url is None:
        raise MissingFileError(
            f"{spec.name}: {file.file_name} cannot be downloaded by URL; get it from {file.manual_download} and "
            f"{use_instead}{files_summary(spec)}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", file.url, cached)
    try:
        torch.hub.download_url_to_file(file.url, str(cached), progress=progress)
    except Exception as err:  # no network, proxy, interrupted download...: all end the same way
        raise DownloadError(
            f"could not download {file.url} ({type(err).__name__}: {err}). Without network access, fetch "
            f"{file.download_name} elsewhere and {use_instead}{files_summary(spec)}"
        ) from err
    return cached


def release_file(name: str, *, progress: bool = True) -> Path:
    """Path of a published model's file in the torch hub cache (``<hub dir>/checkpoints/<file>``, where
    ``torch.hub.load_state_dict_from_url`` keeps it too; NetVLAD, MegaLoc and AnyLoc use their own
    sub-folders), downloaded once if it is not there. One attempt, no retries: offline, the error names
    the URL and the path to put the file at (for a model of several files, every file and its place).
    Files without a URL (Google Drive: MixVPR, Conv-AP) are never fetched; the error says where to get them."""
    spec = published_model(name)
    cached = spec.local_path()
    use_instead = (  # the name the URL serves: what a user who fetches the file by hand has
        f"pass its path: weights=/path/{spec.download_name} (load_pretrained, torch.hub) or "
        f"pretrained.path=/path/{spec.download_name} (evaluate.py, train.py), or copy it to {cached}"
    )
    return _fetch(spec, spec.files()[0], use_instead, progress)


def extra_files(name: str, beside: str | Path | None = None, *, progress: bool = True) -> list[Path]:
    """The paths of the further files of the published model ``name`` (``extra_files``), in order: each
    is taken from the folder ``beside`` (that of a local copy of the main file) when it is there, else
    from the torch hub cache, else downloaded once (one attempt; the error names every file, its URL
    and its place)."""
    spec = published_model(name)
    paths = []
    for file in spec.extra_files:
        local = [Path(beside) / n for n in dict.fromkeys((file.download_name, file.file_name))] if beside is not None else []
        found = next((p for p in local if p.is_file()), None)
        if found is not None:
            paths.append(found)
            continue
        where = f"put it next to the main file ({Path(beside) / file.download_name}) or " if beside is not None else ""
        paths.append(_fetch(spec, file, f"{where}copy it to {file.local_path()}", progress))
    return paths
