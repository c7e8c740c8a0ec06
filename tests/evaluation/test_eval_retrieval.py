import numpy as np
import pytest

from vprlab.evaluation.retrieval import faiss_num_gpus, search
from vprlab.evaluation.settings import EvalSettings


def _normalised(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(database, queries, k):
    scores = queries @ database.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return _normalised(rng, 37, 16), _normalised(rng, 11, 16)


def test_search_matches_numpy_brute_force(data):
    database, queries = data
    scores, indices = search(database, queries, 5, EvalSettings(progress=False, use_gpu=False))
    expected_scores, expected_indices = _brute_force(database, queries, 5)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (11, 5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 10, 36, 37, 100])
@pytest.mark.parametrize("k", [1, 7, 37, 50])
def test_chunked_search_equals_unchunked(data, chunk, k):
    database, queries = data
    full_scores, full_indices = search(database, queries, k, EvalSettings(progress=False, use_gpu=False))
    scores, indices = search(database, queries, k, EvalSettings(progress=False, db_chunk_size=chunk, use_gpu=False))
    assert indices.shape == (11, min(k, 37))
    np.testing.assert_array_equal(indices, full_indices)
    np.testing.assert_allclose(scores, full_scores, rtol=1e-6, atol=1e-6)


def test_k_larger_than_database_returns_every_item_ranked(data):
    database, queries = data
    _, indices = search(database, queries, 1000, EvalSettings(progress=False, use_gpu=False))
    assert indices.shape == (11, 37)
    assert all(sorted(row) == list(range(37)) for row in indices.tolist())


def test_equal_scores_are_ordered_by_database_index():
    database = np.eye(3, dtype=np.float32)[[0, 1, 0, 2, 0]]  # item 0 repeated at 0, 2, 4
    queries = np.array([[1, 0, 0]], dtype=np.float32)
    for chunk in (None, 1, 2):
        _, indices = search(database, queries, 5, EvalSettings(progress=False, db_chunk_size=chunk, use_gpu=False))
        assert indices[0, :3].tolist() == [0, 2, 4]


def test_dim_mismatch_names_both_dims(data):
    database, queries = data
    with pytest.raises(ValueError, match="database has dim 16, queries have dim 8"):
        search(database, queries[:, :8], k=1)


def test_invalid_arguments():
    database = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search(database, database, k=0)
    with pytest.raises(ValueError, match="db_chunk_size"):
        search(database, database, 1, EvalSettings(progress=False, db_chunk_size=0))
    with pytest.raises(ValueError, match="empty"):
        search(database[:0], database, k=1)
    with pytest.raises(ValueError, match="2-D"):
        search(database[0], database, k=1)
    with pytest.raises(ValueError, match="use_gpu"):
        search(database, database, 1, EvalSettings(progress=False, use_gpu="sometimes"))


def test_no_queries_gives_empty_result():
    scores, indices = search(np.eye(4, dtype=np.float32), np.zeros((0, 4), np.float32), k=2)
    assert scores.shape == indices.shape == (0, 2)


@pytest.mark.skipif(faiss_num_gpus() > 0, reason="this faiss build has GPUs")
def test_use_gpu_true_without_faiss_gpu_says_what_to_do(data):
    database, queries = data
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        search(database, queries, 1, EvalSettings(progress=False, use_gpu=True))


@pytest.mark.gpu
@pytest.mark.skipif(faiss_num_gpus() == 0, reason="faiss build without GPU support")
def test_gpu_search_matches_cpu(data):
    database, queries = data
    cpu_scores, cpu_indices = search(database, queries, 10, EvalSettings(progress=False, db_chunk_size=8, use_gpu=False))
    gpu_scores, gpu_indices = search(database, queries, 10, EvalSettings(progress=False, db_chunk_size=8, use_gpu=True))
    np.testing.assert_array_equal(gpu_indices, cpu_indices)
    np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=1e-4, atol=1e-4)


@pytest.fixture
def three_fake_gpus(monkeypatch):
    """faiss "GPUs" that are CPU indexes, recording which device searched how many rows."""
    from vprlab.evaluation import retrieval

    calls: list[tuple[int, int]] = []
    real_search_one = retrieval._search_one

    def search_one(database, queries, k, gpu_resources=None, gpu_float16=False, device=0):
        if gpu_resources is not None:  # None: a CPU search
            assert gpu_resources == f"resources-of-gpu{device}"  # each device uses its own resources
            calls.append((device, database.shape[0]))
        return real_search_one(database, queries, k, gpu_resources, gpu_float16, device)

    monkeypatch.setattr(retrieval, "faiss_num_gpus", lambda: 3)
    monkeypatch.setattr(retrieval, "_gpu_resources", lambda device: f"resources-of-gpu{device}")
    monkeypatch.setattr(retrieval, "_to_gpu", lambda index, resources, device, float16: index)
    monkeypatch.setattr(retrieval, "_search_one", search_one)
    return calls


def _rows_per_device(calls):
    rows: dict[int, list[int]] = {}
    for device, n in calls:
        rows.setdefault(device, []).append(n)
    return {d: sorted(v) for d, v in sorted(rows.items())}


def test_several_gpus_each_search_one_shard_and_the_merge_is_exact(three_fake_gpus):
    rng = np.random.default_rng(4)
    database = rng.standard_normal((100, 16)).astype(np.float32)
    queries = rng.standard_normal((9, 16)).astype(np.float32)
    expected_scores, expected_indices = search(database, queries, 7, EvalSettings(progress=False, use_gpu=False))
    assert not three_fake_gpus
    scores, indices = search(database, queries, 7, EvalSettings(progress=False, use_gpu=True))
    assert _rows_per_device(three_fake_gpus) == {0: [34], 1: [34], 2: [32]}  # one shard per GPU
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)

    three_fake_gpus.clear()
    _, indices = search(database, queries, 7, EvalSettings(progress=False, use_gpu="auto", db_chunk_size=10), num_gpus=2)
    assert _rows_per_device(three_fake_gpus) == {0: [10] * 5, 1: [10] * 5}  # chunks dealt out in turn
    np.testing.assert_array_equal(indices, expected_indices)


def test_num_gpus_beyond_what_faiss_sees_and_a_failing_gpu_are_errors(three_fake_gpus, monkeypatch):
    from vprlab.evaluation import retrieval

    database = np.eye(8, dtype=np.float32)
    with pytest.raises(ValueError, match=r"num_gpus=5 but faiss sees 3 GPU\(s\); use 1..3"):
        search(database, database, 1, EvalSettings(progress=False, use_gpu=True), num_gpus=5)

    def broken(index, resources, device, float16):
        if device == 1:
            raise RuntimeError("CUDA out of memory on GPU 1")
        return index

    monkeypatch.setattr(retrieval, "_to_gpu", broken)
    with pytest.raises(RuntimeError, match="out of memory on GPU 1"):
        search(database, database, 1, EvalSettings(progress=False, use_gpu=True))


@pytest.mark.gpu
@pytest.mark.skipif(faiss_num_gpus() == 0, reason="faiss build without GPU support")
def test_faiss_search_sharded_over_every_gpu_matches_cpu():
    rng = np.random.default_rng(0)
    database = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((50, 64)).astype(np.float32)
    _, cpu = search(database, queries, 10, EvalSettings(progress=False, use_gpu=False))
    _, gpu = search(database, queries, 10, EvalSettings(progress=False, use_gpu=True))  # one shard per GPU faiss sees
    assert (gpu == cpu).mean() > 0.99


@pytest.mark.parametrize("float16", [False, True])
def test_cpu_search_equals_a_faiss_flat_index_with_and_without_onednn(monkeypatch, float16):
    import faiss

    from vprlab.evaluation import retrieval

    rng = np.random.default_rng(7)
    database = _normalised(rng, 3000, 48)
    queries = _normalised(rng, 70, 48)
    stored = database.astype(np.float16) if float16 else database
    index = faiss.IndexFlatIP(48)
    index.add(np.asarray(stored, dtype=np.float32))
    flat_scores, flat_indices = index.search(queries, 15)
    monkeypatch.setattr(retrieval, "_SCORE_BLOCK_ELEMENTS", 3000 * 16)  # query blocks of 16 rows
    for onednn in (True, False):
        monkeypatch.setattr(retrieval, "onednn_linear_available", lambda: onednn)
        scores, indices = search(stored, queries, 15, EvalSettings(progress=False, db_chunk_size=700, use_gpu=False))
        np.testing.assert_array_equal(indices, flat_indices)
        np.testing.assert_allclose(scores, flat_scores, rtol=1e-5, atol=1e-6)


def _tied_data(seed=0, num_db=40, num_queries=9, dim=16, distinct=5):
    """Descriptors whose inner products are exact in float16 and float32 (multiples of 1/8 in
    [-1/2, 1/2]): every path computes the same scores, and the database repeats ``distinct``
    vectors at many indices, across every chunk boundary, so ties sit at every rank."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-4, 5, (distinct, dim)).astype(np.float32) / 8
    database = base[rng.integers(0, distinct, num_db)]
    queries = rng.integers(-4, 5, (num_queries, dim)).astype(np.float32) / 8
    return database, queries


def _reference_ties_to_lower_index(database, queries, k):
    """Stable sort by (-score, index): what faiss's CPU search returns."""
    scores = queries.astype(np.float64) @ database.T.astype(np.float64)
    order = np.lexsort((np.broadcast_to(np.arange(database.shape[0]), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def _assert_lower_index_wins(database, queries, k, **options):
    expected_scores, expected = _reference_ties_to_lower_index(database, queries, k)
    scores, indices = search(database, queries, k, EvalSettings(progress=False, **options))
    np.testing.assert_array_equal(indices, expected, err_msg=str(options))
    np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("float16", [False, True])
def test_ties_at_the_cut_keep_the_lower_database_index_on_every_cpu_path(monkeypatch, onednn, float16):
    from vprlab.evaluation import retrieval

    monkeypatch.setattr(retrieval, "onednn_linear_available", lambda: onednn)
    database, queries = _tied_data()
    assert len({tuple(r) for r in database}) == 5  # 40 items, 5 distinct vectors
    for chunk in (None, 1, 3, 7, 16, 39):
        for k in (1, 2, 5, 9, 17, 40):
            _assert_lower_index_wins(database, queries, k, db_chunk_size=chunk, search_float16=float16, use_gpu=False)


def test_ties_keep_the_lower_index_whatever_the_backend_selects(monkeypatch):
    """A backend that keeps the higher index among ties (as torch.topk may, and a GPU selection can):
    the result is still the reference one."""
    from vprlab.evaluation import retrieval

    def higher_index_first(database, queries, k):
        scores = queries @ np.asarray(database, np.float32).T
        idx = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        order = np.lexsort((-idx, -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), order.astype(np.int64)

    monkeypatch.setattr(retrieval, "onednn_linear_available", lambda: True)
    monkeypatch.setattr(retrieval, "_onednn_knn", higher_index_first)
    database, queries = _tied_data(seed=1)
    for chunk in (None, 4, 13):
        for k in (1, 3, 8, 20):
            _assert_lower_index_wins(database, queries, k, db_chunk_size=chunk, use_gpu=False)


def test_ties_keep_the_lower_index_when_several_gpus_search_shards(three_fake_gpus):
    database, queries = _tied_data(seed=2, num_db=50)
    for chunk in (None, 6):
        for k in (1, 4, 11):
            _assert_lower_index_wins(database, queries, k, db_chunk_size=chunk, use_gpu=True)
    assert three_fake_gpus  # the (fake) GPUs did search


@pytest.mark.gpu
@pytest.mark.skipif(faiss_num_gpus() == 0, reason="faiss build without GPU support")
@pytest.mark.parametrize("float16", [False, True])
def test_ties_keep_the_lower_index_on_a_real_gpu(float16):
    database, queries = _tied_data(seed=3, num_db=3000, num_queries=50, distinct=7)
    for chunk in (None, 700):
        for k in (1, 5, 25):
            _assert_lower_index_wins(database, queries, k, db_chunk_size=chunk, search_float16=float16, use_gpu=True)


def test_rows_that_tie_with_everything_are_researched_a_few_at_a_time(monkeypatch):
    """A constant query ties with every database item: its rows are searched again in small groups."""
    from vprlab.evaluation import retrieval

    monkeypatch.setattr(retrieval, "_TIE_RESEARCH_ELEMENTS", 64)
    calls = []
    real = retrieval._onednn_knn

    def spy(database, queries, k):
        calls.append((queries.shape[0], k))
        return real(database, queries, k)

    monkeypatch.setattr(retrieval, "onednn_linear_available", lambda: True)
    monkeypatch.setattr(retrieval, "_onednn_knn", spy)
    database = np.ones((100, 4), np.float32) / 2
    queries = np.zeros((6, 4), np.float32)  # every score is 0: all 100 items tie
    scores, indices = search(database, queries, 3, EvalSettings(progress=False, use_gpu=False))
    assert indices.tolist() == [[0, 1, 2]] * 6 and not scores.any()
    assert max(rows * k for rows, k in calls[1:]) <= 100  # groups of at most 64 // k rows (1 row once k >= 64)
    assert calls[0] == (6, 4) and calls[-1][1] == 100
