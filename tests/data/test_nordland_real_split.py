"""experiments/nordland_real_split.py: three disjoint stretches in the formats the trainer and the
benchmark reader take, tunnels out of the training places only."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from vprlab.data.benchmarks import load_benchmark
from vprlab.data.gsv_cities import GSVCitiesDataset


def _split_module():
    spec = importlib.util.spec_from_file_location("nordland_real_split", REPO / "experiments" / "nordland_real_split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def frames(tmp_path):
    """A 30-frame source in the shared layout: frame 2 is a black tunnel frame in winter."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    rows = []
    for folder in ("database", "queries"):
        (src / folder).mkdir(parents=True)
    for i in range(30):
        name = f"images-{(i + 1) * 10:05d}.png"
        for folder in ("database", "queries"):
            pixels = np.zeros((32, 64, 3), np.uint8) if (i == 2 and folder == "queries") else rng.integers(40, 255, (32, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / folder / name)
        rows.append([i, f"queries/{name}", i, f"database/{name}", (i + 1) * 10])
    with (src / "gt.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["query_index", "query_file", "db_index", "db_file", "frame_id"], *rows])
    return src


def test_split_writes_disjoint_stretches_the_readers_load(frames, tmp_path):
    out = tmp_path / "out"
    _split_module().main(["--src", str(frames), "--out", str(out), "--train-end", "12", "--val-end", "20", "--gap", "2"])
    val = load_benchmark(format="gt_csv", root=out / "val", name="v")
    test = load_benchmark(format="gt_csv", root=out / "test", name="t")
    assert (val.num_db, val.num_queries, test.num_db, test.num_queries) == (6, 6, 8, 8)  # frames 14-19 and 22-29
    assert [p.rsplit("/", 1)[-1] for p in val.db_paths][0] == "images-00150.png"
    assert all(list(pos) == [i] for i, pos in enumerate(test.positives))  # frame i <-> frame i
    train = GSVCitiesDataset(out / "gsv", cities=["NordlandTrain"], img_per_place=2, min_img_per_place=2)
    assert len(train) == 11  # 12 training frames, the tunnel frame left out
    images, labels = train[0]
    assert images.shape[0] == 2 and labels[0] == labels[1]
    names = {p.rsplit("/", 1)[-1] for p in val.db_paths + test.db_paths}
    train_frames = {row["panoid"][1:-1] for row in csv.DictReader((out / "gsv" / "Dataframes" / "NordlandTrain.csv").open())}
    assert not {n[7:12] for n in names} & train_frames  # no frame in two stretches
