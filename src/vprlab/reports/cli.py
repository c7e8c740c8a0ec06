"""Reports from run folders: `vprlab report <kind> <runs folder> --out <folder>`.

  collect   every run under the folder as one table (runs.csv + runs.md)
  sweep     BoQ grid: R@1 heatmap over num_layers x num_queries, with descriptor dim and throughput
  compare   aggregators on one recipe: R@1/5/10, size, speed, memory; R@1 vs descriptor dim plot
  paper     the BoQ paper's table next to the measured numbers (Markdown + LaTeX)
  seeds     runs that differ only in seed as mean +- std (grouped by --by columns)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vprlab.evaluation.results import markdown_table
from vprlab.reports.collect import collect_runs
from vprlab.reports.paper import paper_report
from vprlab.reports.tables import (
    compare_report,
    format_mean_std,
    mean_std,
    sweep_report,
)
from vprlab.utils.io import atomic_write_text

SUMMARY_COLUMNS = ["job", "aggregator", "seed", "benchmark", "R@1", "R@5", "R@10", "descriptor_dim", "params",
                   "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "status"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vprlab report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["collect", "sweep", "compare", "paper", "seeds"])
    parser.add_argument("runs", type=Path, help="a folder holding run folders (a sweep folder, outputs/train, ...)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: <runs>/report)")
    parser.add_argument("--benchmark", default=None, help="sweep: the benchmark of the heatmap (default: the first)")
    parser.add_argument("--rows", default="aggregator.num_layers", help="sweep: heatmap rows")
    parser.add_argument("--cols", default="aggregator.num_queries", help="sweep: heatmap columns")
    parser.add_argument("--by", nargs="+", default=["aggregator"], help="compare/seeds: the columns that name a setting")
    parser.add_argument("--model", default="boq_resnet50", help="paper: boq_resnet50 or boq_dinov2")
    parser.add_argument("--no-wandb", action="store_true", help="do not read W&B offline runs")
    args = parser.parse_args(argv)

    runs = collect_runs(args.runs, use_wandb=not args.no_wandb)
    out = args.out or args.runs / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    if args.kind == "collect":
        columns = [c for c in SUMMARY_COLUMNS if c in runs.columns]
        paths = {"csv": out / "runs.csv",
                 "markdown": atomic_write_text(out / "runs.md", markdown_table(runs.to_dict("records"), columns, ".1f"))}
    elif args.kind == "sweep":
        paths = sweep_report(runs, out, rows=args.rows, cols=args.cols, benchmark=args.benchmark)
    elif args.kind == "compare":
        paths = compare_report(runs, out, by=args.by)
    elif args.kind == "paper":
        paths = paper_report(runs, out, model=args.model)
    else:
        table = format_mean_std(mean_std(runs, args.by))
        paths = {"markdown": atomic_write_text(out / "seeds.md", markdown_table(table.to_dict("records"), float_format=".1f"))}
    print(f"{len(runs)} rows from {runs['run_dir'].nunique()} runs under {args.runs}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
