"""Exact search over databases larger than RAM: chunked search of a memory-mapped float16 .npy.

    python experiments/measure_search.py --num-db 100000 --dim 16384          # 3.3 GB float16 on disk
    python experiments/measure_search.py --num-db 1000000 --dim 16384 --tmp /scratch   # 33 GB

It writes N random unit descriptors to a float16 .npy in the temporary folder (in chunks, so
writing needs no more memory than one chunk), opens it memory-mapped, and runs
``vprlab.evaluation.retrieval.search`` with ``db_chunk_size``: each chunk is read, cast to
float32 and searched exactly with faiss, and the per-chunk top-k lists are merged.
It prints the search time, queries per second, the process's peak RSS and the peak of its
anonymous memory during the search (sampled every 50 ms; the memory-mapped database pages are
file-backed and count only in RSS) next to what a float32 copy of the database would need in
RAM, and checks the result against a brute-force numpy search on a sample of queries.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vprlab.evaluation.retrieval import search
from vprlab.evaluation.settings import EvalSettings
from vprlab.utils.io import print_results


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def anon_rss_mb() -> float:
    """Resident anonymous memory now (Linux): what the process really holds. Peak RSS also
    counts the memory-mapped database pages, which the kernel can drop at any time."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """Samples the anonymous RSS in a thread while the block runs; ``peak_mb`` is its maximum."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s, self.peak_mb = every_s, anon_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, anon_rss_mb())

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, anon_rss_mb())


def write_random_database(path: Path, num_db: int, dim: int, chunk: int, seed: int) -> np.memmap:
    rng = np.random.default_rng(seed)
    db = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(num_db, dim))
    for start in range(0, num_db, chunk):
        block = rng.standard_normal((min(chunk, num_db - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        db[start : start + len(block)] = block
    db.flush()
    del db
    return np.load(path, mmap_mode="r")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-db", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=16384)
    p.add_argument("--num-queries", type=int, default=500)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--chunk", type=int, default=20_000, help="database rows searched at a time")
    p.add_argument("--tmp", type=Path, default=None, help="folder for the .npy (needs num_db * dim * 2 bytes; made if missing)")
    p.add_argument("--check", type=int, default=20, help="queries checked against brute force")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.tmp is not None:
        try:
            args.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            p.error(f"--tmp {args.tmp}: cannot create the folder ({error.strerror or error})")

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        start = time.perf_counter()
        db = write_random_database(Path(tmp) / "db.npy", args.num_db, args.dim, args.chunk, seed=0)
        write_s = time.perf_counter() - start
        rng = np.random.default_rng(1)
        # Queries near database items, so the top-k is not an arbitrary tie-break among noise.
        picks = rng.choice(args.num_db, size=args.num_queries, replace=False)
        queries = np.asarray(db[np.sort(picks)], dtype=np.float32) + 0.05 * rng.standard_normal((args.num_queries, args.dim), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        rss_before, anon_before = peak_rss_mb(), anon_rss_mb()

        start = time.perf_counter()
        with AnonPeak() as anon:
            scores, indices = search(db, queries, args.k, EvalSettings(db_chunk_size=args.chunk, use_gpu="auto", progress=True))
        search_s = time.perf_counter() - start
        anon_after = anon_rss_mb()

        sample = np.arange(min(args.check, args.num_queries))
        brute = np.concatenate([np.asarray(db[s : s + args.chunk], dtype=np.float32) @ queries[sample].T
                                for s in range(0, args.num_db, args.chunk)], axis=0)
        top1 = brute.argmax(axis=0)
        exact = bool(np.array_equal(top1, indices[sample, 0]))

    results = {
        "num_db": args.num_db, "dim": args.dim, "num_queries": args.num_queries, "k": args.k, "chunk": args.chunk,
        "db_file_gb": args.num_db * args.dim * 2 / 1e9, "float32_in_ram_gb": args.num_db * args.dim * 4 / 1e9,
        "write_s": write_s, "search_s": search_s, "queries_per_s": args.num_queries / search_s,
        "peak_rss_gb": peak_rss_mb() / 1024, "peak_rss_before_search_gb": rss_before / 1024,
        "anon_rss_before_search_gb": anon_before / 1024, "peak_anon_rss_during_search_gb": anon.peak_mb / 1024,
        "anon_rss_after_search_gb": anon_after / 1024,
        "top1_matches_brute_force": exact,
    }
    print_results(results, args.out)
    return results


if __name__ == "__main__":
    main()
