"""A user mistake is a message, not a traceback: the error classes, the entry points, value checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, compose_config, tiny_train_overrides

from vprlab.config.checks import validate_evaluate_values, validate_train_config
from vprlab.utils.errors import (
    ConfigError,
    MissingFileError,
    UserError,
    exit_on_user_error,
)


def test_a_user_error_prints_one_paragraph_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("VPRLAB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        with exit_on_user_error("train.py"):
            raise ConfigError("optimizer.lr=-1 must be a number > 0;\n   the learning rate is positive")
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err == ("train.py: configuration error: optimizer.lr=-1 must be a number > 0; the learning rate is positive\n"
                   "(VPRLAB_DEBUG=1 shows the full traceback)\n")


def test_a_wrapped_user_error_is_found_and_other_errors_keep_their_traceback(capsys, monkeypatch):
    monkeypatch.delenv("VPRLAB_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        with exit_on_user_error("evaluate.py"):
            try:
                raise MissingFileError("benchmark root /x does not exist; set benchmark.custom.root")
            except MissingFileError as err:
                raise RuntimeError("Error in call to target 'vprlab...'") from err  # as Hydra's instantiate does
    assert "evaluate.py: missing file: benchmark root /x does not exist" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error
        with exit_on_user_error("evaluate.py"):
            1 / 0


def test_a_multi_line_message_keeps_its_list_and_joins_wrapped_lines(capsys, monkeypatch):
    """evaluate.py's list of missing inputs: one line per item (it arrived as one 3,000-character line)."""
    monkeypatch.delenv("VPRLAB_DEBUG", raising=False)
    message = ("2 inputs of this evaluation are missing (nothing was loaded):\n"
               "  - benchmark pitts30k_test: benchmark root /d/Pittsburgh does not exist\n"
               "  - benchmark nordland: benchmark root /d/Nordland does not exist; a long item\n"
               "    wrapped in the source\n"
               "`vprlab benchmarks` lists every benchmark; docs/evaluation.md says where to\n"
               "   download each.\n\nA second paragraph.")
    with pytest.raises(SystemExit):
        with exit_on_user_error("evaluate.py"):
            raise MissingFileError(message)
    assert capsys.readouterr().err.splitlines() == [
        "evaluate.py: missing file: 2 inputs of this evaluation are missing (nothing was loaded):",
        "  - benchmark pitts30k_test: benchmark root /d/Pittsburgh does not exist",
        "  - benchmark nordland: benchmark root /d/Nordland does not exist; a long item wrapped in the source",
        "`vprlab benchmarks` lists every benchmark; docs/evaluation.md says where to download each.",
        "",
        "A second paragraph.",
        "(VPRLAB_DEBUG=1 shows the full traceback)",
    ]


def test_hydra_errors_before_the_run_exit_2_failures_inside_it_keep_1(monkeypatch):
    """Hydra prints its command-line errors (unknown key, group, option) and exits 1 before the task starts;
    run_hydra_app makes that the documented 2. A failure once the task has started stays 1."""
    import vprlab.utils.errors as errors

    monkeypatch.delenv("VPRLAB_DEBUG", raising=False)
    monkeypatch.setattr(errors, "_task_started", False)

    def hydra_composition_error():
        raise SystemExit(1)  # what Hydra's run_and_report does after printing "Could not override ..."

    with pytest.raises(SystemExit) as done:
        errors.run_hydra_app(hydra_composition_error)
    assert done.value.code == 2

    def crash_inside_the_task():
        with exit_on_user_error("train.py"):
            pass  # the task started ...
        raise SystemExit(1)  # ... and failed (Hydra reports the exception and exits 1)

    with pytest.raises(SystemExit) as done:
        errors.run_hydra_app(crash_inside_the_task)
    assert done.value.code == 1

    from hydra.errors import ConfigCompositionException

    monkeypatch.setattr(errors, "_task_started", False)

    def raised_with_full_error():  # VPRLAB_DEBUG=1 sets HYDRA_FULL_ERROR: Hydra raises instead
        raise ConfigCompositionException("Could not override 'trainer.max_epoch'")

    with pytest.raises(SystemExit) as done:
        errors.run_hydra_app(raised_with_full_error)
    assert done.value.code == 2


@pytest.mark.parametrize("config_name", ["train", "evaluate"])
def test_hydra_marks_the_run_started_once_the_command_line_is_composed(config_name, tmp_path, monkeypatch):
    """A sweep on a launcher (SLURM) runs its jobs elsewhere: the start is marked by a Hydra callback in the
    parent, so a job's failure reported there stays status 1."""
    from hydra.utils import instantiate

    import vprlab.utils.errors as errors

    cfg = compose_config(config_name, [f"paths.output_dir={tmp_path}"], hydra=True)
    callback = instantiate(cfg.hydra.callbacks.vprlab_run_started)
    monkeypatch.setattr(errors, "_task_started", False)
    callback.on_multirun_start(config=cfg)
    assert errors._task_started is True

    def job_failed_on_the_launcher():
        raise SystemExit(1)

    with pytest.raises(SystemExit) as done:
        errors.run_hydra_app(job_failed_on_the_launcher)
    assert done.value.code == 1


def test_the_debug_switch_lets_the_traceback_through(monkeypatch, capsys):
    monkeypatch.setenv("VPRLAB_DEBUG", "1")
    with pytest.raises(ConfigError, match="bad"):
        with exit_on_user_error("train.py"):
            raise ConfigError("bad")
    assert capsys.readouterr().err == ""


def test_user_errors_are_still_the_builtin_errors_callers_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(MissingFileError, FileNotFoundError)
    from vprlab.utils.weights import UnsafeFileError

    assert issubclass(UnsafeFileError, UserError) and issubclass(UnsafeFileError, ValueError)


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=-1", r"optimizer.lr=-1 must be a number > 0; the learning rate"),
    ("optimizer.lr=abc", r"optimizer.lr='abc' must be a number > 0"),
    ("optimizer.weight_decay=-0.1", r"optimizer.weight_decay=-0.1 must be a number >= 0"),
    ("dataset.places_per_batch=1", r"dataset.places_per_batch=1 must be an integer >= 2; a metric-learning batch"),
    ("trainer.max_epochs=0", r"trainer.max_epochs=0 must be an integer >= 1"),
    ("trainer.eval_batch_size=0", r"trainer.eval_batch_size=0 must be an integer >= 1"),
    ("trainer.grad_clip=-1", r"trainer.grad_clip=-1 must be a number >= 0 or null; null \(or 0\) means no clipping"),
    ("trainer.recall_ks=[0,5]", r"trainer.recall_ks=\[0, 5\] must be a non-empty list of positive integers"),
    ("trainer.recall_ks=[]", r"trainer.recall_ks=\[\] must be a non-empty list"),
    ("backbone.train_image_size=[0,64]", r"backbone.train_image_size=\[0, 64\] must be a positive integer or \[height, width\]"),
])
def test_train_values_are_checked_naming_the_key(tmp_path, override, message):
    cfg = compose_config("train", tiny_train_overrides(tmp_path, tmp_path, override))
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


def test_a_bad_value_fails_before_the_model_or_the_data_are_built(tiny_synthetic, tmp_path, monkeypatch):
    from vprlab.engine import trainer

    def never(*args, **kwargs):
        raise AssertionError("built although the config is invalid")

    monkeypatch.setattr(trainer, "build_model", never)
    monkeypatch.setattr(trainer, "build_train_loader", never, raising=False)
    cfg = compose_config("train", tiny_train_overrides(tiny_synthetic.root.parent, tmp_path, "optimizer.lr=-1"))
    with pytest.raises(ConfigError, match=r"optimizer\.lr=-1"):
        trainer.train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", r"batch_size=0 must be an integer >= 1"),
    ("num_workers=-2", r"num_workers=-2 must be an integer >= 0"),
    ("recall_ks=[1,-5]", r"recall_ks=\[1, -5\] must be a non-empty list of positive integers"),
    ("db_chunk_size=0", r"db_chunk_size=0 must be an integer >= 1 or null"),
    ("cache_dtype=float64", r"cache_dtype='float64' must be float32 or float16"),
])
def test_evaluate_values_are_checked_naming_the_key(tmp_path, override, message):
    cfg = compose_config("evaluate", [f"paths.output_dir={tmp_path}", override])
    with pytest.raises(ConfigError, match=message):
        validate_evaluate_values(cfg)


def test_the_vprlab_command_prints_a_user_error_as_a_message(tmp_path, capsys):
    from vprlab.commands.cli import main

    with pytest.raises(SystemExit) as done:
        main(["resize-cache", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "out"), "--size", "32", "32"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vprlab resize-cache: missing file: ") and "is not a GSV-Cities tree" in err


# --------------------------------------------------------------------------- as the user runs them


def _run(args, tmp_path, **env):
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled", **env}
    if "VPRLAB_DEBUG" not in env:
        environment.pop("VPRLAB_DEBUG", None)
    return subprocess.run([sys.executable, *args, f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_train_py_with_a_negative_lr_prints_a_message_not_a_traceback(tmp_path):
    result = _run([str(REPO / "train.py"), "optimizer.lr=-1"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("train.py: configuration error: optimizer.lr=-1 must be a number > 0")
    assert "VPRLAB_DEBUG=1" in result.stderr


_MISSING_BENCHMARK = ["benchmark=[custom]", "backbone=resnet18", "backbone.pretrained=false", "num_workers=0"]


def test_evaluate_py_with_a_missing_benchmark_prints_a_message_not_a_traceback(tmp_path):
    root = f"benchmark.custom.root={tmp_path / 'nowhere'}"
    result = _run([str(REPO / "evaluate.py"), *_MISSING_BENCHMARK, root], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "evaluate.py: missing file:" in result.stderr and str(tmp_path / "nowhere") in result.stderr


@pytest.mark.slow  # one more evaluate.py start (~15 s)
def test_vprlab_debug_shows_the_full_traceback(tmp_path):
    root = f"benchmark.custom.root={tmp_path / 'nowhere'}"
    debug = _run([str(REPO / "evaluate.py"), *_MISSING_BENCHMARK, root], tmp_path, VPRLAB_DEBUG="1")
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "MissingFileError" in debug.stderr and str(tmp_path / "nowhere") in debug.stderr


def test_weights_of_another_shape_are_a_message_naming_the_tensors(tmp_path):
    import torch

    from vprlab.commands.evaluate import load_model_for_eval
    from vprlab.models.vpr_model import build_model

    tiny = ["backbone=resnet18", "backbone.pretrained=false", "aggregator.num_queries=8", "aggregator.num_layers=1",
            "aggregator.row_dim=4", f"paths.output_dir={tmp_path}"]
    other = compose_config("evaluate", [*tiny, "aggregator.proj_channels=16"])
    torch.save(build_model(other.backbone, other.aggregator).state_dict(), tmp_path / "w.pth")
    cfg = compose_config("evaluate", [*tiny, "aggregator.proj_channels=32", f"weights_path={tmp_path / 'w.pth'}"])
    with pytest.raises(ConfigError, match=r"w.pth' do not fit the configured model: \d+ tensors have other shapes, "
                                          r"e.g. aggregator\..*\[16.*\(model \[32.*set backbone=/aggregator="):
        load_model_for_eval(cfg)
