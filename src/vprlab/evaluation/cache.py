"""Descriptor cache: re-evaluating or re-scoring a model on a benchmark reads its descriptors from disk.

An entry is keyed by everything that changes the descriptors: the weights (hash), the benchmark
(name and a fingerprint of its image lists), the image size, the eval transform (its full repr:
interpolation, antialiasing, normalisation) and the autocast precision. Layout::

    <cache_dir>/<weights_hash>/<benchmark>/<H>x<W>-<key digest>/
        database.npy   [num_db, D]       float32 or float16
        queries.npy    [num_queries, D]
        meta.json      the key, shapes, dtype, both arrays' checksums and the extraction time of the first run

Each file is written to a temporary name and renamed; ``meta.json`` comes last, so an entry
without it is incomplete and ignored. On read both arrays are checked against their checksums
in ``meta.json`` (:func:`file_checksum`, a SHA-256 tree hashed on all cores): a damaged entry (flipped bytes, a truncated or empty file, an unreadable meta)
is recomputed and overwritten with a warning, never scored. The database array is memory-mapped on load, so a
huge database is read chunk by chunk during a chunked search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vprlab.utils.io import atomic_save_npy, atomic_write_json

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
CACHE_DTYPES = {"float32": np.float32, "float16": np.float16}


_CHECKSUM_BLOCK = 16 << 20  # bytes per hashed block
CHECKSUM_KEY = "sha256_tree"  # meta.json: {file name: digest}


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 over the SHA-256s of the file's 16 MiB blocks, the blocks hashed on every core at once
    (hashlib releases the GIL): a damaged byte anywhere changes it, and a cache entry of tens of GB
    is checked at memory speed rather than at one core's hashing speed."""
    from concurrent.futures import ThreadPoolExecutor

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        fd = f.fileno()

        def block(offset: int) -> bytes:
            return hashlib.sha256(os.pread(fd, _CHECKSUM_BLOCK, offset)).digest()

        offsets = range(0, size, _CHECKSUM_BLOCK)
        if not hasattr(os, "pread"):  # Windows: one block after the other
            digests = [hashlib.sha256(f.read(_CHECKSUM_BLOCK)).digest() for _ in offsets]
        elif len(offsets) <= 1:
            digests = [block(o) for o in offsets]
        else:
            with ThreadPoolExecutor(min(len(offsets), os.cpu_count() or 1)) as pool:
                digests = list(pool.map(block, offsets))
    return hashlib.sha256(size.to_bytes(8, "little") + b"".join(digests)).hexdigest()


def fingerprint(paths: Sequence[str]) -> str:
    """A short hash of an ordered list of image paths (the benchmark's identity on disk)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class CacheKey:
    weights_hash: str
    benchmark: str
    image_size: tuple[int, int] | None  # None: images at their native size
    transform: str  # repr of the eval transform
    precision: str  # autocast dtype name, "float32" for none
    db_fingerprint: str
    query_fingerprint: str
    version: int = CACHE_FORMAT_VERSION
    # Only for models whose descriptors depend on the other images of the batch (a cross-image encoder):
    # the batch size they were extracted with. None (every other model) leaves the digest as it was.
    batch_size: int | None = None

    def digest(self) -> str:
        fields = asdict(self)
        if fields["batch_size"] is None:
            del fields["batch_size"]
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CachedDescriptors:
    database: np.ndarray
    queries: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


class DescriptorCache:
    """Reads and writes cache entries under ``root``; ``dtype`` ("float32" or "float16") is the
    storage type of new entries (float16 halves the disk and memory; see :meth:`storage_round_trip`)."""

    def __init__(self, root: str | os.PathLike, dtype: str = "float32") -> None:
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache_dtype={dtype!r}; use one of {sorted(CACHE_DTYPES)}")
        self.root = Path(root)
        self.dtype = dtype

    def entry_dir(self, key: CacheKey) -> Path:
        size = "native" if key.image_size is None else "x".join(str(v) for v in key.image_size)
        return self.root / _safe(key.weights_hash) / _safe(key.benchmark) / f"{size}-{key.digest()}"

    def storage_round_trip(self, descriptors: np.ndarray) -> np.ndarray:
        """``descriptors`` as they will read back from this cache: with float16 storage, rounded
        through float16, so a first (uncached) run scores exactly what every cached rerun scores."""
        if self.dtype == "float32":
            return descriptors
        return descriptors.astype(np.float16)

    def load(self, key: CacheKey) -> CachedDescriptors | None:
        """The entry for ``key``, or None when there is none or it is incomplete, inconsistent or
        damaged (a checksum that does not match: logged as a warning; the caller recomputes it)."""
        folder = self.entry_dir(key)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            checksums = meta.get(CHECKSUM_KEY)
            if not isinstance(checksums, dict):
                raise ValueError("meta.json has no checksums (written by an older vprlab)")
            for name in ("database.npy", "queries.npy"):
                actual = file_checksum(folder / name)
                if actual != checksums.get(name):
                    raise ValueError(f"{name} does not match its checksum ({actual[:12]}, "
                                     f"expected {str(checksums.get(name))[:12]})")
            database = np.load(folder / "database.npy", mmap_mode="r", allow_pickle=False)
            queries = np.load(folder / "queries.npy", allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any damage (EOFError, ValueError, OSError...): recompute
            log.warning("descriptor cache entry %s is damaged (%s: %s); recomputing it", folder, type(err).__name__, err)
            return None
        if meta.get("digest") != key.digest() or list(database.shape) != meta.get("database_shape") or list(
            queries.shape
        ) != meta.get("queries_shape"):
            log.warning("descriptor cache entry %s does not match its key or shapes; recomputing it", folder)
            return None
        return CachedDescriptors(database=database, queries=queries, meta=meta)

    @property
    def np_dtype(self) -> Any:
        return CACHE_DTYPES[self.dtype]

    def begin(self, key: CacheKey) -> Path:
        """Invalidate ``key``'s entry and return the path its database array is to be streamed to
        (``extract_descriptors_timed(out_path=...)``); :meth:`save` then leaves that file as it is."""
        folder = self.entry_dir(key)
        (folder / "meta.json").unlink(missing_ok=True)
        return folder / "database.npy"

    def save(self, key: CacheKey, database: np.ndarray, queries: np.ndarray, **info: Any) -> Path:
        """Write an entry (arrays first, ``meta.json`` last, each atomically); ``info`` goes into the meta.
        A ``database`` already memory-mapped from the entry's own file (see :meth:`begin`) stays in place."""
        folder = self.entry_dir(key)
        dtype = CACHE_DTYPES[self.dtype]
        meta_path = folder / "meta.json"
        meta_path.unlink(missing_ok=True)  # replacing an entry: invalidate it before its arrays change
        target = folder / "database.npy"
        streamed = isinstance(database, np.memmap) and Path(database.filename).resolve() == target.resolve()
        if not streamed or database.dtype != dtype:
            atomic_save_npy(target, np.asarray(database, dtype=dtype))
        atomic_save_npy(folder / "queries.npy", np.asarray(queries, dtype=dtype))
        meta = {
            CHECKSUM_KEY: {name: file_checksum(folder / name) for name in ("database.npy", "queries.npy")},
            "digest": key.digest(),
            "key": asdict(key),
            "dtype": self.dtype,
            "database_shape": list(np.shape(database)),
            "queries_shape": list(np.shape(queries)),
            **info,
        }
        atomic_write_json(meta_path, meta)
        return folder
