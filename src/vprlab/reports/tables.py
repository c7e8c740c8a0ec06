"""Tables and plots from the run table of :func:`vprlab.reports.collect.collect_runs`.

- :func:`sweep_report`: BoQ layers x queries grid, an R@1 heatmap with descriptor size and throughput;
- :func:`compare_report`: one recipe, several aggregators (R@1/5/10, size, speed, memory) and R@1 vs
  descriptor dim;
- :func:`mean_std`: runs that differ only in seed, as mean +- std.
Every report writes ``<name>.md`` (and ``.csv``/``.png``/``.tex``) into one folder and returns their paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vprlab.evaluation.results import markdown_table
from vprlab.utils.io import atomic_write_text

RECALLS = ("R@1", "R@5", "R@10")
# Columns that describe the run, not the model: they differ between seeds of the same setting.
_PER_RUN = {"run_dir", "job", "seed", "wandb_name", "steps", "wall_time_s", "status"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on clusters and CI
    import matplotlib.pyplot as plt

    return plt


def pick_benchmark(runs: pd.DataFrame, benchmark: str | None = None) -> str:
    benchmarks = [b for b in runs["benchmark"].dropna().unique()]
    if not benchmarks:
        raise ValueError("the runs have no evaluated benchmark (did training reach its first evaluation?)")
    if benchmark is None:
        return str(benchmarks[0])
    if benchmark not in benchmarks:
        raise ValueError(f"benchmark {benchmark!r} is not in the runs; they were evaluated on {', '.join(map(str, benchmarks))}")
    return benchmark


def setting_columns(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    return [c for c in by if c in runs.columns]


def mean_std(
    runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = RECALLS, extra: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per setting (``by`` + benchmark): ``<metric>`` mean, ``<metric> std`` (0 for one seed, NaN
    never), ``seeds`` = the number of runs averaged, and the mean of the ``extra`` columns."""
    keys = setting_columns(runs, [*by, "benchmark"])
    present = [m for m in metrics if m in runs.columns]
    rest = [c for c in extra if c in runs.columns]
    data = runs.copy()
    for column in present + rest:
        data[column] = pd.to_numeric(data[column], errors="coerce")
    grouped = data.groupby(keys, dropna=False, sort=True)
    out = grouped[present + rest].mean()
    for m in present:
        out[f"{m} std"] = grouped[m].std(ddof=1).fillna(0.0) if len(present) else None
    out["seeds"] = grouped.size()
    return out.reset_index()


def format_mean_std(table: pd.DataFrame, metrics: Sequence[str] = RECALLS, digits: int = 1) -> pd.DataFrame:
    """``R@1`` cells as ``"85.3 ± 1.2"`` where more than one seed was averaged, ``"85.3"`` otherwise."""
    table = table.copy()
    for m in metrics:
        if m not in table.columns:
            continue
        std = table.get(f"{m} std")
        cells = []
        for i, value in enumerate(table[m]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif std is not None and table["seeds"].iloc[i] > 1:
                cells.append(f"{value:.{digits}f} ± {std.iloc[i]:.{digits}f}")
            else:
                cells.append(f"{value:.{digits}f}")
        table[m] = cells
        table = table.drop(columns=[f"{m} std"], errors="ignore")
    return table


def _rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in table.to_dict("records"):
        clean = {}
        for k, v in record.items():
            if isinstance(v, float) and v.is_integer() and k in ("descriptor_dim", "params", "aggregator_params", "trainable_params", "seeds",
                                                                 "aggregator.num_layers", "aggregator.num_queries"):
                v = int(v)
            clean[k] = v
        rows.append(clean)
    return rows


def _write(out_dir: Path, name: str, markdown: str, table: pd.DataFrame | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": atomic_write_text(out_dir / f"{name}.md", markdown)}
    if table is not None:
        paths["csv"] = atomic_write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    return paths


# --- BoQ sweep ---------------------------------------------------------------------------------

def sweep_report(
    runs: pd.DataFrame, out_dir: str | Path, *, rows: str = "aggregator.num_layers", cols: str = "aggregator.num_queries",
    metric: str = "R@1", benchmark: str | None = None, title: str = "BoQ sweep",
) -> dict[str, Path]:
    """Heatmap of ``metric`` over ``rows`` x ``cols`` (mean over seeds) plus a table with descriptor dim,
    parameters and throughput per cell."""
    for column in (rows, cols):
        if column not in runs.columns:
            raise ValueError(f"the runs have no column {column!r}; sweep columns found: "
                             f"{', '.join(c for c in runs.columns if c.startswith('aggregator.'))}")
    benchmark = pick_benchmark(runs, benchmark)
    data = runs[runs["benchmark"] == benchmark]
    extra = ("descriptor_dim", "params", "train_img_per_s", "eval_img_per_s", "peak_mem_mb")
    table = mean_std(data, [rows, cols], metrics=(metric, *[m for m in RECALLS if m != metric]), extra=extra)
    grid = table.pivot(index=rows, columns=cols, values=metric).sort_index().sort_index(axis=1)
    dims = table.pivot(index=rows, columns=cols, values="descriptor_dim").reindex_like(grid)
    speed = table.pivot(index=rows, columns=cols, values="train_img_per_s").reindex_like(grid)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * grid.shape[1], 1.2 + 1.1 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel(cols.rsplit(".", 1)[-1])
    ax.set_ylabel(rows.rsplit(".", 1)[-1])
    values = grid.to_numpy(dtype=float)
    middle = (pd.Series(values.ravel()).max() + pd.Series(values.ravel()).min()) / 2
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = values[i, j]
            if math.isnan(value):
                continue
            label = f"{value:.1f}\n{int(dims.iloc[i, j])}-d" if not math.isnan(dims.iloc[i, j]) else f"{value:.1f}"
            if not math.isnan(speed.iloc[i, j]):
                label += f"\n{speed.iloc[i, j]:.0f} img/s"
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color="black" if value > middle else "white")
    fig.colorbar(image, ax=ax, label=f"{metric} (%)")
    ax.set_title(f"{title}: {metric} on {benchmark}")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "heatmap.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)

    shown = format_mean_std(table, (metric, *[m for m in RECALLS if m != metric]))
    columns = [rows, cols, *[m for m in RECALLS if m in shown.columns], "descriptor_dim", "params",
               "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "seeds"]
    columns = [c for c in columns if c in shown.columns]
    markdown = (
        f"# {title}\n\n{metric} (%) on `{benchmark}` (mean ± std over seeds where there are several); "
        "throughput in images per second, peak memory in MiB.\n\n"
        f"![{metric} heatmap]({png.name})\n\n"
        + markdown_table(_rows(shown), columns, float_format=".1f")
    )
    return {**_write(out_dir, "report", markdown, table), "png": png}


# --- aggregator comparison ----------------------------------------------------------------------

def compare_report(
    runs: pd.DataFrame, out_dir: str | Path, *, by: Sequence[str] = ("aggregator",), title: str = "Aggregator comparison",
) -> dict[str, Path]:
    """R@1/5/10 per benchmark, descriptor dim, parameters, train/eval img/s and peak memory per setting,
    and R@1 against descriptor dim (log x)."""
    data = runs[runs["benchmark"].notna()]
    extra = ("descriptor_dim", "params", "aggregator_params", "train_img_per_s", "eval_img_per_s", "peak_mem_mb")
    table = mean_std(data, list(by), extra=extra)
    shown = format_mean_std(table)
    columns = [*setting_columns(shown, by), "benchmark", *[m for m in RECALLS if m in shown.columns], "descriptor_dim",
               "params", "aggregator_params", "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "seeds"]
    columns = [c for c in columns if c in shown.columns]

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for bench, part in table.groupby("benchmark"):
        part = part.sort_values("descriptor_dim")
        err = part["R@1 std"] if "R@1 std" in part else None
        ax.errorbar(part["descriptor_dim"], part["R@1"], yerr=err, fmt="o", capsize=3, label=str(bench))
        seen_at: dict[float, int] = {}
        for _, row in part.iterrows():
            name = " ".join(str(row[c]) for c in setting_columns(part, by))
            # Settings with the same descriptor size: labels stacked, not drawn over each other.
            nth = seen_at[row["descriptor_dim"]] = seen_at.get(row["descriptor_dim"], -1) + 1
            ax.annotate(name, (row["descriptor_dim"], row["R@1"]), textcoords="offset points", xytext=(6, 4 - 11 * nth), fontsize=8)
    ax.set_xscale("log")
    dims = sorted(table["descriptor_dim"].dropna().unique())
    ax.set_xticks(dims, [str(int(d)) for d in dims])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlim(min(dims) / 1.6, max(dims) * 1.6)
    ax.set_xlabel("descriptor dimension (log)")
    ax.set_ylabel("R@1 (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if table["benchmark"].nunique() > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "r1_vs_dim.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)

    markdown = (
        f"# {title}\n\nRecall@N (%) as mean ± std over seeds; parameters of the whole model; "
        "training and evaluation throughput in images per second; peak memory in MiB "
        "(GPU memory allocated by torch on CUDA, resident set size on the CPU).\n\n"
        f"![R@1 against descriptor dimension]({png.name})\n\n"
        + markdown_table(_rows(shown), columns, float_format=".1f")
    )
    return {**_write(out_dir, "report", markdown, table), "png": png}
