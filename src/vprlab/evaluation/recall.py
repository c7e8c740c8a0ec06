"""Recall@N: a query counts at N if any of its top-N retrieved database items is a positive."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

QUERIES_WITHOUT_POSITIVE_POLICIES = ("miss", "exclude")


@dataclass(frozen=True)
class RecallResult:
    recalls: dict[int, float]  # k -> percent
    num_queries: int  # all queries, whatever the policy
    num_without_positive: int  # queries whose ground truth lists no database item
    num_evaluated: int  # the denominator: num_queries under "miss", minus the no-positive ones under "exclude"
    queries_without_positive: str = "miss"
    # k -> number of predictions actually used, for ks larger than the prediction lists
    clamped_ks: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {f"R@{k}": value for k, value in self.recalls.items()}
        out["num_queries"] = self.num_queries
        out["num_without_positive"] = self.num_without_positive
        return out


def first_positive_rank(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """0-based rank of the first positive in each query's prediction list; -1 when there is none."""
    ranks = np.full(predictions.shape[0], -1, dtype=np.int64)
    for query, (predicted, positive) in enumerate(zip(predictions, positives)):
        hits = np.flatnonzero(np.isin(predicted, positive))
        if hits.size:
            ranks[query] = hits[0]
    return ranks


def compute_recalls(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    ks: Sequence[int] = (1, 5, 10, 20),
    queries_without_positive: str = "miss",
    num_db: int | None = None,
) -> RecallResult:
    """Recall@k in percent for each k in ``ks``.

    ``predictions`` [num_queries, K] holds database indices, best first;
    ``positives[i]`` the database indices that count as correct for query i.
    Queries with no positive can never be retrieved correctly: ``"miss"`` keeps
    them in the denominator (counted as failures), ``"exclude"`` drops them;
    either way their number is reported.

    A k larger than K is computed from all K predictions and recorded in
    ``clamped_ks``. That is exact when K covers the whole database (pass
    ``num_db`` to say so and silence the warning), and an underestimate otherwise.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be a 2-D [num_queries, K] array, got shape {predictions.shape}")
    num_queries, num_predictions = predictions.shape
    if len(positives) != num_queries:
        raise ValueError(
            f"got positives for {len(positives)} queries but predictions for {num_queries}; "
            "both must come from the same benchmark, in query order"
        )
    if queries_without_positive not in QUERIES_WITHOUT_POSITIVE_POLICIES:
        raise ValueError(
            f"queries_without_positive must be one of {QUERIES_WITHOUT_POSITIVE_POLICIES}, "
            f"got {queries_without_positive!r}"
        )
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {ks}")
    if num_queries == 0:
        raise ValueError("there are no queries to evaluate")

    positives = [np.asarray(p, dtype=np.int64).reshape(-1) for p in positives]
    has_positive = np.array([p.size > 0 for p in positives], dtype=bool)
    num_without_positive = int((~has_positive).sum())
    if queries_without_positive == "exclude":
        num_evaluated = num_queries - num_without_positive
        if num_evaluated == 0:
            raise ValueError(
                f"none of the {num_queries} queries has a positive, so recall is undefined with "
                "queries_without_positive='exclude'; check the benchmark's ground truth"
            )
    else:
        num_evaluated = num_queries

    clamped_ks = {k: num_predictions for k in ks if k > num_predictions}
    covers_database = num_db is not None and num_predictions >= num_db
    if clamped_ks and not covers_database:
        warnings.warn(
            f"Recall@{sorted(clamped_ks)} asked for but only {num_predictions} predictions per query "
            "were given; those values use all the predictions and may underestimate recall. "
            "Search with k >= max(ks) to avoid this.",
            stacklevel=2,
        )

    ranks = first_positive_rank(predictions, positives)
    found = ranks >= 0
    recalls = {
        k: 100.0 * float(np.count_nonzero(found & (ranks < k))) / num_evaluated for k in ks
    }
    return RecallResult(
        recalls=recalls,
        num_queries=num_queries,
        num_without_positive=num_without_positive,
        num_evaluated=num_evaluated,
        queries_without_positive=queries_without_positive,
        clamped_ks=clamped_ks,
    )
