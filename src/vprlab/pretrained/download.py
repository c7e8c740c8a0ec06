"""Published files on disk: downloaded once into the torch hub cache (:func:`release_file`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vprlab.pretrained.registry import published_model
from vprlab.utils.errors import DownloadError, MissingFileError

log = logging.getLogger(__name__)


def release_file(name: str, *, progress: bool = True) -> Path:
    """Path of a published model's file in the torch hub cache (``<hub dir>/checkpoints/<file>``, where
    ``torch.hub.load_state_dict_from_url`` keeps it too; NetVLAD and MegaLoc use their own sub-folders),
    downloaded once if it is not there. One attempt, no retries: offline, the error names the URL and
    the path to put the file at. Files without a URL (Google Drive: MixVPR, Conv-AP) are never fetched;
    the error says where to get them."""
    spec = published_model(name)
    cached = spec.local_path()
    if cached.is_file():
        return cached
    use_instead = (  # the name the URL serves: what a user who fetches the file by hand has
        f"pass its path: weights=/path/{spec.download_name} (load_pretrained, torch.hub) or "
        f"pretrained.path=/path/{spec.download_name} (evaluate.py, train.py), or copy it to {cached}"
    )
    if spec.url is None:
        raise MissingFileError(
            f"{spec.name}: {spec.file_name} cannot be downloaded by URL; get it from {spec.manual_download} and "
            f"{use_instead}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", spec.url, cached)
    try:
        torch.hub.download_url_to_file(spec.url, str(cached), progress=progress)
    except Exception as err:  # no network, proxy, interrupted download...: all end the same way
        raise DownloadError(
            f"could not download {spec.url} ({type(err).__name__}: {err}). Without network access, fetch "
            f"{spec.download_name} elsewhere and {use_instead}"
        ) from err
    return cached
