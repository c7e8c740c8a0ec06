import warnings

import numpy as np
import pytest

from vprlab.evaluation.recall import compute_recalls, first_positive_rank

# 4 queries, 3 predictions each (database of 4 items: 0..3).
PREDICTIONS = np.array(
    [
        [2, 0, 1],  # positive 2 at rank 0
        [0, 1, 2],  # positive 2 at rank 2
        [1, 0, 2],  # positive 3 never retrieved
        [0, 1, 2],  # no positive at all
    ]
)
POSITIVES = [np.array([2]), np.array([2, 3]), np.array([3]), np.array([], dtype=np.int64)]


def test_first_positive_rank():
    assert first_positive_rank(PREDICTIONS, POSITIVES).tolist() == [0, 2, -1, -1]


def test_miss_policy_counts_queries_without_positive_as_failures():
    result = compute_recalls(PREDICTIONS, POSITIVES, ks=(1, 2, 3), queries_without_positive="miss")
    assert result.recalls == pytest.approx({1: 25.0, 2: 25.0, 3: 50.0})
    assert result.num_queries == 4
    assert result.num_without_positive == 1
    assert result.num_evaluated == 4
    assert result.as_dict() == pytest.approx(
        {"R@1": 25.0, "R@2": 25.0, "R@3": 50.0, "num_queries": 4, "num_without_positive": 1}
    )


def test_exclude_policy_drops_queries_without_positive():
    result = compute_recalls(PREDICTIONS, POSITIVES, ks=(1, 2, 3), queries_without_positive="exclude")
    assert result.recalls == pytest.approx({1: 100 / 3, 2: 100 / 3, 3: 200 / 3})
    assert result.num_queries == 4
    assert result.num_without_positive == 1
    assert result.num_evaluated == 3


def test_positives_as_lists_and_unsorted_duplicate_ks():
    result = compute_recalls(PREDICTIONS, [[2], [3, 2], [3], []], ks=(3, 1, 3))
    assert list(result.recalls) == [1, 3]
    assert result.recalls == pytest.approx({1: 25.0, 3: 50.0})


def test_k_larger_than_predictions_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match=r"only 3 predictions"):
        result = compute_recalls(PREDICTIONS, POSITIVES, ks=(1, 5))
    assert result.clamped_ks == {5: 3}
    assert result.recalls[5] == pytest.approx(50.0)


def test_clamp_is_silent_when_predictions_cover_the_database():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_recalls(PREDICTIONS, POSITIVES, ks=(1, 5), num_db=3)
    assert result.clamped_ks == {5: 3}


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="positives for 3 queries but predictions for 4"):
        compute_recalls(PREDICTIONS, POSITIVES[:3])
    with pytest.raises(ValueError, match="'drop'"):
        compute_recalls(PREDICTIONS, POSITIVES, queries_without_positive="drop")
    with pytest.raises(ValueError, match="ks must be"):
        compute_recalls(PREDICTIONS, POSITIVES, ks=(0, 1))
    with pytest.raises(ValueError, match="none of the 2 queries has a positive"):
        compute_recalls(PREDICTIONS[:2], [[], []], queries_without_positive="exclude")
    with pytest.raises(ValueError, match="2-D"):
        compute_recalls(PREDICTIONS[0], POSITIVES)
