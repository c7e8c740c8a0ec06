"""Sweeps (Hydra multirun) check every job's config before the first job starts, and say where they write.

:class:`SweepCallback` is a Hydra callback (``conf/hydra/default.yaml``, so train.py and evaluate.py
sweeps both get it). At the start of a multirun it

- prints the sweep folder (and again at the end, with the report command);
- enumerates the sweep's jobs from the sweeper's ``params`` and the command line's overrides, the way
  the sweeper will: with Hydra's basic sweeper, every job (the product of the comma lists); with
  another sweeper (Optuna), whose jobs are drawn while it runs, every value of every swept key once
  (each choice, each value of a range, both ends of an interval), the other keys at their first value;
- composes each job's config as the launcher will (``load_sweep_config``) and runs the checks the job
  would run before building anything (train.py: :func:`vprlab.engine.trainer.prepare_train_config`;
  evaluate.py: :func:`check_evaluate_config`);
- fails before any job runs, with one message listing every bad job (its overrides) and its error.

The checks read configs and class signatures only (seconds for a grid), so a MixVPR job whose image
size does not fit its map size fails the sweep at once, not after the jobs before it have trained.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from vprlab.config.checks import validate_evaluate_values
from vprlab.config.composition import check_component_keys
from vprlab.engine.trainer import prepare_train_config
from vprlab.utils.errors import ConfigError, UserError, exit_on_user_error


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_evaluate_config(cfg: DictConfig) -> None:
    """What evaluate.py checks before it loads anything: its numbers, and the backbone/aggregator keys
    when those groups describe the model (no checkpoint, no published model)."""
    validate_evaluate_values(cfg)
    if not cfg.get("ckpt_path") and not (cfg.get("pretrained") or {}).get("name"):
        check_component_keys(cfg)


# What each entry point checks before it builds anything (its config name -> the check).
JOB_CHECKS: dict[str, Callable[[DictConfig], Any]] = {
    "train": prepare_train_config,
    "evaluate": check_evaluate_config,
}
# Errors that mean "this job's config cannot run" (the rest are bugs and keep their traceback).
_CONFIG_ERRORS = (UserError, HydraException, OmegaConfBaseException, ValueError)


def _values(override: Override) -> list[str]:
    """``key=value`` for each value a swept key can take (an interval: its two ends)."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if override.is_discrete_sweep():
        return [f"{key}={value}" for value in override.sweep_string_iterator()]
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start!r}", f"{key}={value.end!r}"]
    raise ConfigError(f"{override.input_line}: a sweep of this kind cannot be checked before it runs")


def sweep_jobs(config: DictConfig, every_job: bool = True) -> tuple[list[list[str]], bool]:
    """(the overrides of each job to check, whether they are every job the sweep runs). With the basic
    sweeper and ``every_job``: every job; else every value of every swept key once."""
    sweeper = config.hydra.sweeper
    node = sweeper.get("params")  # null without a sweep config (`train.py -m seed=1,2`)
    params = (OmegaConf.to_container(node, resolve=False) if node is not None else None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    if every_job and str(sweeper.get("_target_")) == BASIC_SWEEPER:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]], True
    per_key: dict[str, list[str]] = {}  # the last override of a key wins, as in the sweepers
    for override in overrides:
        per_key[override.get_key_element()] = _values(override)
    lists = list(per_key.values())
    first = [values[0] for values in lists]
    jobs = [first]
    for i, values in enumerate(lists):
        for value in values[1:]:
            jobs.append([*first[:i], value, *first[i + 1:]])
    return jobs, False


def _job_config(master: DictConfig, overrides: Sequence[str], num: int) -> DictConfig:
    """The job's config as the launcher composes it (with its number and folder set)."""
    loader = GlobalHydra.instance().config_loader()
    job = loader.load_sweep_config(master, list(overrides))
    with open_dict(job):
        job.hydra.job.id = num
        job.hydra.job.num = num
    return job


def check_job_config(job: DictConfig, check: Callable[[DictConfig], Any]) -> None:
    """Run ``check`` on the composed ``job`` config (with its ``hydra`` node) as inside the running job:
    HydraConfig set to it, its folder resolved, the ``hydra`` node removed from what ``check`` sees."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job)  # ${hydra:...} and the job's overrides, as inside the job
    try:
        folder = Path(str(job.hydra.sweep.dir)) / str(OmegaConf.select(job, "hydra.sweep.subdir"))
        with read_write(job.hydra.runtime), open_dict(job.hydra.runtime):
            job.hydra.runtime.output_dir = str(folder.absolute())
        HydraConfig.instance().set_config(job)
        task = copy.deepcopy(job)
        with read_write(task), open_dict(task):
            del task["hydra"]
        check(task)
    finally:
        HydraConfig.instance().cfg = previous


def check_sweep(config: DictConfig, config_name: str | None, every_job: bool = True) -> tuple[int, bool]:
    """Check the config of every job of the sweep ``config`` (not ``every_job``: every swept value once);
    raise one :class:`ConfigError` listing every job that cannot run. Returns (jobs checked, whether they
    are all the sweep's jobs)."""
    jobs, complete = sweep_jobs(config, every_job)
    check = JOB_CHECKS.get(str(config_name or config.hydra.job.config_name))
    if check is None:
        return 0, complete
    swept = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1] if jobs else []
    failures: dict[str, list[str]] = {}  # message -> the jobs that fail with it
    for num, overrides in enumerate(jobs):
        try:
            check_job_config(_job_config(config, overrides, num), check)
        except _CONFIG_ERRORS as error:
            named = " ".join(overrides[i] for i in swept) or " ".join(overrides) or "no overrides"
            failures.setdefault(" ".join(str(error).split()), []).append(f"#{num} ({named})" if complete else named)
    if failures:
        which = "jobs" if complete else "checked points of the search space"
        count = sum(len(names) for names in failures.values())
        lines = [f"  - job{'s' if len(names) > 1 else ''} {', '.join(names)}: {message}" for message, names in failures.items()]
        raise ConfigError(
            f"{count} of the sweep's {len(jobs)} {which} cannot run; no job was started:\n" + "\n".join(lines)
            + "\n(fix these settings, or drop those values from the sweep, and start it again)"
        )
    return len(jobs), complete


class SweepCallback(Callback):
    """Hydra callback: the sweep folder at the start and the end; every job's config checked first."""

    def __init__(self, check: bool = True) -> None:
        self.check = check

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        print(f"sweep folder: {sweep_dir}", flush=True)
        if not self.check:
            return
        config_name = kwargs.get("config_name") or config.hydra.job.config_name
        tic = time.perf_counter()
        with exit_on_user_error(f"{config_name}.py"):
            count, complete = check_sweep(config, config_name)
        if count:
            what = f"all {count} jobs" if complete else f"{count} points of the search space (each swept value once)"
            print(f"checked the configs of {what} in {time.perf_counter() - tic:.1f} s", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        sys.stdout.flush()
        print(f"sweep folder: {sweep_dir}\nreport:       vprlab report sweep {sweep_dir}  (or methods / seeds)", flush=True)


__all__ = ["SweepCallback", "check_sweep", "sweep_jobs"]
