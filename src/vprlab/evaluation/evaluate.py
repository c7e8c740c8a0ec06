"""Evaluate one model on a list of benchmarks: descriptors -> exact search -> Recall@N."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vprlab.evaluation.descriptors import extract_descriptors_timed
from vprlab.evaluation.recall import compute_recalls
from vprlab.evaluation.retrieval import search

if TYPE_CHECKING:
    from vprlab.data.benchmarks import Benchmark

log = logging.getLogger(__name__)


def evaluate_benchmark(
    model: nn.Module,
    benchmark: Benchmark,
    transform_for: Callable[[Any], Callable],
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    ks: Sequence[int] = (1, 5, 10, 20),
    amp_dtype: torch.dtype | str | None = None,
    progress: bool = True,
    db_chunk_size: int | None = None,
    use_gpu: bool | str = "auto",
) -> dict[str, Any]:
    """Metrics of ``model`` on one benchmark; see :func:`evaluate` for the keys."""
    transform = transform_for(benchmark.image_size)
    common = dict(
        transform=transform, batch_size=batch_size, num_workers=num_workers,
        device=device, amp_dtype=amp_dtype, progress=progress,
    )
    database = extract_descriptors_timed(model, benchmark.db_paths, desc=f"{benchmark.name} database", **common)
    queries = extract_descriptors_timed(model, benchmark.query_paths, desc=f"{benchmark.name} queries", **common)

    num_db = database.descriptors.shape[0]
    _, predictions = search(
        database.descriptors, queries.descriptors, k=max(ks), db_chunk_size=db_chunk_size, use_gpu=use_gpu
    )
    result = compute_recalls(
        predictions,
        benchmark.positives,
        ks=ks,
        queries_without_positive=getattr(benchmark, "queries_without_positive", "miss"),
        num_db=num_db,
    )
    seconds = database.seconds + queries.seconds
    num_images = num_db + queries.descriptors.shape[0]
    metrics: dict[str, Any] = result.as_dict()
    metrics.update(
        num_db=num_db,
        descriptor_dim=int(database.descriptors.shape[1]),
        extract_img_per_s=num_images / seconds if seconds > 0 else float("inf"),
    )
    return metrics


def evaluate(
    model: nn.Module,
    benchmarks: Sequence[Benchmark],
    transform_for: Callable[[Any], Callable],
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    ks: Sequence[int] = (1, 5, 10, 20),
    amp_dtype: torch.dtype | str | None = None,
    progress: bool = True,
    db_chunk_size: int | None = None,
    use_gpu: bool | str = "auto",
) -> dict[str, dict[str, Any]]:
    """Recall@k of ``model`` on each benchmark, keyed by benchmark name.

    ``transform_for(benchmark.image_size)`` gives the eval transform for each
    benchmark (models are evaluated at the size they were published with).
    Each metrics dict holds ``R@k`` (percent) for every k, ``num_queries``,
    ``num_db``, ``num_without_positive``, ``descriptor_dim`` and
    ``extract_img_per_s`` (database + query images over extraction wall time).
    """
    names = [benchmark.name for benchmark in benchmarks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"benchmark names must be unique, got {duplicates} more than once")
    results: dict[str, dict[str, Any]] = {}
    for benchmark in benchmarks:
        metrics = evaluate_benchmark(
            model, benchmark, transform_for, batch_size=batch_size, num_workers=num_workers,
            device=device, ks=ks, amp_dtype=amp_dtype, progress=progress,
            db_chunk_size=db_chunk_size, use_gpu=use_gpu,
        )
        results[benchmark.name] = metrics
        recalls = ", ".join(f"{key} {value:.2f}" for key, value in metrics.items() if key.startswith("R@"))
        log.info(
            "%s: %s (%d queries, %d without positive, %d db)",
            benchmark.name, recalls, metrics["num_queries"], metrics["num_without_positive"], metrics["num_db"],
        )
    return results
