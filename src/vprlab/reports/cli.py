"""Reports from run folders: `vprlab report <kind> <runs folder> --out <folder>`.

  collect   every run under the folder as one table (runs.csv + runs.md)
  sweep     BoQ grid: R@1 heatmap over num_layers x num_queries, with descriptor dim and throughput
  methods   methods (aggregators, or the --by settings) under one recipe side by side: R@1/5/10, size,
            speed, memory; R@1 vs descriptor dim plot (`compare`: its old name, still accepted)
  paper     a published model's numbers (BoQ paper table, or any model's rows) next to the measured ones (Markdown, CSV, LaTeX)
  seeds     mean +- std over seeds, one row per setting (named by the --by columns)

Runs are averaged only when their resolved configs differ in nothing but the seed and run-specific keys
(paths, names, loader workers, logging); config keys that still differ between rows with the same --by
values are shown as columns. Training runs report one epoch each, the same rule for all (--epoch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from vprlab.evaluation.results import (
    mark_subsets,
    markdown_table,
    recall_columns,
    subset_footnote,
)
from vprlab.reports.collect import EPOCH_RULES, FAILED_CSV, collect_runs, failed_jobs_text
from vprlab.reports.paper import paper_report
from vprlab.reports.tables import (
    methods_report,
    seeds_report,
    sweep_report,
)
from vprlab.utils.errors import ConfigError
from vprlab.utils.io import atomic_write_text

KINDS = ["collect", "sweep", "methods", "paper", "seeds"]
# Old kind names, still accepted with a one-line notice on stderr (users' scripts): `report compare` was
# renamed because `vprlab compare` is another tool (models x benchmarks, evaluated).
RENAMED_KINDS = {"compare": "methods"}

SUMMARY_COLUMNS = ["job", "model", "aggregator", "seed", "setting", "benchmark", "epoch", "R@1", "R@5", "R@10", "descriptor_dim",
                   "params", "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "status"]


def select_runs(runs, where: list[str]):
    """Rows whose column KEY has the text VALUE, for each ``KEY=VALUE`` of ``--where``; a condition that
    selects nothing is a ConfigError (a user error: `vprlab report` exits 2)."""
    for condition in where:
        key, sep, value = condition.partition("=")
        if not sep:
            raise ConfigError(f"--where {condition!r}: write KEY=VALUE, e.g. --where aggregator.num_layers=2")
        if key not in runs.columns:
            raise ConfigError(f"--where {key}=...: the runs have no column {key!r}; "
                             f"config keys that differ between them: {', '.join(runs.attrs.get('config_keys', [])) or 'none'}")
        mask = runs[key].map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) == value
        if not mask.any():
            raise ConfigError(f"--where {key}={value}: no run has it; values: "
                             f"{', '.join(sorted(runs[key].astype(str).unique()))}")
        attrs = dict(runs.attrs)
        runs = runs[mask]
        runs.attrs.update(attrs)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vprlab report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=[*KINDS, *RENAMED_KINDS], metavar="{" + ",".join(KINDS) + "}")
    parser.add_argument("runs", type=Path, help="a folder holding run folders (a sweep folder, outputs/train, outputs/evaluate, ...), "
                        "or the runs.csv of an earlier report")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: <runs>/report)")
    parser.add_argument("--benchmark", default=None, help="sweep: the benchmark of the heatmap (default: the first)")
    parser.add_argument("--rows", default="aggregator.num_layers", help="sweep: heatmap rows")
    parser.add_argument("--cols", default="aggregator.num_queries", help="sweep: heatmap columns")
    parser.add_argument("--by", nargs="+", default=["aggregator"], help="methods/seeds: the columns that name a setting")
    parser.add_argument("--model", default=None,
                        help="paper: whose published numbers to compare with: boq_resnet50 or boq_dinov2 (the BoQ paper's "
                             "table) or any published model name (vprlab models list; its rows of published_results.csv) "
                             "(default: the released model the runs evaluated, e.g. by a reproduce_boq_* recipe, else "
                             "boq_resnet50); it picks the published rows, not the runs (--where does)")
    parser.add_argument("--epoch", choices=sorted(EPOCH_RULES), default="last",
                        help="which evaluation of each training run is reported: last (default) or best (by trainer.monitor)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep the runs whose KEY (a column, e.g. a config key) is VALUE; repeatable")
    parser.add_argument("--no-wandb", action="store_true", help="do not read W&B offline runs")
    args = parser.parse_args(argv)
    if args.kind in RENAMED_KINDS:
        print(f"vprlab report {args.kind} is deprecated: it is now `vprlab report {RENAMED_KINDS[args.kind]}` "
              "(same options and output)", file=sys.stderr)
        args.kind = RENAMED_KINDS[args.kind]

    try:
        runs = select_runs(collect_runs(args.runs, use_wandb=not args.no_wandb, epoch=args.epoch), args.where)
    except (FileNotFoundError, ValueError) as error:
        print(f"vprlab report: {error}", file=sys.stderr)
        return 2
    out = args.out or (args.runs.parent if args.runs.is_file() else args.runs) / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    failed = runs.attrs.get("failed") or []
    if failed or (out / FAILED_CSV).is_file():  # beside runs.csv, so a report from that runs.csv lists them too
        atomic_write_text(out / FAILED_CSV, pd.DataFrame(failed, columns=["job", "run_dir", "error"]).to_csv(index=False))
    try:
        paths = _report(args, runs, out)
    except ValueError as error:  # a table that would mix configurations, a missing column...
        print(f"vprlab report {args.kind}: {error}", file=sys.stderr)
        return 2
    # Failed jobs are listed under every Markdown report and on the terminal, never dropped.
    for kind, path in paths.items():
        if failed and Path(path).suffix == ".md":
            atomic_write_text(path, Path(path).read_text().rstrip("\n") + "\n\n" + failed_jobs_text(failed))
    print(f"{len(runs)} rows from {runs['run_dir'].nunique()} runs under {args.runs}"
          + (f"; {len(failed)} failed job{'s' if len(failed) > 1 else ''}" if failed else ""))
    if failed:
        print(failed_jobs_text(failed, markdown=False))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _report(args, runs, out: Path) -> dict[str, Path]:
    if args.kind == "collect":
        columns = [c for c in SUMMARY_COLUMNS if c in runs.columns]
        columns += [c for c in runs.attrs.get("config_keys", []) if c not in columns]
        records, notes = mark_subsets(runs.to_dict("records"), recall_columns(runs.to_dict("records")), ".1f")
        paths = {"csv": out / "runs.csv",
                 "markdown": atomic_write_text(out / "runs.md", markdown_table(records, columns, ".1f") + subset_footnote(notes))}
    elif args.kind == "sweep":
        paths = sweep_report(runs, out, rows=args.rows, cols=args.cols, benchmark=args.benchmark)
    elif args.kind == "methods":
        paths = methods_report(runs, out, by=args.by)
    elif args.kind == "paper":
        paths = paper_report(runs, out, model=args.model)
    else:
        paths = seeds_report(runs, out, by=args.by)
    return paths


if __name__ == "__main__":
    sys.exit(main())
