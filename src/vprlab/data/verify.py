"""`vprlab data verify NAME`: is the data on disk the published data, and is it still what was verified?

Verifying a benchmark config:

1. if the root holds a manifest, the files are compared with it first (changed, missing and extra
   files are named; a change is an error until ``--update`` records the new state);
2. the config is read with its published counts enforced (``strict_counts``): a different number of
   database images or queries is an error;
3. the ground truth is checked against the image lists (every positive a valid database index, no
   image listed twice, every query with a positive list: the integrity rules of the gt.csv reader);
4. every listed image is opened and decoded (``PIL.Image.verify``), with progress;
5. the manifest is written atomically into the root (``.vprlab-manifest.json``: every file with its
   size and SHA-256, and the configs verified against it), so that a later change is noticed. The
   shared reference data (read-only for every user, even where the file system would allow a write)
   and roots this user cannot write keep theirs in ``<data_dir>/.vprlab-manifests/`` instead
   (:func:`manifest_store`): vprlab never writes into them.

A training set (GSV-Cities layout) is verified the same way without step 2-3: every image its
dataframes list must be there and decode. Several configs can share one root (``svox_*``,
``pitts30k_val``/``pitts30k_test``): they share its manifest.

:func:`verification_status` is the quick check `vprlab benchmarks` and `vprlab data list` show:
``verified``, ``unverified`` or ``changed`` (file names and sizes from ``stat``; only files whose
modification time moved are hashed again).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vprlab.data.benchmark import Benchmark
from vprlab.data.download import file_digest
from vprlab.utils.errors import DataError, MissingFileError
from vprlab.utils.io import atomic_write_json
from vprlab.utils.progress import progress_bar

MANIFEST_NAME = ".vprlab-manifest.json"
MANIFEST_VERSION = 1


MANIFEST_STORE = ".vprlab-manifests"


def manifest_path(root: str | os.PathLike, store: str | os.PathLike | None = None) -> Path:
    """``root/.vprlab-manifest.json``, or with ``store`` (a root vprlab must not write into) the file that
    keeps ``root``'s manifest there: ``<store>/<root name>-<digest of root's absolute path>.json``."""
    root = Path(root)
    if store is None:
        return root / MANIFEST_NAME
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(store) / f"{root.name}-{digest}.json"


def manifest_store(root: str | os.PathLike, data_dir: str | os.PathLike,
                   read_only: Sequence[str | os.PathLike] = ()) -> Path | None:
    """None when ``root`` keeps its own manifest; ``<data_dir>/.vprlab-manifests`` for a root inside one of
    ``read_only`` (the shared reference data) or one this user cannot write."""
    root = Path(root).resolve()
    if any(root.is_relative_to(Path(folder).resolve()) for folder in read_only):
        return Path(data_dir) / MANIFEST_STORE
    if root.is_dir() and not os.access(root, os.W_OK):
        return Path(data_dir) / MANIFEST_STORE
    return None


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def scan_files(root: Path) -> dict[str, os.stat_result]:
    """Every file under ``root`` (relative POSIX path -> stat), the manifest itself left out."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                found[rel] = path.stat()
    return found


def read_manifest(root: str | os.PathLike, manifest: Path | None = None) -> dict[str, Any] | None:
    """The manifest of ``root`` (at ``manifest``, default ``root/.vprlab-manifest.json``); None when there is none."""
    import json

    path = manifest or manifest_path(root)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable manifest ({err}); delete it and verify again") from err
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("files"), dict):
        raise DataError(f"{path} is not a vprlab manifest of version {MANIFEST_VERSION}; delete it and verify again")
    return manifest


@dataclass
class Changes:
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.extra)

    def describe(self, limit: int = 5) -> str:
        parts = []
        for what, names in (("changed", self.changed), ("missing", self.missing), ("extra", self.extra)):
            if names:
                shown = ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
                parts.append(f"{len(names)} {what}: {shown}")
        return "; ".join(parts)


def compare_with_manifest(root: Path, manifest: Mapping[str, Any], *, rehash_all: bool = False, progress: bool = False) -> Changes:
    """Files of ``root`` against ``manifest``: a different size is a change; a file whose modification
    time moved (every file with ``rehash_all``) is hashed again and compared."""
    recorded: Mapping[str, Mapping[str, Any]] = manifest["files"]
    present = scan_files(root)
    changes = Changes(
        missing=sorted(set(recorded) - set(present)),
        extra=sorted(set(present) - set(recorded)),
    )
    common = sorted(set(recorded) & set(present))
    for rel in progress_bar(common, desc=f"checking {root.name}", enabled=progress, unit="file"):
        entry, stat = recorded[rel], present[rel]
        if stat.st_size != entry["size"]:
            changes.changed.append(rel)
        elif (rehash_all or stat.st_mtime_ns != entry.get("mtime_ns")) and sha256_of(root / rel) != entry["sha256"]:
            changes.changed.append(rel)
    return changes


def write_manifest(root: Path, verified: Mapping[str, Any], *, progress: bool = True, previous: Mapping[str, Any] | None = None,
                   manifest: Path | None = None) -> Path:
    """Hash every file under ``root`` (reusing ``previous`` hashes of files whose size and time are unchanged)
    and write the manifest atomically."""
    old = (previous or {}).get("files", {})
    files = {}
    scanned = scan_files(root)
    for rel, stat in progress_bar(list(scanned.items()), desc=f"manifest of {root.name}", enabled=progress, unit="file"):
        entry = old.get(rel)
        if entry and entry["size"] == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            digest = entry["sha256"]
        else:
            digest = sha256_of(root / rel)
        files[rel] = {"size": stat.st_size, "sha256": digest, "mtime_ns": stat.st_mtime_ns}
    record = {
        "version": MANIFEST_VERSION,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_files": len(files),
        "total_bytes": sum(f["size"] for f in files.values()),
        "verified": dict(verified),
        "files": files,
    }
    if manifest is not None:
        manifest.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(manifest or manifest_path(root), record)


def verification_status(root: str | os.PathLike, name: str, manifest: Path | None = None) -> str:
    """``verified`` (the manifest records ``name`` and the files are unchanged), ``unverified`` or
    ``changed: ...`` (what differs from the manifest)."""
    root = Path(root)
    if not root.is_dir():
        return "unverified"
    try:
        recorded = read_manifest(root, manifest)
    except DataError:
        return "changed: unreadable manifest"
    if recorded is None or name not in recorded.get("verified", {}):
        return "unverified"
    changes = compare_with_manifest(root, recorded)
    return f"changed: {changes.describe(limit=2)}" if changes else "verified"


# ----------------------------------------------------------------------------------------- checks


def undecodable_images(paths: Sequence[str], *, progress: bool = True, desc: str = "images") -> list[str]:
    """``path: reason`` for every image of ``paths`` that is missing or does not decode."""
    from PIL import Image

    bad = []
    for path in progress_bar(paths, desc=f"decoding {desc}", enabled=progress, unit="img"):
        try:
            with Image.open(path) as image:
                image.verify()
        except FileNotFoundError:
            bad.append(f"{path}: missing")
        except Exception as err:  # noqa: BLE001 - any decoder failure is a damaged file
            bad.append(f"{path}: {type(err).__name__}: {err}")
    return bad


def ground_truth_problems(bench: Benchmark) -> list[str]:
    """Where the positives disagree with the image lists (the gt.csv reader's rules, for any format)."""
    problems = []
    num_db = len(bench.db_paths)
    for what, paths in (("database", bench.db_paths), ("query", bench.query_paths)):
        seen: set[str] = set()
        dupes = [p for p in paths if p in seen or seen.add(p)]  # type: ignore[func-returns-value]
        if dupes:
            problems.append(f"{len(dupes)} {what} images listed twice, e.g. {dupes[0]}")
    if not bench.has_ground_truth:
        return problems
    for index, positives in enumerate(bench.positives):
        positives = np.asarray(positives)
        if positives.size and not np.issubdtype(positives.dtype, np.integer):
            problems.append(f"query {index} ({bench.query_paths[index]}): positives are not integers ({positives.dtype})")
            break
        if positives.size and (positives.min() < 0 or positives.max() >= num_db):
            problems.append(f"query {index} ({bench.query_paths[index]}): database index "
                            f"{int(positives.max() if positives.max() >= num_db else positives.min())} outside [0, {num_db})")
            break
    return problems


@dataclass
class VerifyReport:
    name: str
    root: Path
    num_db: int | None = None
    num_queries: int | None = None
    num_images: int = 0
    manifest: Path | None = None
    changes: Changes | None = None
    manifest_at: Path | None = None  # where the manifest is kept (None: in the root)


def _check_against_manifest(root: Path, update: bool, progress: bool,
                            at: Path | None = None) -> tuple[dict[str, Any] | None, Changes | None]:
    manifest = read_manifest(root, at)
    if manifest is None:
        return None, None
    changes = compare_with_manifest(root, manifest, rehash_all=True, progress=progress)
    if changes and not update:
        raise DataError(
            f"{root} differs from its manifest {at or manifest_path(root)} (written {manifest.get('written')}): "
            f"{changes.describe()}. Restore the files, or run `vprlab data verify ... --update` to verify and record the new state"
        )
    return (None if changes else manifest), changes


def _finish(report: VerifyReport, record: dict[str, Any], previous: dict[str, Any] | None, progress: bool) -> VerifyReport:
    verified = dict((previous or {}).get("verified", {}))
    verified[report.name] = record
    try:
        report.manifest = write_manifest(report.root, verified, progress=progress, previous=previous,
                                         manifest=report.manifest_at)
    except PermissionError:  # a read-only copy (the shared real datasets): verified, but nothing recorded
        report.manifest = None
    return report


def verify_benchmark(name: str, cfg: Mapping[str, Any], *, update: bool = False, progress: bool = True,
                     manifest: Path | None = None) -> VerifyReport:
    """Verify benchmark config ``name`` (its resolved node, a mapping) on disk; see the module docstring.
    ``manifest``: where the root's manifest is kept (default: in the root; see :func:`manifest_store`)."""
    from vprlab.data.benchmarks import load_benchmark

    params = dict(cfg)
    if "format" not in params:  # a config that names its reader directly (benchmark/synthetic)
        from vprlab.data.benchmark_readers import READERS

        reader = str(params.pop("_target_", "")).rsplit(".", 1)[-1]
        params["format"] = next((key for key, fn in READERS.items() if fn.__name__ == reader), None)
    root = Path(str(params["root"]))
    if not root.is_dir():
        raise MissingFileError(f"benchmark {name}: root {root} does not exist; download and format it first (`vprlab data list`)")
    previous, changes = _check_against_manifest(root, update, progress, manifest)
    params["strict_counts"] = True
    bench = load_benchmark(params)
    problems = ground_truth_problems(bench)
    if problems:
        raise DataError(f"benchmark {name} in {root}: the ground truth does not match the image lists: " + "; ".join(problems))
    bad = undecodable_images([*bench.db_paths, *bench.query_paths], progress=progress, desc=name)
    if bad:
        raise DataError(f"benchmark {name} in {root}: {len(bad)} image(s) missing or undecodable, e.g. " + "; ".join(bad[:3]))
    report = VerifyReport(name=name, root=root, num_db=bench.num_db, num_queries=bench.num_queries,
                          num_images=bench.num_db + bench.num_queries, changes=changes, manifest_at=manifest)
    record = {"kind": "benchmark", "num_db": bench.num_db, "num_queries": bench.num_queries,
              "expected_num_db": params.get("expected_num_db"), "expected_num_queries": params.get("expected_num_queries"),
              "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return _finish(report, record, previous, progress)


def verify_training_set(name: str, root: str | os.PathLike, cities: Sequence[str] | None, *, update: bool = False,
                        progress: bool = True, manifest: Path | None = None) -> VerifyReport:
    """Verify a training set in the GSV-Cities layout: every image its dataframes list is there and decodes."""
    from vprlab.data.gsv_cities import GSVCitiesDataset

    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"training set {name}: root {root} does not exist; download and format it first (`vprlab data list`)")
    previous, changes = _check_against_manifest(root, update, progress, manifest)
    dataset = GSVCitiesDataset(root, list(cities) if cities else None, img_per_place=1, min_img_per_place=1)
    paths = [str(p) for p in dataset._paths]
    bad = undecodable_images(paths, progress=progress, desc=name)
    if bad:
        raise DataError(f"training set {name} in {root}: {len(bad)} image(s) missing or undecodable, e.g. " + "; ".join(bad[:3]))
    report = VerifyReport(name=name, root=root, num_images=len(paths), changes=changes, manifest_at=manifest)
    record = {"kind": "training", "num_places": dataset.num_places, "num_images": len(paths),
              "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return _finish(report, record, previous, progress)
