"""Many runs -> tables and plots (collect run folders, sweep heatmaps, aggregator comparisons, paper tables)."""

from vprlab.experiments.collect import collect_runs, find_runs, read_run

__all__ = ["collect_runs", "find_runs", "read_run"]
