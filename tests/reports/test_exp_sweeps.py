"""Sweep configs compose; a 2-job sweep runs from the command line, shares one W&B group, and the
report command turns its folders into a table and a heatmap; a diverged trial does not end a sweep.
A sweep checks every job's config before the first job starts and prints its folder; reports list
failed jobs with their error."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF, REPO, compose_config, tiny_train_overrides
from omegaconf import OmegaConf

import vprlab  # noqa: F401  (registers the ${vprlab.job_name:} resolver the sweep configs use)


def _installed(module: str) -> bool:
    try:  # find_spec of "a.b" raises when the namespace package "a" itself is absent
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


HAS_OPTUNA = _installed("hydra_plugins.hydra_optuna_sweeper")
HAS_SUBMITIT = _installed("hydra_plugins.hydra_submitit_launcher")


def _sweeps() -> list[str]:
    return sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def _needs_optuna(option: str) -> bool:
    return "optuna" in (CONF / "sweep" / f"{option}.yaml").read_text().split("hydra:")[0]


@pytest.mark.parametrize("option", _sweeps())
def test_every_sweep_composes(option, tmp_path):
    if _needs_optuna(option) and not HAS_OPTUNA:
        pytest.skip("hydra-optuna-sweeper is not installed (pip install -e .[sweep])")
    experiment = "quickstart" if option != "aggregators" else "synthetic_compare"
    cfg = compose_config("train", [f"sweep={option}", f"experiment={experiment}", f"paths.output_dir={tmp_path}"], hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.hydra.sweeper.params
    assert cfg.logger.group.startswith(option)
    # Outside a Hydra run the job name degrades to None and everything else resolves.
    job = OmegaConf.to_container(compose_config("train", [f"sweep={option}", f"experiment={experiment}",
                                                           f"paths.output_dir={tmp_path}"]), resolve=True)
    assert job["logger"]["name"] is None


def test_boq_grid_is_layers_by_queries(tmp_path):
    cfg = compose_config("train", ["sweep=boq_grid", f"paths.output_dir={tmp_path}"], hydra=True)
    assert cfg.hydra.sweeper.params["aggregator.num_layers"] == "1,2,4"
    assert cfg.hydra.sweeper.params["aggregator.num_queries"] == "16,32,64"


@pytest.mark.skipif(not HAS_SUBMITIT, reason="hydra-submitit-launcher is not installed (pip install -e .[sweep])")
def test_slurm_launcher_composes(tmp_path):
    cfg = compose_config("train", ["sweep=boq_grid", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                   f"paths.output_dir={tmp_path}"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min > 0


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "VPRLAB_PROGRESS": "0", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _tiny_experiment(conf_dir: Path) -> str:
    """The tiny settings as an experiment file: experiment= is left out of job folder names, so they
    stay short (a folder name holding a dozen overrides passes the 255-byte limit of file systems)."""
    skip = ("experiment=", "paths.", "aggregator.num_queries", "trainer.max_epochs")
    values = [o for o in tiny_train_overrides(Path("unused"), Path("unused")) if not o.startswith(skip)]
    experiment = OmegaConf.merge(OmegaConf.load(CONF / "experiment" / "quickstart.yaml"), OmegaConf.from_dotlist(values))
    (conf_dir / "experiment").mkdir(parents=True)
    (conf_dir / "experiment" / "tiny_sweep.yaml").write_text("# @package _global_\n" + OmegaConf.to_yaml(experiment))
    return "tiny_sweep"


def test_two_job_sweep_end_to_end(tiny_synthetic, tmp_path):
    experiment = _tiny_experiment(tmp_path / "conf")
    sweep_dir = tmp_path / "sweep"
    result = _run([str(REPO / "train.py"), "sweep=boq_grid", f"experiment={experiment}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                   f"paths.data_dir={tiny_synthetic.root.parent}", "aggregator.num_layers=1", "aggregator.num_queries=4,8",
                   "trainer.max_epochs=1", "trainer.eval_before_training=false", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # The sweep says where it writes before the first job and again at the end, with the report command.
    lines = result.stdout.splitlines()
    assert lines[0] == f"sweep folder: {sweep_dir}" and lines.count(f"sweep folder: {sweep_dir}") == 2, result.stdout[:2000]
    assert "checked the configs of all 2 jobs" in result.stdout and f"vprlab report sweep {sweep_dir}" in result.stdout

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    names = [p.name for p in jobs]
    # One folder per job, named by its overrides (experiment/sweep/paths excluded).
    assert len(jobs) == 2 and all("aggregator.num_queries=" in n and "paths." not in n for n in names), names
    configs = [yaml.safe_load((job / "config.yaml").read_text()) for job in jobs]
    groups = {c["logger"]["group"] for c in configs}
    assert groups == {"boq_grid-sweep"}  # the sweep name + the sweep folder name
    assert [c["logger"]["name"] for c in configs] == names
    assert [c["aggregator"]["num_queries"] for c in configs] == [4, 8]

    # The W&B offline records carry the same group and the job names.
    from vprlab.tracking.wandb_offline import read_offline_run

    records = [read_offline_run(next((job / "wandb").glob("offline-run-*"))) for job in jobs]
    assert {r["run"]["group"] for r in records} == {configs[0]["logger"]["group"]}
    assert [r["run"]["name"] for r in records] == names

    # The report command turns the two folders into one table and a heatmap.
    from vprlab.reports.cli import main as report_main

    out = tmp_path / "report"
    assert report_main(["sweep", str(sweep_dir), "--out", str(out)]) == 0
    assert (out / "heatmap.png").stat().st_size > 1000
    markdown = (out / "report.md").read_text()
    assert "heatmap.png" in markdown and "| 1 | 4 |" in markdown and "| 1 | 8 |" in markdown
    from vprlab.reports import collect_runs

    runs = collect_runs(sweep_dir)
    assert len(runs) == 2 and set(runs["aggregator.num_queries"]) == {4, 8}
    assert (runs["wandb_group"] == runs["group"]).all()
    assert runs["descriptor_dim"].notna().all() and runs["train_img_per_s"].gt(0).all()
    assert runs["R@1"].between(0, 100).all() and (runs["status"] == "complete").all()


def _load_train_script():
    spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diverged_trial_returns_a_worst_value_instead_of_crashing(monkeypatch, caplog, tmp_path):
    script = _load_train_script()

    def diverge(cfg):
        raise FloatingPointError("3 steps in a row with non-finite loss")

    monkeypatch.setattr("vprlab.commands.train.train", diverge)  # what train.py's run_training calls
    cfg = compose_config("train", ["experiment=quickstart", f"paths.output_dir={tmp_path}"])
    value = script.main.__wrapped__(cfg)
    assert value == -math.inf
    assert "diverged" in caplog.text
    # The run folder says why: the report lists the trial as failed with this error.
    assert (tmp_path / "error.txt").read_text() == "FloatingPointError: 3 steps in a row with non-finite loss\n"


@pytest.mark.skipif(not HAS_OPTUNA, reason="hydra-optuna-sweeper is not installed (pip install -e .[sweep])")
def test_optuna_study_survives_a_diverged_trial():
    """What the Optuna sweeper does with train.py's value for a diverged trial: a completed, worst trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=1))
    for value in (-math.inf, 40.0, -math.inf, 55.0):
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        study.tell(trial, value)
    assert study.best_value == 55.0 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_job_name_outside_hydra_is_none():
    from vprlab.utils.resolvers import job_name

    assert job_name() is None
    assert OmegaConf.create({"n": "${vprlab.job_name:}"}).n is None


# --- every job's config is checked before the first job starts ---------------------------------------------


def test_a_bad_job_fails_the_sweep_before_any_job_runs(tiny_synthetic, tmp_path):
    """The issue's case: MixVPR's map size does not fit the recipe's images. Before, boq and gem trained
    first; now nothing starts, and one message names every bad job (two errors here) and its error."""
    sweep_dir = tmp_path / "sweep"
    result = _run([str(REPO / "train.py"), "sweep=aggregators", "experiment=synthetic_compare",
                   "aggregator=boq,mixvpr,gem", "optimizer.lr=1e-3,-1", f"paths.data_dir={tiny_synthetic.root.parent}",
                   f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == f"sweep folder: {sweep_dir}"
    message = result.stderr
    assert "4 of the sweep's 6 jobs cannot run; no job was started" in message, message
    # Jobs are numbered as the sweeper numbers them (aggregator outer, lr inner) and named by the swept values.
    assert "jobs #1 (aggregator=boq optimizer.lr=-1), #3 (aggregator=mixvpr optimizer.lr=-1), " \
           "#5 (aggregator=gem optimizer.lr=-1): optimizer.lr=-1 must be a number > 0" in message, message
    assert "job #2 (aggregator=mixvpr optimizer.lr=0.001): backbone.train_image_size=[96, 128] gives 6x8 feature maps" in message
    assert "MixVPR is built for 20x20" in message
    assert "#0 " not in message and "#4 " not in message  # the good jobs are not named
    # No job ran: no job folder, no training output.
    assert not sweep_dir.exists() or not any(p.is_dir() for p in sweep_dir.iterdir())


def _sweep_config(sweeper: str, params: dict, task: list[str]):
    return OmegaConf.create({"hydra": {"sweeper": {"_target_": sweeper, "params": params}, "overrides": {"task": task}}})


def test_jobs_are_enumerated_as_the_sweepers_run_them():
    from vprlab.commands.sweep import BASIC_SWEEPER, sweep_jobs

    # Basic sweeper: every job, params first, the command line overriding a param of the same key.
    jobs, complete = sweep_jobs(_sweep_config(BASIC_SWEEPER, {"aggregator": "boq,gem,avg", "seed": "1,2"},
                                              ["aggregator=boq,mixvpr", "trainer.max_epochs=1"]))
    assert complete and jobs == [[a, s, "trainer.max_epochs=1"] for a in ("aggregator=boq", "aggregator=mixvpr")
                                 for s in ("seed=1", "seed=2")]
    # Optuna: the trials are drawn while it runs; each value of each swept key is checked once (interval: both ends).
    jobs, complete = sweep_jobs(_sweep_config("hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                                              {"optimizer.lr": "tag(log, interval(1e-5, 1e-2))"},
                                              ["aggregator=choice(boq,gem,avg)", "seed=3"]))
    assert not complete
    assert jobs == [["optimizer.lr=1e-05", "aggregator=boq", "seed=3"], ["optimizer.lr=0.01", "aggregator=boq", "seed=3"],
                    ["optimizer.lr=1e-05", "aggregator=gem", "seed=3"], ["optimizer.lr=1e-05", "aggregator=avg", "seed=3"]]


# --- reports list failed jobs with their error ------------------------------------------------------------


def _sweep_with_failures(root: Path) -> Path:
    from test_report_grouping import _config, write_train_run

    for i, aggregator in enumerate(("boq", "gem")):
        write_train_run(root / f"aggregator={aggregator}", _config(aggregator, out=str(root / aggregator)), [40.0 + i, 50.0 + i])
    # A job whose run raised: Hydra's copy of its config, and the error train.py recorded.
    failed = root / "aggregator=mixvpr"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("aggregator:\n  _target_: vprlab.models.aggregators.MixVPR\n")
    (failed / "error.txt").write_text("RuntimeError: CUDA out of memory\n")
    # A job killed from outside (no record), and a run that diverged after its first evaluation.
    (root / "aggregator=netvlad" / ".hydra").mkdir(parents=True)
    (root / "aggregator=netvlad" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    diverged = write_train_run(root / "aggregator=gem,seed=2", _config("gem", seed=2, out=str(root / "gem2")), [30.0])
    (diverged / "error.txt").write_text("FloatingPointError: 3 steps in a row with non-finite loss\n")
    return root


def test_collect_lists_failed_jobs_with_their_error(tmp_path):
    from vprlab.reports import collect_runs
    from vprlab.reports.collect import NO_RECORD

    runs = collect_runs(_sweep_with_failures(tmp_path / "sweep"))
    failed = {f["job"]: f["error"] for f in runs.attrs["failed"]}
    assert failed == {"aggregator=gem,seed=2": "FloatingPointError: 3 steps in a row with non-finite loss",
                      "aggregator=mixvpr": "RuntimeError: CUDA out of memory", "aggregator=netvlad": NO_RECORD}
    status = dict(zip(runs["job"], runs["status"]))
    assert status == {"aggregator=gem,seed=2": "failed: FloatingPointError: 3 steps in a row with non-finite loss",
                      "aggregator=boq": "complete", "aggregator=gem": "complete"}


@pytest.mark.parametrize("kind", ["sweep", "methods", "seeds", "collect"])
def test_reports_list_failed_jobs(kind, tmp_path, capsys):
    from vprlab.reports.cli import main as report_main

    root = _sweep_with_failures(tmp_path / "sweep")
    extra = ["--rows", "aggregator", "--cols", "seed"] if kind == "sweep" else []
    assert report_main([kind, str(root), "--out", str(tmp_path / "r"), *extra]) == 0
    out = capsys.readouterr().out
    assert "3 rows from 3 runs" in out and "3 failed jobs" in out
    assert "  aggregator=mixvpr: failed: RuntimeError: CUDA out of memory" in out
    markdown = next((tmp_path / "r").glob("*.md")).read_text()
    assert "## Failed jobs" in markdown and "| aggregator=mixvpr | failed: RuntimeError: CUDA out of memory |" in markdown
    assert "| aggregator=netvlad | failed: no results and no error recorded" in markdown


def test_a_sweep_where_every_job_failed_says_so(tmp_path, capsys):
    from vprlab.reports.cli import main as report_main

    failed = tmp_path / "sweep" / "aggregator=mixvpr"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (failed / "error.txt").write_text("configuration error: MixVPR is built for 20x20\n")
    assert report_main(["sweep", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "no results under" in err and "its one job failed:\n  aggregator=mixvpr: failed: configuration error: MixVPR is built for 20x20" in err


def test_a_run_records_its_error_and_a_restart_clears_it(tmp_path):
    from vprlab.utils.errors import ConfigError
    from vprlab.utils.run_status import read_run_error, record_failure

    with pytest.raises(ConfigError), record_failure(lambda: tmp_path):
        raise ConfigError("aggregator.in_h=20 does not fit")
    assert read_run_error(tmp_path) == "configuration error: aggregator.in_h=20 does not fit"
    with record_failure(lambda: tmp_path):  # the same folder again (ckpt_path=auto): the old record goes
        pass
    assert read_run_error(tmp_path) is None
    with pytest.raises(SystemExit), record_failure(lambda: tmp_path):
        raise SystemExit(0)  # a clean exit is no failure
    assert read_run_error(tmp_path) is None


def test_the_check_can_be_left_to_the_jobs(tmp_path, capsys):
    """hydra.callbacks.vprlab_sweep.check=false (a login node without the data): the folder is printed,
    nothing is composed (this config could not be)."""
    from vprlab.commands.sweep import SweepCallback

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}, "job": {"config_name": "train"}}})
    SweepCallback(check=False).on_multirun_start(config, config_name="train")
    assert capsys.readouterr().out == f"sweep folder: {tmp_path / 'sweep'}\n"
    cfg = compose_config("train", ["sweep=boq_grid", "hydra.callbacks.vprlab_sweep.check=false"], hydra=True)
    assert cfg.hydra.callbacks.vprlab_sweep == {"_target_": "vprlab.commands.sweep.SweepCallback", "check": False}
    assert compose_config("train", [], hydra=True).hydra.callbacks.vprlab_sweep.check is True


def test_a_report_from_an_earlier_runs_csv_still_lists_the_failed_jobs(tmp_path, capsys):
    from vprlab.reports.cli import main as report_main

    root = _sweep_with_failures(tmp_path / "sweep")
    assert report_main(["collect", str(root), "--out", str(tmp_path / "first")]) == 0
    assert (tmp_path / "first" / "failed_jobs.csv").is_file()
    capsys.readouterr()
    assert report_main(["methods", str(tmp_path / "first" / "runs.csv"), "--out", str(tmp_path / "again")]) == 0
    assert "  aggregator=mixvpr: failed: RuntimeError: CUDA out of memory" in capsys.readouterr().out
    assert "| aggregator=netvlad | failed: no results and no error recorded" in (tmp_path / "again" / "report.md").read_text()
