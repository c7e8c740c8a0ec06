"""Exact nearest-neighbour search by inner product (descriptors are L2-normalised).

Large databases can be searched in chunks (``db_chunk_size``) to bound memory,
especially on GPU; the per-chunk top-k lists are merged exactly, so the result
equals a single search over the whole database. The database may be a float16
array (or a memory-mapped .npy from the descriptor cache): each chunk is cast to
float32 only when it is searched, so host memory holds half the bytes.
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import torch

from vprlab.evaluation.settings import EvalSettings
from vprlab.models.cpu_kernels import linear, onednn_linear_available
from vprlab.utils.progress import progress_bar

# faiss GPU brute-force search supports k up to this value; above it we search on CPU.
_FAISS_GPU_MAX_K = 2048


def _as_matrix(name: str, array: np.ndarray, keep_float16: bool = False) -> np.ndarray:
    """A 2-D float32 array; with ``keep_float16`` a float16 array (or memmap) is returned as is."""
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_items, descriptor_dim] array, got shape {array.shape}")
    if keep_float16 and array.dtype == np.float16:
        return array
    return np.ascontiguousarray(array, dtype=np.float32)


def faiss_num_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _resolve_use_gpu(use_gpu: bool | str, k: int) -> bool:
    if isinstance(use_gpu, str):
        value = use_gpu.strip().lower()
        if value == "auto":
            return faiss_num_gpus() > 0 and k <= _FAISS_GPU_MAX_K
        if value not in ("true", "false"):
            raise ValueError(f"use_gpu must be 'auto', true or false, got {use_gpu!r}")
        use_gpu = value == "true"
    if use_gpu:
        if faiss_num_gpus() == 0:
            raise RuntimeError(
                "use_gpu=true but this faiss build sees no GPU; install faiss-gpu "
                "(conda install -c pytorch faiss-gpu) or set use_gpu=auto/false"
            )
        if k > _FAISS_GPU_MAX_K:
            raise ValueError(
                f"faiss GPU search supports k <= {_FAISS_GPU_MAX_K}, got k={k}; lower k or set use_gpu=false"
            )
    return bool(use_gpu)


def _gpu_resources(device: int):
    """faiss's per-GPU scratch memory and streams (one per GPU and search call)."""
    return faiss.StandardGpuResources()


def _to_gpu(index, resources, device: int, float16: bool):
    options = faiss.GpuClonerOptions()
    options.useFloat16 = bool(float16)  # float16 storage on the GPU, float32 accumulation
    return faiss.index_cpu_to_gpu(resources, device, index, options)


# Elements of one score block (query rows x database rows) in the oneDNN search: 256 MB of float32.
_SCORE_BLOCK_ELEMENTS = 2**26
# Results (rows x k) of one re-search of rows tied at the k-th place: 2**24 x 12 bytes = 200 MB.
_TIE_RESEARCH_ELEMENTS = 2**24


def _onednn_knn(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with oneDNN's matrix product and torch.topk: about twice
    faiss.knn's speed on the CPUs where oneDNN beats the BLAS faiss links (cpu_kernels), and the
    float16 -> float32 cast of a chunk runs multithreaded."""
    with torch.inference_mode(), warnings.catch_warnings():
        # A read-only memmap (the descriptor cache) is only ever read here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        db = torch.from_numpy(np.ascontiguousarray(database)).float()
        q_all = torch.from_numpy(queries)
        rows = max(1, _SCORE_BLOCK_ELEMENTS // db.shape[0])
        scores, indices = [], []
        for start in range(0, q_all.shape[0], rows):
            top = torch.topk(linear(q_all[start : start + rows], db), k, dim=1)
            scores.append(top.values)
            indices.append(top.indices)
        return torch.cat(scores).numpy(), torch.cat(indices).numpy().astype(np.int64, copy=False)


def _search_one(
    database: np.ndarray, queries: np.ndarray, k: int, gpu_resources=None, gpu_float16: bool = False, device: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    if gpu_resources is None:
        if onednn_linear_available():
            def raw(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
                return _onednn_knn(database, q, kk)
        else:
            # Brute force straight on the array: an IndexFlatIP would hold a second copy of the chunk.
            flat = np.ascontiguousarray(database, dtype=np.float32)

            def raw(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
                scores, indices = faiss.knn(q, flat, kk, metric=faiss.METRIC_INNER_PRODUCT)
                return scores, indices.astype(np.int64, copy=False)
    else:
        database = np.ascontiguousarray(database, dtype=np.float32)
        index = _to_gpu(faiss.IndexFlatIP(database.shape[1]), gpu_resources, device, gpu_float16)
        index.add(database)

        def raw(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            scores, indices = index.search(q, kk)
            return scores, indices.astype(np.int64, copy=False)
    return _top_k_ties_to_lower_index(raw, queries, k, database.shape[0])


def _top_k_ties_to_lower_index(raw, queries: np.ndarray, k: int, num_db: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of ``raw(queries, k)`` (a backend's top-k search), where items with the same
    score as the k-th one are kept by lower database index, as faiss's CPU search does; torch.topk
    and faiss's GPU selection keep an arbitrary one. The search asks for one item more: a row whose
    (k+1)-th score equals its k-th has a tie across the cut and is searched again, alone with the
    other such rows, with a larger k until every item of that score is in (rare: equal descriptors).
    Each row's result comes from one backend call, so its scores are compared with each other only."""
    if k >= num_db:
        scores, indices = raw(queries, num_db)
        return _sort_rows(scores, indices, k)
    scores, indices = raw(queries, k + 1)
    scores, indices = _sort_rows(scores, indices, k + 1)
    tied = np.flatnonzero(scores[:, k] == scores[:, k - 1])
    scores, indices = scores[:, :k].copy(), indices[:, :k].copy()
    wider = k + 1
    while tied.size:
        wider = min(num_db, 2 * wider)
        still_tied = []
        # Rows a few at a time, so that many degenerate rows (a constant descriptor ties with
        # everything) never ask for a [rows, num_db] result at once.
        step = max(1, _TIE_RESEARCH_ELEMENTS // wider)
        for start in range(0, tied.size, step):
            rows = tied[start : start + step]
            more_scores, more_indices = _sort_rows(*raw(np.ascontiguousarray(queries[rows]), wider), wider)
            done = (more_scores[:, -1] != more_scores[:, k - 1]) | (wider == num_db)
            # Every item scoring as the k-th is now in the row: the lower indices come first.
            scores[rows[done]], indices[rows[done]] = more_scores[done, :k], more_indices[done, :k]
            still_tied.append(rows[~done])
        tied = np.concatenate(still_tied)
    return scores, indices


def _sort_rows(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best per row: highest score first, ties broken by lower database index."""
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    settings: EvalSettings | None = None,
    desc: str = "search",
    num_gpus: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database items for every query by inner product.

    Returns ``(scores [num_queries, k] float32, indices [num_queries, k] int64)``,
    best first. ``k`` larger than the database is clamped to the database size.
    ``settings`` (:class:`~vprlab.evaluation.settings.EvalSettings`; None: its defaults without a
    progress bar) gives ``db_chunk_size``, ``use_gpu``, ``search_float16`` and ``progress``.
    ``use_gpu``: "auto" uses faiss GPUs when this faiss build has any, true
    requires one, false stays on CPU. Equal scores are ordered by database index,
    and of several equal-score items at the k-th place the lower indices are kept
    (as faiss's CPU search does), on every path: CPU (oneDNN or faiss), chunked,
    float16, GPU, several GPUs.

    ``search_float16``: store the database in float16 (a float32 database is rounded
    once; a float16 one is kept as is and cast chunk by chunk); on a GPU the
    faiss index itself stores float16. Scores are then those of the rounded
    descriptors. ``progress`` shows a bar over the database chunks.

    Several GPUs (``num_gpus``, default all that faiss sees; ``CUDA_VISIBLE_DEVICES`` limits
    them) search at the same time, each its own chunks; without ``db_chunk_size`` the
    database is split into one shard per GPU. The merge is the same exact top-k merge.
    """
    settings = settings if settings is not None else EvalSettings(progress=False)
    db_chunk_size, use_gpu, float16 = settings.db_chunk_size, settings.use_gpu, bool(settings.search_float16)
    database = _as_matrix("database descriptors", database, keep_float16=True)
    if float16 and database.dtype != np.float16:
        database = database.astype(np.float16)
    queries = _as_matrix("query descriptors", queries)
    num_db, dim = database.shape
    if queries.shape[1] != dim:
        raise ValueError(
            f"descriptor dims differ: database has dim {dim}, queries have dim {queries.shape[1]}; "
            "extract both with the same model"
        )
    if num_db == 0:
        raise ValueError("the database is empty; there is nothing to search")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if db_chunk_size is not None and db_chunk_size < 1:
        raise ValueError(f"db_chunk_size must be >= 1 or None, got {db_chunk_size}")
    k = min(int(k), num_db)
    if queries.shape[0] == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)

    devices: list[int | None] = [None]  # None: the CPU
    if _resolve_use_gpu(use_gpu, k):
        available = faiss_num_gpus()
        if num_gpus is not None and not 1 <= int(num_gpus) <= available:
            raise ValueError(f"num_gpus={num_gpus} but faiss sees {available} GPU(s); use 1..{available} or None for all")
        devices = list(range(available if num_gpus is None else int(num_gpus)))
    # Without a chunk size, several GPUs each hold one shard of the database.
    default_chunk = num_db if len(devices) == 1 else -(-num_db // len(devices))
    chunk = default_chunk if db_chunk_size is None else min(int(db_chunk_size), num_db)
    starts = list(range(0, num_db, chunk))

    lock = threading.Lock()
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def run(device: int | None, my_starts: list[int]) -> None:
        # Each GPU searches its own chunks in turn: faiss GPU resources are not shared between threads.
        resources = None if device is None else _gpu_resources(device)
        for start in my_starts:
            part = database[start : start + chunk]
            scores, indices = _search_one(part, queries, min(k, part.shape[0]), resources, float16, device or 0)
            with lock:
                results[start] = (scores, indices + start)
                bar.update(part.shape[0])

    with progress_bar(desc=desc, total=num_db, unit="db", enabled=bool(settings.progress)) as bar:
        if len(devices) == 1:
            run(devices[0], starts)
        else:  # faiss releases the GIL while it searches, so the GPUs work at the same time
            with ThreadPoolExecutor(len(devices)) as pool:
                jobs = [pool.submit(run, device, starts[i :: len(devices)]) for i, device in enumerate(devices)]
                for job in jobs:
                    job.result()  # re-raises a GPU's error here
    scores = np.concatenate([results[s][0] for s in starts], axis=1)
    indices = np.concatenate([results[s][1] for s in starts], axis=1)
    scores, indices = _sort_rows(scores, indices, k)
    return np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(indices, dtype=np.int64)
