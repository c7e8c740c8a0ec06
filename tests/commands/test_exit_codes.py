"""Every `vprlab` subcommand exits 0 on success, 2 on a user error, 1 on a failure, as a script sees it
(`set -e`, SLURM): run as a subprocess, each subcommand on work that succeeds, then on a mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_config
from omegaconf import OmegaConf

from vprlab.commands.cli import SUBCOMMANDS, exit_status
from vprlab.engine.checkpoint import save_checkpoint
from vprlab.evaluation.results import write_results
from vprlab.models.vpr_model import build_model

SIZE = "[32,64]"


def _vprlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "VPRLAB_PROGRESS": "0",
           "TORCH_HOME": str(cwd / "torch_home")}
    env.pop("VPRLAB_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "vprlab", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def work(tiny_synthetic, tmp_path_factory):
    """A tiny BoQ checkpoint (as train.py writes it) and an evaluate.py results folder."""
    folder = tmp_path_factory.mktemp("exit_codes")
    data_dir = tiny_synthetic.root.parent
    cfg = compose_config("train", [
        "experiment=synthetic_compare", f"paths.data_dir={data_dir}", f"paths.output_dir={folder}",
        f"backbone.train_image_size={SIZE}", f"backbone.eval_image_size={SIZE}", "aggregator=boq_small",
        "aggregator.num_layers=1",
    ])
    torch.manual_seed(0)
    model = build_model(cfg.backbone, cfg.aggregator)
    ckpt = folder / "run" / "checkpoints" / "best.ckpt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True), "epoch": 1})
    write_results([{"model": "tiny", "checkpoint_hash": "abc", "benchmark": "synthetic", "R@1": 50.0, "R@5": 75.0,
                    "status": "evaluated"}], folder / "evaluate" / "run1")
    return {"folder": folder, "data_dir": data_dir, "ckpt": ckpt, "gsv": tiny_synthetic.gsv_root}


def _success_commands(work) -> dict[str, list[str]]:
    folder, data_dir = work["folder"], work["data_dir"]
    return {
        "report": ["report", "collect", str(folder / "evaluate"), "--out", str(folder / "report"), "--no-wandb"],
        "models": ["models", "export", str(work["ckpt"]), str(folder / "export" / "tiny.pth")],
        "compare": ["compare", "--models", str(work["ckpt"]), "--benchmarks", "synthetic", "--out", str(folder / "compare"),
                    "--override", f"paths.data_dir={data_dir}", "device=cpu", "num_workers=0", "batch_size=8",
                    f"cache_dir={folder / 'cache'}", f"benchmark.synthetic.image_size={SIZE}"],
        "benchmarks": ["benchmarks", "--data-dir", str(data_dir), "--no-check"],
        "leaderboard": ["leaderboard", "--stand-ins", "--models", "cosplace_resnet18_32", "--benchmarks", "synthetic",
                        "--data-dir", str(data_dir), "--out", str(folder / "leaderboard"), "--cache", str(folder / "lb_cache"),
                        "--override", "device=cpu", "num_workers=0", "batch_size=8", f"benchmark.synthetic.image_size={SIZE}"],
        "data": ["data", "list", "--data-dir", str(data_dir), "--no-progress"],
        "synth": ["synth", "--root", str(folder / "synth"), "--num-train-places", "4", "--images-per-place", "4",
                  "--num-cities", "1", "--num-bench-places", "4", "--image-size", "32", "32"],
        # 96 images: before the fix the exit status was the count of images written.
        "resize-cache": ["resize-cache", "--src", str(work["gsv"]), "--dst", str(folder / "gsv_small"), "--size", "16", "16",
                         "--workers", "1"],
    }


def test_every_subcommand_is_tested():
    assert set(SUBCOMMANDS) <= set(_success_commands({"folder": Path("."), "data_dir": Path("."), "ckpt": "", "gsv": ""}))


# Those that import torch and build models take ~20 s each on a busy CPU: in the slow suite.
_SLOW = {"compare", "leaderboard", "models", "synth"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in sorted(SUBCOMMANDS)])
def test_success_exits_0(work, name):
    result = _vprlab(*_success_commands(work)[name], cwd=work["folder"])
    assert result.returncode == 0, (result.stdout[-1500:], result.stderr[-3000:])
    if name == "resize-cache":
        written = sorted((work["folder"] / "gsv_small" / "Images").glob("*/*.jpg"))
        assert len(written) > 2 and f"{len(written)} images written" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["resize-cache", "--src", "nowhere", "--dst", "out", "--size", "16", "16"], "is not a GSV-Cities tree"),
    pytest.param(["models", "download", "not_a_model"], "unknown published model 'not_a_model'", marks=pytest.mark.slow),
    (["report", "collect", "nowhere"], "no run folder"),
    pytest.param(["compare", "--models", "x.ckpt", "--weights", "x.ckpt", "--benchmarks", "synthetic"], "write NAME=PATH",
                 marks=pytest.mark.slow),
    (["not-a-command"], "unknown command"),
    pytest.param(["leaderboard", "--stand-ins"], "--stand-ins writes random weights for the models you name: add --models",
                 marks=pytest.mark.slow),
    (["benchmarks", "--no-such-option"], "unrecognized arguments"),
])
def test_a_user_error_exits_2_with_its_message(tmp_path, args, message):
    result = _vprlab(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout[-1500:], result.stderr[-3000:])
    assert message in result.stderr and "Traceback" not in result.stderr


def test_report_where_selecting_nothing_is_a_user_error(work):
    result = _vprlab("report", "collect", str(work["folder"] / "evaluate"), "--out", str(work["folder"] / "r2"),
                     "--no-wandb", "--where", "no_such_column=1", cwd=work["folder"])
    assert result.returncode == 2 and "--where no_such_column=...: the runs have no column" in result.stderr


@pytest.mark.slow
def test_nothing_evaluated_is_a_failure_exit_1(work, tmp_path):
    result = _vprlab("compare", "--models", str(tmp_path / "missing.ckpt"), "--benchmarks", "synthetic",
                     "--out", str(tmp_path / "c"), "--override", f"paths.data_dir={work['data_dir']}", "device=cpu",
                     "num_workers=0", cwd=tmp_path)
    assert result.returncode == 1 and "no cell evaluated" in result.stdout


def test_a_returned_value_is_a_status_only_when_it_is_one():
    assert [exit_status(v) for v in (None, 0, 1, 2, 120, True, Path("x"))] == [0, 0, 1, 2, 0, 0, 0]

