"""Reports from run folders: every run (train.py or evaluate.py) as one table
(:mod:`~vprlab.reports.collect`), sweep heatmaps, aggregator comparisons and seed statistics
(:mod:`~vprlab.reports.tables`), the paper's table next to ours (:mod:`~vprlab.reports.paper`);
`vprlab report <kind>` (:mod:`~vprlab.reports.cli`). Also every writer of `vprlab compare`'s models x
benchmarks table (:mod:`~vprlab.reports.comparison`), the one reader of the published numbers
(:mod:`~vprlab.reports.published`) and what the figures share (:mod:`~vprlab.reports.plots`)."""

from vprlab.reports.collect import collect_runs, find_runs, read_run

__all__ = ["collect_runs", "find_runs", "read_run"]
