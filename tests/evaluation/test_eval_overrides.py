"""evaluate.py with ckpt_path= or pretrained= builds the file's own model: a command-line override of the
backbone or aggregator cannot be honoured and is refused before anything is loaded (it used to be
ignored while the run's .hydra/config.yaml recorded it); overrides of the evaluation itself stay allowed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, compose_config

import vprlab.commands.evaluate as evaluate_module
from vprlab.commands.evaluate import refuse_unused_model_overrides, run_evaluation
from vprlab.utils.errors import ConfigError


def _never_load(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model or a benchmark was loaded")

    monkeypatch.setattr(evaluate_module, "load_model_for_eval", fail)
    monkeypatch.setattr(evaluate_module, "check_inputs", fail)


@pytest.mark.parametrize("override", ["aggregator=gem", "aggregator.num_queries=64", "backbone=dinov2",
                                      "backbone.eval_image_size=[322,322]", "+aggregator.extra=1"])
def test_a_checkpoint_refuses_model_overrides_before_loading(tmp_path, monkeypatch, override):
    overrides = [f"ckpt_path={tmp_path / 'run' / 'best.ckpt'}", "benchmark=[synthetic]", override]
    cfg = compose_config("evaluate", [*overrides, f"paths.output_dir={tmp_path}"])
    monkeypatch.setattr(evaluate_module, "command_line_overrides", lambda: overrides)
    _never_load(monkeypatch)
    with pytest.raises(ConfigError, match=rf"ckpt_path=.*best.ckpt evaluates the model stored in the checkpoint .*, so "
                                          rf"{re.escape(override)} cannot be honoured.*"
                                          r"benchmark.<name>.image_size=\[H,W\]"):
        run_evaluation(cfg)
    assert not (tmp_path / "results.json").exists()


def test_every_refused_override_is_named_at_once(tmp_path):
    overrides = ["ckpt_path=x.ckpt", "aggregator=gem", "batch_size=8", "aggregator.p=2"]
    cfg = compose_config("evaluate", [*overrides, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"so aggregator=gem, aggregator.p=2 cannot be honoured: they would"):
        refuse_unused_model_overrides(cfg, overrides)


@pytest.mark.parametrize("allowed", [
    ["benchmark=[synthetic,pitts30k_test]", "benchmark.synthetic.image_size=[64,64]", "batch_size=8", "device=cpu",
     "precision=bf16", "num_workers=0", "recall_ks=[1,5]", "cache=false", "skip_missing=true", "visualize.num_queries=2"],
])
def test_overrides_of_the_evaluation_stay_allowed(tmp_path, allowed):
    for source in (["ckpt_path=x.ckpt"], ["pretrained=boq_resnet50_16384"]):
        overrides = [*source, *allowed]
        cfg = compose_config("evaluate", [*overrides, f"paths.output_dir={tmp_path}"])
        refuse_unused_model_overrides(cfg, overrides)  # no error
    # Without ckpt_path / pretrained the groups describe the model: they are its architecture.
    overrides = ["aggregator=gem", "backbone=resnet18", "weights_path=w.pth"]
    refuse_unused_model_overrides(compose_config("evaluate", [*overrides, f"paths.output_dir={tmp_path}"]), overrides)


def test_a_released_model_refuses_architecture_overrides(tmp_path):
    overrides = ["pretrained=boq_resnet50_16384", "aggregator.num_queries=8"]
    cfg = compose_config("evaluate", [*overrides, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"pretrained=boq_resnet50_16384 evaluates the released architecture of "
                                          r"boq_resnet50_16384, so aggregator.num_queries=8 cannot be honoured.*"
                                          r"python train.py pretrained=boq_resnet50_16384 backbone.KEY=VALUE"):
        refuse_unused_model_overrides(cfg, overrides)


def test_checkpoint_and_weights_path_together_are_refused(tmp_path):
    cfg = compose_config("evaluate", ["ckpt_path=a.ckpt", "weights_path=b.pth", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="ckpt_path= and weights_path= both name the weights"):
        refuse_unused_model_overrides(cfg, None)


def test_evaluate_py_refuses_it_with_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("VPRLAB_DEBUG", None)
    result = subprocess.run([sys.executable, str(REPO / "evaluate.py"), f"ckpt_path={tmp_path / 'best.ckpt'}",
                             "aggregator=gem", f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "so aggregator=gem cannot be honoured" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("results.json"))
