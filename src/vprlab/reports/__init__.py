"""Reports from run folders: every run (train.py or evaluate.py) as one table
(:mod:`~vprlab.reports.collect`), sweep heatmaps, aggregator comparisons and seed statistics
(:mod:`~vprlab.reports.tables`), the paper's table next to ours (:mod:`~vprlab.reports.paper`);
`vprlab report <kind>` (:mod:`~vprlab.reports.cli`)."""

from vprlab.reports.collect import collect_runs, find_runs, read_run

__all__ = ["collect_runs", "find_runs", "read_run"]
