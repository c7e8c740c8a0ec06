"""Raw data onto disk: `vprlab data download NAME` (the catalog is :mod:`vprlab.data.sources`).

What a download guarantees (standard library only: ``urllib``, ``zipfile``, ``tarfile``):

- progress with size and rate (:func:`vprlab.utils.progress.progress_bar`, in MB);
- a cut transfer is resumed with an HTTP ``Range`` request into ``<file>.part`` (automatically while
  bytes keep arriving, and on the next run of the same command); a server that ignores ``Range`` is
  read again from the start;
- size (Content-Length, catalog) and checksum (where the source publishes one) are checked before the
  file takes its name; a file that fails is deleted, never used;
- free disk space is checked before starting (the download plus its unpacked copy);
- archives are unpacked into a temporary sibling folder and renamed into place when complete, so a
  half-written folder never carries the dataset's name; members whose path escapes the target
  (absolute, ``..``, links pointing out, devices) are refused before anything is written;
- a folder that is already there is never overwritten.

One attempt when the network is unreachable: the error names the URL and where to put the file
(``--from-file``), like the published-weights download of :mod:`vprlab.pretrained.load`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path, PurePosixPath

from vprlab.data.sources import DataSource, RemoteFile
from vprlab.utils.errors import DataError, DownloadError, MissingFileError, UserError
from vprlab.utils.io import atomic_write_json
from vprlab.utils.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MB = 1000**2
RESUME_ATTEMPTS = 3  # automatic Range resumes of one file, while each attempt brings new bytes


class FolderExistsError(UserError, FileExistsError):
    """A download or format target that is already there (vprlab never overwrites a complete folder)."""

    kind = "folder exists"


class DiskSpaceError(UserError, OSError):
    kind = "not enough disk space"


def human_size(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "unknown size"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num_bytes) < 1000 or unit == "TB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return ""  # unreachable


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """A :class:`DiskSpaceError` naming ``folder`` and the bytes needed when its file system has less free."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DiskSpaceError(
            f"{what} needs {human_size(needed)} ({needed} bytes) in {folder} but its file system has "
            f"{human_size(free)} ({free} bytes) free; free some space or pass another folder (--raw DIR / --data-dir DIR)"
        )


def refuse_existing(folder: Path, hint: str) -> None:
    if folder.exists():
        raise FolderExistsError(f"{folder} already exists; vprlab never overwrites a complete folder. {hint}")


# ----------------------------------------------------------------------------------------- checks


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, size: int | None, checksum: str | None, origin: str, name: str | None = None) -> None:
    """A :class:`DataError` when ``path`` (the file ``name``) has another size or checksum than expected (None: not checked)."""
    name = name or path.name
    seen = path.stat().st_size
    if size is not None and seen != size:
        raise DataError(f"{origin}: {name} has {seen} bytes where {size} are expected; the file is incomplete or another file")
    if checksum:
        algorithm, _, expected = checksum.partition(":")
        actual = file_digest(path, algorithm)
        if actual.lower() != expected.lower():
            raise DataError(f"{origin}: {name} has {algorithm} {actual} where {expected} is published; the file is damaged or another file")


# ----------------------------------------------------------------------------------------- transfer


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "vprlab-data-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _offline_error(remote: RemoteFile, dest: Path, err: BaseException) -> DownloadError:
    return DownloadError(
        f"could not download {remote.url} ({type(err).__name__}: {err}). Without network access, fetch "
        f"{remote.file_name} elsewhere and put it at {dest} (a partial {dest.name}.part is resumed), or pass it "
        "with `vprlab data download NAME --from-file <file>`"
    )


def fetch_file(
    remote: RemoteFile, dest: Path, *, progress: bool = True, timeout: float = 60.0,
    resume_attempts: int = RESUME_ATTEMPTS,
) -> Path:
    """``remote`` at ``dest``: downloaded into ``dest.part`` (resumed with Range when a ``.part`` is there),
    checked (size, checksum), then renamed to ``dest``. A complete ``dest`` is checked and kept."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        check_file(dest, remote.size_bytes, remote.checksum, remote.url)
        return dest
    part = dest.with_name(dest.name + ".part")
    attempts = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        if remote.size_bytes is not None and offset == remote.size_bytes:
            break  # the .part is whole (a previous run was cut after the last byte)
        before = offset
        try:
            complete = _transfer(remote, part, offset, progress=progress, timeout=timeout)
        except UserError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            received = (part.stat().st_size if part.is_file() else 0) - before
            if received <= 0 or attempts >= resume_attempts:
                if received > 0 or part.is_file():
                    raise DownloadError(
                        f"the transfer of {remote.url} was cut ({type(err).__name__}: {err}) with "
                        f"{human_size(part.stat().st_size)} of {remote.file_name} in {part}; run the same command "
                        "again to resume it"
                    ) from err
                raise _offline_error(remote, dest, err) from err
            attempts += 1
            log.warning("transfer of %s cut after %s; resuming (attempt %d)", remote.url, human_size(part.stat().st_size), attempts)
            continue
        if complete:
            break
    try:
        check_file(part, remote.size_bytes, remote.checksum, remote.url, remote.file_name)
    except DataError:
        part.unlink()  # a damaged file is never taken; the next run starts afresh
        raise
    os.replace(part, dest)
    return dest


def _transfer(remote: RemoteFile, part: Path, offset: int, *, progress: bool, timeout: float) -> bool:
    """One request: append to ``part`` from ``offset``. True when the response was read to its end."""
    try:
        response = _open(remote.url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing after offset: the .part is whole, or from another file
            if remote.size_bytes is None or offset == remote.size_bytes:
                return True
            part.unlink()
            return False
        raise
    with response:
        if offset and response.status != 206:  # the server ignored Range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else remote.size_bytes
        if remote.size_bytes is not None and total is not None and total != remote.size_bytes:
            raise DataError(
                f"{remote.url} announces {total} bytes where the catalog has {remote.size_bytes}; "
                "the source changed: check it before using the data"
            )
        if total is not None:
            check_free_space(part.parent, total - offset, f"the download of {remote.file_name}")
        verb = "resuming" if offset else "downloading"
        print(f"{verb} {remote.url} ({human_size(total)}{f', from {human_size(offset)}' if offset else ''}) -> {part.parent}",
              flush=True)
        written = offset
        bar = progress_bar(desc=remote.file_name, total=None if total is None else -(-total // MB),
                           initial=offset // MB, enabled=progress, unit="MB")
        try:
            with open(part, "ab" if offset else "wb") as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    bar.update((written + len(block)) // MB - written // MB)
                    written += len(block)
        finally:
            bar.close()
    if total is not None and written < total:
        raise ConnectionError(f"connection closed after {written} of {total} bytes")
    return True


# ----------------------------------------------------------------------------------------- extraction


def _escapes(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def _link_escapes(member: str, link: str) -> bool:
    if PurePosixPath(link).is_absolute():
        return True
    depth = 0
    for part in (PurePosixPath(member).parent / link).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def unsafe_members(archive: Path) -> list[str]:
    """The members of a zip or tar archive that would be written outside the target folder."""
    bad = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if _escapes(info.filename) or (is_link and _link_escapes(info.filename, zf.read(info).decode("utf-8", "replace"))):
                    bad.append(info.filename)
        return bad
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if _escapes(member.name) or member.isdev():
                bad.append(member.name)
            elif member.issym() and _link_escapes(member.name, member.linkname):
                bad.append(f"{member.name} -> {member.linkname}")
            elif member.islnk() and _escapes(member.linkname):
                bad.append(f"{member.name} => {member.linkname}")
    return bad


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def extract_into(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into the (temporary) ``folder``; refuses an archive with an escaping member."""
    bad = unsafe_members(archive)
    if bad:
        raise DataError(
            f"{archive} holds {len(bad)} member(s) whose path leaves the target folder, e.g. {bad[0]!r}; "
            "refusing to unpack it (the archive is damaged or not the published one)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(folder, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(folder)


def staging_folder(target: Path, purpose: str) -> Path:
    """The temporary sibling of ``target`` a download or format is written into before its rename."""
    return target.parent / f".{target.name}.{purpose}"


def publish_folder(staging: Path, target: Path) -> Path:
    """Rename the finished ``staging`` folder to ``target`` (atomic on one file system)."""
    refuse_existing(target, "Delete it to fetch the data again.")
    os.replace(staging, target)
    return target


PROVENANCE_NAME = ".vprlab-download.json"


def extract_archives(archives: Sequence[Path], target: Path, origin: dict | None = None, keep: Collection[str] = ()) -> Path:
    """Unpack ``archives`` into a temporary sibling of ``target``, then rename it to ``target``; the files
    named in ``keep`` (archives a formatter reads in place) are copied as they are. With ``origin``
    (dataset, URLs...), ``target/.vprlab-download.json`` records it with each archive's size and SHA-256
    (what was unpacked, for a paper's data section or a later comparison)."""
    refuse_existing(target, "Delete it to unpack again.")
    staging = staging_folder(target, "extracting")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run: never taken for data
    try:
        for archive in archives:
            if archive.stat().st_size == 0:
                log.warning("%s is empty; skipped", archive)
                continue
            if archive.name not in keep and is_archive(archive):
                extract_into(archive, staging)
            else:
                staging.mkdir(parents=True, exist_ok=True)
                shutil.copy2(archive, staging / archive.name)
        staging.mkdir(parents=True, exist_ok=True)
        if origin is not None:
            files = [{"file": a.name, "size": a.stat().st_size, "sha256": file_digest(a)} for a in archives]
            atomic_write_json(staging / PROVENANCE_NAME, {**origin, "archives": files,
                                                          "unpacked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return publish_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------------------- sources


def rsync_command(source: DataSource, destination: Path) -> list[str]:
    """The documented VPR-datasets-downloader rsync call (plus --partial, so a cut transfer resumes)."""
    return ["rsync", "-rhz", "--info=progress2", "--partial", "--ignore-existing", f"{source.rsync_source}/", f"{destination}/"]


def _downloads_folder(raw_dir: Path) -> Path:
    return staging_folder(raw_dir, "downloads")


def _from_file(source: DataSource, file: Path, raw_dir: Path) -> Path:
    file = Path(file).expanduser()
    if not file.is_file():
        raise MissingFileError(f"--from-file {file} does not exist")
    if len(source.files) == 1 and source.files[0].file_name == file.name:
        check_file(file, source.files[0].size_bytes, source.files[0].checksum, str(file))
    check_free_space(raw_dir.parent, file.stat().st_size, f"unpacking {file.name}")
    return extract_archives([file], raw_dir, {"dataset": source.name, "from_file": str(file)},
                            keep={r.file_name for r in source.files if not r.extract})


def _http(source: DataSource, raw_dir: Path, progress: bool, timeout: float) -> Path:
    downloads = _downloads_folder(raw_dir)
    remaining = 0
    for remote in source.files:
        done = downloads / remote.file_name
        part = done.with_name(done.name + ".part")
        have = done.stat().st_size if done.is_file() else (part.stat().st_size if part.is_file() else 0)
        if remote.size_bytes is not None:
            remaining += max(0, remote.size_bytes - have)
    if remaining == 0 and source.size_bytes is not None and not downloads.exists():
        remaining = source.size_bytes
    if remaining:  # the archives plus their unpacked copy
        check_free_space(raw_dir.parent, 2 * remaining, f"{source.name} ({source.size} as published, plus its unpacked copy)")
    archives = [fetch_file(remote, downloads / remote.file_name, progress=progress, timeout=timeout) for remote in source.files]
    target = extract_archives(archives, raw_dir, {"dataset": source.name, "urls": [r.url for r in source.files]},
                              keep={r.file_name for r in source.files if not r.extract})
    shutil.rmtree(downloads, ignore_errors=True)  # unpacked: the archives are no longer needed
    return target


def _kaggle(source: DataSource, raw_dir: Path) -> Path:
    manual = (
        f"download {source.source} (the Download button; needs a Kaggle account) and run "
        f"`vprlab data download {source.name} --from-file <the zip>`"
    )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # optional; reads ~/.kaggle/kaggle.json
    except ImportError:
        raise MissingFileError(f"{source.name} comes from Kaggle and the kaggle package is not installed: "
                               f"`pip install kaggle` and put your API token in ~/.kaggle/kaggle.json, or {manual}") from None
    except Exception as err:  # noqa: BLE001 - some kaggle versions authenticate on import (no kaggle.json: OSError)
        raise DownloadError(f"the kaggle package could not start ({type(err).__name__}: {err}): put your API token in "
                            f"~/.kaggle/kaggle.json, or {manual}") from err
    if source.size_bytes:
        check_free_space(raw_dir.parent, 2 * source.size_bytes, f"{source.name} ({source.size} as published, plus its unpacked copy)")
    downloads = _downloads_folder(raw_dir)
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        api = KaggleApi()
        api.authenticate()
        api.dataset_download_files(source.kaggle_dataset, path=str(downloads), unzip=False, quiet=False)
    except Exception as err:  # noqa: BLE001 - credentials, network, terms not accepted: one message
        raise DownloadError(f"kaggle could not download {source.kaggle_dataset} ({type(err).__name__}: {err}); {manual}") from err
    archives = sorted(p for p in downloads.iterdir() if not p.name.endswith(".part"))
    target = extract_archives(archives, raw_dir, {"dataset": source.name, "kaggle": source.kaggle_dataset})
    shutil.rmtree(downloads, ignore_errors=True)
    return target


def _gdrive(source: DataSource, raw_dir: Path) -> Path:
    manual = f"download {source.source} in a browser and run `vprlab data download {source.name} --from-file <the zip>`"
    try:
        import gdown  # optional
    except ImportError:
        raise MissingFileError(f"{source.name} is a Google Drive file and the gdown package is not installed: "
                               f"`pip install gdown`, or {manual}") from None
    downloads = _downloads_folder(raw_dir)
    downloads.mkdir(parents=True, exist_ok=True)
    output = downloads / f"{source.name}.zip"
    try:
        gdown.download(id=source.gdrive_id, output=str(output), quiet=False, resume=True)
    except Exception as err:  # noqa: BLE001
        raise DownloadError(f"gdown could not download {source.source} ({type(err).__name__}: {err}); {manual}") from err
    target = extract_archives([output], raw_dir, {"dataset": source.name, "gdrive_id": source.gdrive_id})
    shutil.rmtree(downloads, ignore_errors=True)
    return target


def _rsync(source: DataSource, raw_dir: Path, run: Callable[..., subprocess.CompletedProcess]) -> Path:
    staging = staging_folder(raw_dir, "rsync")  # kept between runs: rsync resumes into it
    command = rsync_command(source, staging)
    if shutil.which("rsync") is None:
        shown = " ".join(rsync_command(source, raw_dir))
        raise MissingFileError(f"{source.name} is served by rsync, which is not installed here. Run `{shown}` "
                               f"(on any machine with rsync, then copy {raw_dir} here), then `vprlab data format {source.name} --from {raw_dir}`")
    staging.mkdir(parents=True, exist_ok=True)
    print(" ".join(command), flush=True)
    result = run(command)
    if result.returncode != 0:
        raise DownloadError(f"rsync exited with status {result.returncode} for {source.rsync_source}; run the same "
                            f"command again to resume (the partial copy is in {staging})")
    return publish_folder(staging, raw_dir)


def download_source(
    source: DataSource, raw_dir: Path, *, from_file: Path | None = None, progress: bool = True, timeout: float = 60.0,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> Path:
    """The raw data of ``source`` in ``raw_dir`` (a new folder, written atomically); see the module docstring."""
    raw_dir = Path(raw_dir)
    next_step = f"Format it with `vprlab data format {source.name} --from {raw_dir}`, or delete it to download again."
    refuse_existing(raw_dir, next_step)
    if from_file is not None:
        return _from_file(source, from_file, raw_dir)
    if source.method == "http" and source.files:
        return _http(source, raw_dir, progress, timeout)
    if source.method == "kaggle":
        return _kaggle(source, raw_dir)
    if source.method == "gdrive":
        return _gdrive(source, raw_dir)
    if source.method == "rsync":
        return _rsync(source, raw_dir, run)
    if source.method in ("request", "manual") and source.files:  # the public part (Tokyo 24/7's queries)
        return _http(source, raw_dir, progress, timeout)
    if source.method in ("request", "manual"):
        raise MissingFileError(f"{source.name} cannot be downloaded by vprlab. {source.request.replace('<raw>', str(raw_dir))}")
    if source.method == "synthetic":
        raise MissingFileError(f"{source.name} is generated, not downloaded: run `{source.source}` (or `make quickstart`)")
    raise MissingFileError(f"{source.name} is not downloaded: {source.source}. {source.notes}".strip())
