"""evaluate.py's descriptor cache, chunked/float16 search and MSLS challenge predictions on tiny trees."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from PIL import Image

from vprlab.commands.evaluate import run_evaluation
from vprlab.evaluation.protocol import BenchmarkDescriptors, score_benchmark
from vprlab.evaluation.results import read_results
from vprlab.evaluation.retrieval import search
from vprlab.evaluation.settings import EvalSettings
from vprlab.evaluation.submission import image_key, msls_prediction_lines
from vprlab.models.vpr_model import build_model

TINY_BOQ = [
    "backbone=resnet18", "backbone.pretrained=false", "backbone.eval_image_size=[32,32]",
    "aggregator.proj_channels=32", "aggregator.num_queries=8", "aggregator.num_layers=1", "aggregator.row_dim=4",
]


def _image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def utm_tree(tmp_path):
    """A custom benchmark in the utm_folder format: 12 database images on a line, 6 queries."""
    rng = np.random.default_rng(0)
    root = tmp_path / "custom"
    for i in range(12):
        _image(root / "database" / f"@{500000 + 20 * i}@4400000@17@T@@@db{i}@@@@@@@@.jpg", rng)
    for i in range(6):
        _image(root / "queries" / f"@{500000 + 45 * i + 3}@4400000@17@T@@@q{i}@@@@@@@@.jpg", rng)
    return root


@pytest.fixture
def weights(tmp_path):
    cfg = compose_config("evaluate", [*TINY_BOQ, f"paths.output_dir={tmp_path}"])
    torch.manual_seed(0)
    path = tmp_path / "weights.pth"
    torch.save(build_model(cfg.backbone, cfg.aggregator).state_dict(), path)
    return path


def _cfg(tmp_path, root, weights, *extra):
    return compose_config("evaluate", [
        "benchmark=[custom]", f"benchmark.custom.root={root}", f"paths.output_dir={tmp_path / 'out'}",
        f"paths.log_dir={tmp_path / 'logs'}", f"cache_dir={tmp_path / 'logs' / 'descriptor_cache'}",
        f"weights_path={weights}", "num_workers=0", "batch_size=4", "progress=false", *TINY_BOQ, *extra,
    ])


def _forbid_extraction(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model ran although the descriptors are cached")

    monkeypatch.setattr("vprlab.evaluation.protocol.extract_descriptors_timed", fail)


def test_cache_hit_gives_identical_results_without_the_model(tmp_path, utm_tree, weights, monkeypatch):
    first = run_evaluation(_cfg(tmp_path, utm_tree, weights))["custom"]
    entries = list((tmp_path / "logs" / "descriptor_cache").glob("*/custom/32x32-*/meta.json"))
    assert len(entries) == 1
    _forbid_extraction(monkeypatch)
    second = run_evaluation(_cfg(tmp_path, utm_tree, weights, "recall_ks=[1,2,3]"))["custom"]
    again = run_evaluation(_cfg(tmp_path, utm_tree, weights))["custom"]
    assert again == {**first, "search_s": again["search_s"]}
    assert second["R@1"] == first["R@1"] and "R@2" in second  # re-scoring with other ks is instant too
    assert read_results(tmp_path / "out")[0]["from_cache"] is True
    # Another image size is another entry: the model has to run.
    with pytest.raises(AssertionError, match="the model ran"):
        run_evaluation(_cfg(tmp_path, utm_tree, weights, "benchmark.custom.image_size=[40,40]"))


def test_float16_cache_is_consistent_and_cache_can_be_off(tmp_path, utm_tree, weights, monkeypatch):
    first = run_evaluation(_cfg(tmp_path, utm_tree, weights, "cache_dtype=float16"))["custom"]
    (entry,) = (tmp_path / "logs" / "descriptor_cache").glob("*/custom/*")
    assert np.load(entry / "database.npy").dtype == np.float16
    _forbid_extraction(monkeypatch)
    cached = run_evaluation(_cfg(tmp_path, utm_tree, weights, "cache_dtype=float16"))["custom"]
    assert {k: v for k, v in cached.items() if k.startswith("R@")} == {k: v for k, v in first.items() if k.startswith("R@")}
    with pytest.raises(AssertionError, match="the model ran"):
        run_evaluation(_cfg(tmp_path, utm_tree, weights, "cache=false"))


def test_chunked_search_equals_unchunked_search(tmp_path, utm_tree, weights):
    whole = run_evaluation(_cfg(tmp_path, utm_tree, weights))["custom"]
    chunked = run_evaluation(_cfg(tmp_path, utm_tree, weights, "db_chunk_size=5"))["custom"]
    assert {k: v for k, v in whole.items() if k.startswith("R@")} == {k: v for k, v in chunked.items() if k.startswith("R@")}
    rng = np.random.default_rng(3)
    db = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    from types import SimpleNamespace

    bench = SimpleNamespace(name="b", positives=[np.array([i]) for i in range(20)], queries_without_positive="miss")
    descriptors = BenchmarkDescriptors(db, q, 1.0, 1.0)
    runs = [score_benchmark(bench, descriptors, EvalSettings(k=25, db_chunk_size=c, use_gpu=False, progress=False)) for c in (None, 7, 64)]
    for run in runs[1:]:
        np.testing.assert_array_equal(run.predictions, runs[0].predictions)
        assert run.metrics["R@20"] == runs[0].metrics["R@20"]


def test_float16_search_equals_search_of_rounded_descriptors():
    rng = np.random.default_rng(4)
    db = rng.standard_normal((200, 32)).astype(np.float32)
    q = rng.standard_normal((15, 32)).astype(np.float32)
    _, expected = search(db.astype(np.float16).astype(np.float32), q, 10, EvalSettings(progress=False, use_gpu=False))
    for database in (db, db.astype(np.float16)):
        _, got = search(database, q, 10, EvalSettings(progress=False, search_float16=True, db_chunk_size=64, use_gpu=False))
        np.testing.assert_array_equal(got, expected)


def test_msls_challenge_writes_the_server_prediction_file(tmp_path, weights):
    rng = np.random.default_rng(1)
    root = tmp_path / "msls"
    for city in ("kampala", "miami"):
        for k in range(12):
            _image(root / "test" / city / "database" / "images" / f"{city}-db-{k:02d}.jpg", rng)
        for k in range(2):
            _image(root / "test" / city / "query" / "images" / f"{city}-q-{k}.jpg", rng)
    cfg = compose_config("evaluate", [
        "benchmark=[msls_challenge]", f"benchmark.msls_challenge.root={root}", f"paths.output_dir={tmp_path / 'out'}",
        f"paths.log_dir={tmp_path / 'logs'}", f"weights_path={weights}", "num_workers=0", "progress=false",
        "visualize.num_queries=1", "visualize.attention=false", *TINY_BOQ,
    ])
    metrics = run_evaluation(cfg)["msls_challenge"]
    assert metrics["R@1"] is None and metrics["num_queries"] == 4 and metrics["num_db"] == 24
    (text,) = (tmp_path / "out" / "predictions").glob("msls_challenge_*.csv")
    lines = [line for line in text.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 4
    db_keys = {f"{city}-db-{k:02d}" for city in ("kampala", "miami") for k in range(12)}
    for line in lines:
        query, *predicted = line.split(" ")
        assert query.startswith(("kampala-q-", "miami-q-")) and len(predicted) == 24
        assert set(predicted) == db_keys  # every database key, each once, best first
    with zipfile.ZipFile(text.with_suffix(".zip")) as archive:
        assert archive.namelist() == [text.name] and archive.read(text.name).decode() == text.read_text()
    assert list((tmp_path / "out" / "visuals").glob("msls_challenge_*_top5.png"))  # grey frames: no ground truth


def test_msls_keys_and_line_format():
    assert image_key("/x/test/sf/query/images/AoD5-ZB5YrgyClbR5qmG4g.jpg") == "AoD5-ZB5YrgyClbR5qmG4g"
    assert image_key("/x/@1@2@17@T@@@@@@@@@@@AoD5.jpg") == "AoD5"
    db = [f"/d/k{i}.jpg" for i in range(30)]
    predictions = np.tile(np.arange(30)[::-1], (2, 1))
    lines = msls_prediction_lines(["/q/a.jpg", "/q/b.jpg"], db, predictions, top_k=25)
    assert lines[0].split(" ")[:3] == ["a", "k29", "k28"] and len(lines[1].split(" ")) == 26
    with pytest.raises(ValueError, match="at least 20"):
        msls_prediction_lines(["/q/a.jpg"], db, predictions[:1], top_k=10)


def test_queries_without_positive_are_counted_and_reported(tmp_path, utm_tree, weights, capsys):
    _image(utm_tree / "queries" / "@509000@4400000@17@T@@@far@@@@@@@@.jpg", np.random.default_rng(9))
    metrics = run_evaluation(_cfg(tmp_path, utm_tree, weights, "cache=false"))["custom"]
    assert metrics["num_without_positive"] == 1 and metrics["num_queries"] == 7
    assert "custom: 1 of 7 queries have no positive (counted as misses)" in capsys.readouterr().out
    excluded = run_evaluation(_cfg(tmp_path, utm_tree, weights, "cache=false", "benchmark.custom.queries_without_positive=exclude"))
    assert excluded["custom"]["R@20"] == 100.0 and metrics["R@20"] == pytest.approx(600 / 7)


def test_the_database_streams_into_the_cache_entry_instead_of_memory(tmp_path, utm_tree, weights, monkeypatch):
    from vprlab.evaluation import protocol as evaluate_module

    seen = {}
    real = evaluate_module.score_benchmark

    def spy(benchmark, descriptors, settings):
        seen["database"] = descriptors.database
        return real(benchmark, descriptors, settings)

    monkeypatch.setattr(evaluate_module, "score_benchmark", spy)
    streamed = run_evaluation(_cfg(tmp_path, utm_tree, weights, "cache_dtype=float16"))["custom"]
    (entry,) = (tmp_path / "logs" / "descriptor_cache").glob("*/custom/*")
    database = seen["database"]
    assert isinstance(database, np.memmap) and Path(database.filename) == entry / "database.npy"
    assert database.dtype == np.float16 and database.shape[0] == 12
    assert not list(entry.glob(".*.tmp"))  # the temporary file was renamed into place
    in_memory = run_evaluation(_cfg(tmp_path / "nocache", utm_tree, weights, "cache=false"))["custom"]
    assert not isinstance(seen["database"], np.memmap)
    in_memory_f16 = np.asarray(seen["database"], dtype=np.float16)
    np.testing.assert_array_equal(np.asarray(database), in_memory_f16)  # same descriptors, stored as float16
    assert streamed["R@1"] == pytest.approx(in_memory["R@1"], abs=100 / 6 + 1e-9)  # at most one query apart


def _recalls(metrics):
    return {k: v for k, v in metrics.items() if k.startswith("R@")}


@pytest.mark.parametrize("damage", ["same_size", "zero_bytes"])
def test_a_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, utm_tree, weights, caplog, monkeypatch, damage):
    first = run_evaluation(_cfg(tmp_path, utm_tree, weights))["custom"]
    (entry,) = (tmp_path / "logs" / "descriptor_cache").glob("*/custom/*")
    database = entry / "database.npy"
    if damage == "same_size":  # the rows reversed, same header, same size: a wrong number if read back
        array = np.load(database)
        raw = database.read_bytes()
        header = len(raw) - array.nbytes
        database.write_bytes(raw[:header] + np.ascontiguousarray(array[::-1]).tobytes())
        assert database.stat().st_size == len(raw)
    else:
        (entry / "queries.npy").write_bytes(b"")
    with caplog.at_level("WARNING", logger="vprlab.evaluation.cache"):
        again = run_evaluation(_cfg(tmp_path, utm_tree, weights))["custom"]
    assert _recalls(again) == _recalls(first)
    assert f"descriptor cache entry {entry} is damaged" in caplog.text and "recomputing it" in caplog.text
    assert read_results(tmp_path / "out")[-1]["from_cache"] is False
    # The recomputed entry is whole again: the next run reads it, without warning or model.
    caplog.clear()
    _forbid_extraction(monkeypatch)
    with caplog.at_level("WARNING", logger="vprlab.evaluation.cache"):
        third = run_evaluation(_cfg(tmp_path, utm_tree, weights))["custom"]
    assert _recalls(third) == _recalls(first) and "damaged" not in caplog.text


def test_cache_load_refuses_truncated_entries_bad_meta_and_entries_without_checksums(tmp_path, caplog):
    from vprlab.evaluation.cache import CacheKey, DescriptorCache

    cache = DescriptorCache(tmp_path)
    key = CacheKey("w", "b", (32, 32), "T", "float32", "d", "q")
    rng = np.random.default_rng(0)
    database, queries = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)

    def fresh():
        return cache.save(key, database, queries)

    entry = fresh()
    np.testing.assert_array_equal(cache.load(key).database, database)
    damages = {
        "truncated": lambda: (entry / "database.npy").write_bytes((entry / "database.npy").read_bytes()[:-8]),
        "bad meta": lambda: (entry / "meta.json").write_text("{not json"),
        "no checksum": lambda: (entry / "meta.json").write_text(
            json.dumps({k: v for k, v in json.loads((entry / "meta.json").read_text()).items() if k != "sha256_tree"})),
        "one flipped byte": lambda: (entry / "queries.npy").write_bytes(
            (entry / "queries.npy").read_bytes()[:-1] + bytes([(entry / "queries.npy").read_bytes()[-1] ^ 1])),
    }
    for name, damage in damages.items():
        fresh()
        damage()
        caplog.clear()
        with caplog.at_level("WARNING", logger="vprlab.evaluation.cache"):
            assert cache.load(key) is None, name
        assert "is damaged" in caplog.text, name
        if name == "no checksum":
            assert "no checksums (written by an older vprlab)" in caplog.text
        if name == "one flipped byte":
            assert "queries.npy does not match its checksum" in caplog.text


def test_the_cache_checksum_is_a_sha256_over_the_blocks_and_sees_every_byte(tmp_path, monkeypatch):
    import hashlib

    from vprlab.evaluation import cache

    monkeypatch.setattr(cache, "_CHECKSUM_BLOCK", 1000)
    data = bytearray(np.random.default_rng(0).integers(0, 256, 4500, dtype=np.uint8).tobytes())
    path = tmp_path / "a.npy"
    path.write_bytes(bytes(data))
    blocks = [hashlib.sha256(bytes(data[i : i + 1000])).digest() for i in range(0, 4500, 1000)]
    expected = hashlib.sha256((4500).to_bytes(8, "little") + b"".join(blocks)).hexdigest()
    assert cache.file_checksum(path) == expected
    for position in (0, 999, 1000, 4499):  # a flipped byte in any block, the first and the last
        damaged = bytearray(data)
        damaged[position] ^= 1
        path.write_bytes(bytes(damaged))
        assert cache.file_checksum(path) != expected
    path.write_bytes(bytes(data[:4000]))  # cut at a block boundary
    assert cache.file_checksum(path) != expected
