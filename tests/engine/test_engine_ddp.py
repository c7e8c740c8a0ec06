"""DistributedDataParallel on the CPU (gloo): two ranks train on disjoint, city-by-city batches and end with
identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from conftest import REPO, tiny_train_overrides

RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from conftest import compose_config
    import vprlab.engine.trainer as trainer
    batches = []  # the labels of the places of each batch this rank trained on

    def recording_loader(*args, **kwargs):
        loader, sampler, dataset = build(*args, **kwargs)

        class Recorder:
            batch_size = loader.batch_size
            normalize = loader.normalize  # the trainer normalises the uint8 batches on the device
            def __len__(self):
                return len(loader)
            def __iter__(self):
                for images, labels in loader:
                    batches.append(labels[::dataset.img_per_place].tolist())
                    yield images, labels
        return Recorder(), sampler, dataset

    build, trainer.build_train_loader = trainer.build_train_loader, recording_loader
    result = trainer.train(compose_config("train", {overrides!r}))
    with open({out!r} + "/rank" + str(result["rank"]) + ".json", "w") as f:
        json.dump({{**{{k: result[k] for k in ("weights_hash", "step", "rank", "metrics_file")}}, "batches": batches}}, f)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_in_lockstep_on_disjoint_city_batches(tiny_synthetic, tmp_path):
    overrides = tiny_train_overrides(
        tiny_synthetic.root.parent, tmp_path / "run", "trainer.max_epochs=1", "dataset.places_per_batch=5",
        "trainer.eval_before_training=false", "logger=none",
    )
    script = RANK_SCRIPT.format(tests=str(REPO / "tests"), overrides=overrides, out=str(tmp_path))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "VPRLAB_PROGRESS": "0"}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 24 places in 2 cities of 12, cut into batches of 5 (the last has 4): batches 0-3 go to ranks 0, 1, 0, 1
    # (the fifth would leave rank 1 a step short) -> 2 steps each
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    batches = [b for r in ranks for b in r["batches"]]
    assert [len(b) for b in batches] == [5, 5, 5, 5]
    places = [p for b in batches for p in b]
    assert len(set(places)) == 20  # disjoint ranks
    # city = label // 10**5 (the release's convention); positions 10-14 of the city-ordered sequence straddle
    # the two cities: one batch, on one rank, mixes them; every other batch is single-city.
    assert sorted(len({p // 10**5 for p in b}) for b in batches) == [1, 1, 1, 2]
    assert ranks[0]["weights_hash"] == ranks[1]["weights_hash"]
    # only rank 0 writes the run's files
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "train/loss" in r]) == 2
