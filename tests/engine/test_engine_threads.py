"""The quickstart's numbers do not depend on the machine's thread count: float sums are split by thread
(BatchNorm statistics, convolution gradients, NHWC convolutions), so the run fixes it
(trainer.num_threads, set by experiment=quickstart). The same tiny run under OMP_NUM_THREADS=1 and 2
(the default thread count of torch) trains to the same bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, compose_config, tiny_train_overrides

from vprlab.config.checks import validate_train_values
from vprlab.utils.errors import ConfigError

_RUN = """
import json, sys
sys.path.insert(0, {tests!r})
from conftest import compose_config, tiny_train_overrides
from vprlab.engine.trainer import train
from vprlab.tracking import read_metrics
import torch
cfg = compose_config("train", tiny_train_overrides({data!r}, {out!r}, "trainer.max_epochs=1", "logger=none", *{extra!r}))
result = train(cfg)
losses = [row["train/loss"] for row in read_metrics({out!r} + "/metrics.jsonl") if "train/loss" in row]
print(json.dumps({{"threads": torch.get_num_threads(), "losses": losses, "weights": result["weights_hash"],
                  "recalls": [h["metrics"]["synthetic"] for h in result["history"]]}}))
"""


def _train_with(threads: int, data, out, *extra: str) -> dict:
    code = _RUN.format(tests=str(REPO / "tests"), data=str(data), out=str(out), extra=list(extra))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(threads), "VPRLAB_PROGRESS": "0",
           "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _comparable(run: dict) -> dict:
    """What the run computed (not how long it took)."""
    return {"losses": run["losses"], "weights": run["weights"],
            "recalls": [{k: v for k, v in r.items() if k.startswith("R@")} for r in run["recalls"]]}


def test_the_quickstart_trains_to_the_same_bits_on_1_or_2_threads(tiny_synthetic, tmp_path):
    data = tiny_synthetic.root.parent
    one = _train_with(1, data, tmp_path / "one")
    two = _train_with(2, data, tmp_path / "two")
    # Each process's own thread count (restored after the run) differs; experiment=quickstart ran both on 2.
    assert (one["threads"], two["threads"]) == (1, 2)
    assert len(one["losses"]) == 3 and len(one["recalls"]) == 2  # 3 steps, evaluated before and after
    assert _comparable(one) == _comparable(two)


@pytest.mark.slow  # two more training runs: shows why the thread count is fixed
def test_without_a_fixed_thread_count_the_run_depends_on_it(tiny_synthetic, tmp_path):
    data = tiny_synthetic.root.parent
    one = _train_with(1, data, tmp_path / "one", "trainer.num_threads=null")
    two = _train_with(2, data, tmp_path / "two", "trainer.num_threads=null")
    assert (one["threads"], two["threads"]) == (1, 2)
    assert one["weights"] != two["weights"]


def test_num_threads_is_checked(tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tmp_path, tmp_path, "trainer.num_threads=0"))
    with pytest.raises(ConfigError, match=r"trainer.num_threads=0 must be an integer >= 1 or null"):
        validate_train_values(cfg)


def test_the_thread_count_is_the_runs_only():
    """train() sets it for the run and restores the caller's afterwards (a notebook, a test session)."""
    import faiss
    import torch

    from vprlab.utils.seed import cpu_threads

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    with cpu_threads(3):
        assert torch.get_num_threads() == 3 and faiss.omp_get_max_threads() == 3
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before[0]
    assert compose_config("train", ["experiment=quickstart"]).trainer.num_threads == 2
