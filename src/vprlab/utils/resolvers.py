"""OmegaConf resolvers that vprlab configs use; registered when ``vprlab`` is imported."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from omegaconf import OmegaConf


def job_name() -> str | None:
    """The job's overrides as Hydra writes them in folder names (``aggregator.num_layers=2,seed=1``).

    Unlike ``${hydra:job.override_dirname}`` this also resolves outside a Hydra run (tests, notebooks,
    ``compose``), and gives None instead of an empty name for a run without overrides.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().job.override_dirname or None


def job_dirname(max_bytes: int = 200) -> str:
    """The job's override_dirname as a folder name that file systems accept (255 bytes at most):
    one longer than ``max_bytes`` keeps its start and ends with a hash of the whole, so it stays unique."""
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().job.override_dirname
    if len(name.encode()) <= int(max_bytes):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: int(max_bytes) - 12].decode(errors="ignore") + "..." + digest


def sweep_group(name: str) -> str:
    """``<name>-<sweep folder name>`` (``boq_grid-2026-05-01_12-00-00``): one value for every job of a sweep.

    Taken from the folder the jobs write into rather than from ``${now:}``, which each job resolves for
    itself (jobs that start in different seconds, or on different SLURM nodes, would disagree).
    Outside a Hydra multirun: ``name``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return name
    folder = Path(str(HydraConfig.get().sweep.dir)).name
    return folder if folder.startswith(name) else f"{name}-{folder}"


@functools.lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (what ``taskset``, SLURM's ``--cpus-per-task``
    and containers leave it), which is what PyTorch's DataLoader compares ``num_workers`` with;
    ``os.cpu_count()`` where there is no affinity (macOS, Windows). Computed once per process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpus(at_most: int | str | None = None) -> int:
    """``${vprlab.cpus:8}``: the CPUs available to the process, at most ``at_most`` (no cap without it).

    Loader worker defaults use it, so a 2-core machine gets 2 workers instead of a DataLoader warning
    about 8, and a large node still gets 8.
    """
    count = available_cpus()
    return count if at_most in (None, "") else min(count, int(at_most))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("vprlab.job_name"):
        OmegaConf.register_new_resolver("vprlab.job_name", job_name)
    if not OmegaConf.has_resolver("vprlab.job_dirname"):
        OmegaConf.register_new_resolver("vprlab.job_dirname", job_dirname)
    if not OmegaConf.has_resolver("vprlab.sweep_group"):
        OmegaConf.register_new_resolver("vprlab.sweep_group", sweep_group)
    if not OmegaConf.has_resolver("vprlab.cpus"):
        OmegaConf.register_new_resolver("vprlab.cpus", cpus)
