"""Evaluate one model on a list of benchmarks: descriptors -> exact search -> Recall@N.

:func:`run_benchmark` is the whole pipeline for one benchmark (and what evaluate.py uses, since it
needs the predictions for visualisations and submission files); :func:`evaluate`
returns only the metrics (the trainer's validation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vprlab.data.transforms import eval_transform
from vprlab.evaluation.cache import CacheKey, fingerprint
from vprlab.evaluation.descriptors import extract_descriptors_timed, resolve_amp_dtype
from vprlab.evaluation.recall import compute_recalls
from vprlab.evaluation.retrieval import search
from vprlab.evaluation.settings import EvalSettings
from vprlab.models.spec import mixes_batch
from vprlab.utils.images import as_hw
from vprlab.utils.io import NpyRowWriter

if TYPE_CHECKING:
    from vprlab.data.benchmarks import Benchmark

log = logging.getLogger(__name__)


@dataclass
class BenchmarkDescriptors:
    database: np.ndarray  # [num_db, D] float32, or float16 / memory-mapped from the cache
    queries: np.ndarray  # [num_queries, D]
    seconds: float  # extraction wall time (of the first run when read from the cache)
    images_per_second: float
    from_cache: bool = False
    # The batch size of a model whose descriptors depend on their batch (cross-image encoder), else None.
    batch_size: int | None = None


@dataclass
class BenchmarkRun:
    metrics: dict[str, Any]
    predictions: np.ndarray  # [num_queries, k] database indices, best first
    scores: np.ndarray  # [num_queries, k] inner products
    descriptors: BenchmarkDescriptors


def cache_key_for(
    benchmark: Benchmark, weights_hash: str, image_size: Any, transform: Callable, amp_dtype: Any = None,
    batch_size: int | None = None,
) -> CacheKey:
    """The cache key of ``benchmark`` evaluated with these weights, size, transform and precision (and
    ``batch_size`` for a model whose descriptors depend on their batch)."""
    dtype = resolve_amp_dtype(amp_dtype)
    return CacheKey(
        weights_hash=str(weights_hash),
        benchmark=benchmark.name,
        image_size=as_hw(image_size) if image_size is not None else None,  # None: native size
        transform=repr(transform),
        precision=str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        db_fingerprint=fingerprint(benchmark.db_paths),
        query_fingerprint=fingerprint(benchmark.query_paths),
        batch_size=None if batch_size is None else int(batch_size),
    )


def benchmark_descriptors(
    model: nn.Module,
    benchmark: Benchmark,
    transform: Callable,
    settings: EvalSettings,
    cache_key: CacheKey | None = None,
) -> BenchmarkDescriptors:
    """Database and query descriptors of ``benchmark``: from the settings' descriptor cache when it holds
    ``cache_key``, else extracted with ``model`` (and then stored there). A model whose descriptors depend
    on the other images of their batch (:func:`~vprlab.models.spec.mixes_batch`) sees the database and
    then the queries in consecutive batches of ``settings.batch_size`` in benchmark order (as CricaVPR's
    and SuperVLAD's own evaluation code does); the size is returned with the descriptors."""
    batch_size = int(settings.batch_size) if mixes_batch(model) else None
    if batch_size is not None:
        log.warning("%s: this model's descriptors depend on the other images of their batch (cross-image encoder); "
                    "extracting in batches of %d (recorded as eval_batch_size): another batch size gives other "
                    "descriptors", benchmark.name, batch_size)
    cache = settings.descriptor_cache() if cache_key is not None else None
    if cache is not None:
        hit = cache.load(cache_key)
        if hit is not None:
            log.info("%s: descriptors read from the cache (%s)", benchmark.name, cache.entry_dir(cache_key))
            seconds = float(hit.meta.get("extract_seconds", float("nan")))
            return BenchmarkDescriptors(
                database=hit.database,
                queries=hit.queries,
                seconds=seconds,
                images_per_second=float(hit.meta.get("extract_img_per_s", float("nan"))),
                from_cache=True,
                batch_size=batch_size,
            )
    # With a cache the database streams straight into its entry (in the cache's dtype, so a first
    # run scores what cached reruns score): a database larger than RAM never sits in memory.
    writer = NpyRowWriter(cache.begin(cache_key), len(benchmark.db_paths), cache.np_dtype) if cache is not None else None
    database = extract_descriptors_timed(model, benchmark.db_paths, transform, settings, f"{benchmark.name} database", writer)
    queries = extract_descriptors_timed(model, benchmark.query_paths, transform, settings, f"{benchmark.name} queries")
    seconds = database.seconds + queries.seconds
    num_images = len(benchmark.db_paths) + len(benchmark.query_paths)
    images_per_second = num_images / seconds if seconds > 0 else float("inf")
    db_desc, q_desc = database.descriptors, queries.descriptors
    if cache is not None:
        q_desc = cache.storage_round_trip(q_desc)
        folder = cache.save(
            cache_key, db_desc, q_desc, extract_seconds=seconds, extract_img_per_s=images_per_second,
            created=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        log.info("%s: descriptors cached in %s", benchmark.name, folder)
    return BenchmarkDescriptors(db_desc, q_desc, seconds, images_per_second, batch_size=batch_size)


def score_benchmark(benchmark: Benchmark, descriptors: BenchmarkDescriptors, settings: EvalSettings) -> BenchmarkRun:
    """Search the database for every query (top ``settings.search_k(benchmark)``) and compute Recall@ks."""
    num_db = int(descriptors.database.shape[0])
    ks = settings.ks
    start = time.perf_counter()
    scores, predictions = search(
        descriptors.database, descriptors.queries, settings.search_k(benchmark), settings, f"{benchmark.name} search",
    )
    search_seconds = time.perf_counter() - start
    metrics: dict[str, Any]
    if getattr(benchmark, "has_ground_truth", True):
        result = compute_recalls(
            predictions,
            benchmark.positives,
            ks=ks,
            queries_without_positive=getattr(benchmark, "queries_without_positive", "miss"),
            num_db=num_db,
        )
        metrics = result.as_dict()
    else:  # scored elsewhere (MSLS challenge): there is nothing to compare with here
        metrics = {f"R@{k}": None for k in sorted({int(k) for k in ks})}
        metrics.update(num_queries=int(descriptors.queries.shape[0]), num_without_positive=None)
    metrics.update(
        num_db=num_db,
        descriptor_dim=int(descriptors.database.shape[1]),
        extract_img_per_s=descriptors.images_per_second,
        extract_s=descriptors.seconds,
        search_s=search_seconds,
    )
    if descriptors.batch_size is not None:  # the descriptors depend on it: recorded with the results
        metrics["eval_batch_size"] = descriptors.batch_size
    return BenchmarkRun(metrics=metrics, predictions=predictions, scores=scores, descriptors=descriptors)


def run_benchmark(
    model: nn.Module,
    benchmark: Benchmark,
    settings: EvalSettings,
    transform_for: Callable[[Any], Callable] | None = None,
    weights_hash: str | None = None,
) -> BenchmarkRun:
    """Descriptors (cached when ``settings.cache_dir`` is set; ``weights_hash`` keys the entries), search
    and recall for one benchmark. ``transform_for(image_size)`` gives the eval transform (default:
    :func:`transform_for_settings`)."""
    transform_for = transform_for if transform_for is not None else transform_for_settings(model, settings)
    transform = transform_for(benchmark.image_size)
    key = None
    if settings.cache_dir is not None:
        if weights_hash is None:
            raise ValueError("a descriptor cache needs the weights hash to key its entries; pass weights_hash")
        size = eval_size_for(model, benchmark.image_size if benchmark.image_size is not None else settings.image_size)
        if size is None and getattr(model, "eval_preprocessing", None) is None:
            raise ValueError(f"benchmark {benchmark.name!r}: the descriptor cache needs the resolved image size")
        key = cache_key_for(benchmark, weights_hash, size, transform, settings.amp_dtype,
                            settings.batch_size if mixes_batch(model) else None)
    descriptors = benchmark_descriptors(model, benchmark, transform, settings, key)
    return score_benchmark(benchmark, descriptors, settings)


def check_unique_names(benchmarks: Sequence[Benchmark]) -> None:
    names = [benchmark.name for benchmark in benchmarks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"benchmark names must be unique, got {duplicates} more than once")


def log_metrics(name: str, metrics: dict[str, Any]) -> None:
    recalls = ", ".join(
        f"{key} {value:.2f}" for key, value in metrics.items() if key.startswith("R@") and value is not None
    ) or "no ground truth"
    log.info(
        "%s: %s (%d queries, %s without positive, %d db)",
        name, recalls, metrics["num_queries"], metrics["num_without_positive"], metrics["num_db"],
    )


def evaluate(
    model: nn.Module, benchmarks: Sequence[Benchmark], settings: EvalSettings,
    transform_for: Callable[[Any], Callable] | None = None,
) -> dict[str, dict[str, Any]]:
    """Recall@k of ``model`` on each benchmark, keyed by benchmark name, evaluated as ``settings`` say.

    ``transform_for(benchmark.image_size)`` gives the eval transform for each
    benchmark (models are evaluated at the size they were published with; default:
    :func:`transform_for_settings`).
    Each metrics dict holds ``R@k`` (percent) for every k, ``num_queries``,
    ``num_db``, ``num_without_positive``, ``descriptor_dim``,
    ``extract_img_per_s`` (database + query images over extraction wall time),
    ``extract_s`` and ``search_s``; and ``eval_batch_size`` for a model whose descriptors depend on
    their batch (:func:`benchmark_descriptors`).
    """
    check_unique_names(benchmarks)
    results: dict[str, dict[str, Any]] = {}
    for benchmark in benchmarks:
        metrics = run_benchmark(model, benchmark, settings, transform_for).metrics
        results[benchmark.name] = metrics
        log_metrics(benchmark.name, metrics)
    return results


def eval_size_for(model: torch.nn.Module, image_size: Any = None) -> tuple[int, int] | None:
    """The size images are evaluated at: ``image_size`` (a benchmark's), else the model's published
    preprocessing size (None: native size), else the backbone's ``eval_image_size``."""
    if image_size is not None:
        return as_hw(image_size)
    prep = getattr(model, "eval_preprocessing", None)
    if prep is not None:
        return prep.size
    size = getattr(model.backbone, "eval_image_size", None)
    return None if size is None else as_hw(size)


def make_transform_for(
    model: torch.nn.Module, default_image_size: Any = None, preprocessing: Any = None,
) -> Callable[[Any], Callable]:
    """``transform_for(image_size)``: bicubic antialiased resizing to ``image_size`` (None: the
    backbone's ``eval_image_size``) and the backbone's normalisation.

    A published model of another method carries its own preprocessing (``model.eval_preprocessing``,
    :class:`vprlab.data.transforms.EvalPreprocessing`: native size or a resize with the method's
    interpolation and stage); it is used as it is, or at ``image_size`` when one is given.
    ``preprocessing`` (an :class:`~vprlab.data.transforms.EvalPreprocessing`) is used in its place:
    a recipe's validation preprocessing during training (``trainer.val_preprocessing``)."""
    prep = preprocessing if preprocessing is not None else getattr(model, "eval_preprocessing", None)
    if prep is not None:
        def published_transform_for(image_size: Any):
            size = image_size if image_size is not None else default_image_size
            return (prep if size is None else prep.resized(size)).transform()

        return published_transform_for
    mean, std = model.backbone.mean, model.backbone.std
    if default_image_size is None:
        default_image_size = getattr(model.backbone, "eval_image_size", None)

    def transform_for(image_size: Any):
        size = image_size if image_size is not None else default_image_size
        if size is None:
            raise ValueError("benchmark has no image_size and the backbone has no eval_image_size; set benchmark.<name>.image_size=[H,W]")
        return eval_transform(size, mean=mean, std=std)

    return transform_for


def transform_for_settings(model: torch.nn.Module, settings: EvalSettings) -> Callable[[Any], Callable]:
    """:func:`make_transform_for` with the settings' default image size and preprocessing."""
    return make_transform_for(model, settings.image_size, settings.preprocessing)


def evaluate_model(model: torch.nn.Module, benchmarks: Sequence, settings: EvalSettings) -> dict[str, dict]:
    """Evaluate ``model`` on every benchmark with bicubic antialiased resizing at the
    benchmark's configured size and the backbone's normalisation (or with ``settings.preprocessing``,
    see :func:`make_transform_for`); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    try:
        return evaluate(model, list(benchmarks), settings, transform_for_settings(model, settings))
    finally:
        model.train(was_training)
