"""Tables and plots from the run table of :func:`vprlab.reports.collect.collect_runs`.

- :func:`settings_table`: one row per setting (runs that differ in nothing but the seed) and benchmark,
  recalls as mean +- std over its seeds (n = how many);
- :func:`sweep_report`: a grid over two config keys (BoQ layers x queries), an R@1 heatmap on a fixed
  0-100 scale with descriptor size and throughput;
- :func:`methods_report`: R@1/5/10, size, speed, memory per setting, and R@1 vs descriptor dim.

Grouping never mixes configurations: rows are averaged only when their ``setting`` (the hash of the
full resolved config without seed and run-specific keys) is the same. The ``by`` columns only name the
rows; config keys that still differ between rows with the same ``by`` values are shown as columns.
Every report writes ``<name>.md`` (and ``.csv``/``.png``) into one folder and returns their paths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vprlab.evaluation.results import (
    SUBSET_MARK,
    markdown_table,
    subset_footnote,
    subset_note,
)
from vprlab.reports.collect import EPOCH_RULES, IDENTITY_COLUMNS
from vprlab.reports.plots import pyplot, save_figure
from vprlab.utils.io import atomic_write_text

RECALLS = ("R@1", "R@5", "R@10")
# Columns that describe the run, not the model: they differ between seeds of the same setting.
_PER_RUN = {"run_dir", "job", "seed", "wandb_name", "steps", "wall_time_s", "status"}
# Per-setting values that must be the same for every seed (a difference means the runs are not one setting).
_CONSTANT = ("descriptor_dim", "params", "aggregator_params", "trainable_params")


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


def config_keys(runs: pd.DataFrame) -> list[str]:
    """The config columns that tell settings apart: ``runs.attrs["config_keys"]`` of collect_runs, or
    for a hand-made table the dotted and identity columns."""
    keys = runs.attrs.get("config_keys")
    if keys is None:
        keys = [c for c in runs.columns if ("." in c and not c.startswith("R@")) or c in IDENTITY_COLUMNS]
    return [k for k in keys if k in runs.columns and k != "seed"]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _settings(runs: pd.DataFrame) -> pd.Series:
    """The setting of each row: collect_runs' ``setting``, else every config column (never the seed)."""
    if "setting" in runs.columns:
        return runs["setting"].astype(str)
    keys = config_keys(runs)
    return runs[keys].apply(lambda r: json.dumps([_text(v) for v in r]), axis=1) if keys else pd.Series("", index=runs.index)


def varying_inside(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """Config keys (not in ``by``) with more than one value among rows that share their ``by`` values."""
    by = setting_columns(runs, by)
    keys = [k for k in config_keys(runs) if k not in by]
    if not keys:
        return []
    groups = runs.groupby([runs[c].map(_text) for c in by], sort=False) if by else [(None, runs)]
    return [k for k in keys if any(part[k].map(_text).nunique() > 1 for _, part in groups)]


def settings_table(
    runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = RECALLS, extra: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per setting and benchmark: the ``by`` columns, the config keys that vary inside a ``by``
    group (so two settings never look alike), ``<metric>`` mean, ``<metric> std`` (0 for one seed),
    ``n`` (runs averaged), ``seeds`` (their seeds) and the ``extra`` columns (throughput and memory
    averaged; descriptor size and parameter counts must be the same in every run of a setting)."""
    by = setting_columns(runs, by)
    shown = [*by, *varying_inside(runs, by)]
    present = [m for m in metrics if m in runs.columns]
    rest = [c for c in extra if c in runs.columns]
    data = runs.copy()
    data["_setting"] = _settings(runs)
    for column in present + rest:
        data[column] = pd.to_numeric(data[column], errors="coerce")
    out = []
    for (_, bench), part in data.groupby(["_setting", data["benchmark"].map(_text)], sort=False):
        row: dict[str, Any] = {c: part[c].iloc[0] for c in shown}
        row["benchmark"] = part["benchmark"].iloc[0]
        for m in present:
            values = part[m].dropna()
            row[m] = values.mean() if len(values) else float("nan")
            row[f"{m} std"] = values.std(ddof=1) if len(values) > 1 else 0.0
        for column in rest:
            values = part[column].dropna()
            if column in _CONSTANT and values.nunique() > 1:
                raise ValueError(
                    f"{column} differs between runs of one setting ({sorted(values.unique())} in "
                    f"{', '.join(map(str, part.get('job', part.index)))}); these runs are not the same configuration"
                )
            row[column] = values.mean() if len(values) else float("nan")
        row["n"] = len(part)
        row["seeds"] = ",".join(_text(s) for s in part["seed"]) if "seed" in part.columns else "-"
        notes = [n for n in dict.fromkeys(subset_note(r) for r in part.to_dict("records")) if n]
        row["subset"] = "\n".join(notes) or None  # other image counts than published: marked in every table
        if "setting" in part.columns:
            row["setting"] = part["setting"].iloc[0]
        out.append(row)
    table = pd.DataFrame(out)
    if len(table):
        table = table.sort_values([c for c in [*shown, "benchmark"] if c in table.columns],
                                  key=_order, kind="stable").reset_index(drop=True)
    table.attrs["shown"] = shown
    return table


def _order(column: pd.Series) -> pd.Series:
    """Sort key: numbers by value (8 before 16), then text."""
    return column.map(lambda v: (0, float(v), "") if _is_number(v) and _text(v) != "-" else (1, 0.0, _text(v)))


def mean_std(
    runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = RECALLS, extra: Sequence[str] = (),
) -> pd.DataFrame:
    """:func:`settings_table` (kept for callers of the old name)."""
    return settings_table(runs, by, metrics=metrics, extra=extra)


def format_mean_std(table: pd.DataFrame, metrics: Sequence[str] = RECALLS, digits: int = 1) -> pd.DataFrame:
    """``R@1`` cells as ``"85.3 ± 1.2"`` where more than one seed was averaged, ``"85.3"`` otherwise;
    followed by :data:`SUBSET_MARK` where the row's ``subset`` says it is not the published benchmark."""
    attrs = dict(table.attrs)
    table = table.copy()
    count = table["n"] if "n" in table.columns else table.get("seeds")
    subset = table["subset"].map(lambda v: SUBSET_MARK if isinstance(v, str) and v else "") if "subset" in table.columns else None
    for m in metrics:
        if m not in table.columns:
            continue
        std = table.get(f"{m} std")
        cells = []
        for i, value in enumerate(table[m]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif std is not None and count is not None and count.iloc[i] > 1:
                cells.append(f"{value:.{digits}f} ± {std.iloc[i]:.{digits}f}")
            else:
                cells.append(f"{value:.{digits}f}")
            if subset is not None and cells[-1] != "-":
                cells[-1] += subset.iloc[i]
        table[m] = cells
        table = table.drop(columns=[f"{m} std"], errors="ignore")
    table.attrs.update(attrs)
    return table


def _epoch_rule(runs: pd.DataFrame) -> str | None:
    """The ``--epoch`` rule the rows were collected with (the first one given), or None."""
    return runs["epoch_rule"].dropna().iloc[0] if "epoch_rule" in runs.columns and runs["epoch_rule"].notna().any() else None


def epoch_statement(runs: pd.DataFrame) -> str:
    """One sentence: which epoch of each training run the numbers are from."""
    rules = [r for r in runs.get("epoch_rule", pd.Series(dtype=object)).dropna().unique()]
    parts = []
    for rule in rules:
        if rule in EPOCH_RULES:
            parts.append(f"training runs report {EPOCH_RULES[rule]} (`--epoch {rule}`)")
        else:
            parts.append("evaluate.py rows report the evaluated checkpoint")
    return ("Reported epoch: " + "; ".join(parts) + ".") if parts else ""


def subset_notes_of(table: pd.DataFrame) -> str:
    """The Markdown under a table whose ``subset`` column names benchmarks with other image counts."""
    if "subset" not in table.columns:
        return ""
    return subset_footnote([n for v in table["subset"] if isinstance(v, str) and v for n in v.split("\n")])


def _rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in table.to_dict("records"):
        clean = {}
        for k, v in record.items():
            if "." in k and not k.startswith("R@"):  # a config value: as written, never rounded to 1 decimal
                v = _text(v)
            elif isinstance(v, float) and v.is_integer() and k in ("descriptor_dim", "params", "aggregator_params", "trainable_params", "n"):
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


_MEASURES = ("descriptor_dim", "params", "aggregator_params", "train_img_per_s", "eval_img_per_s", "peak_mem_mb")


def memory_statement(runs: pd.DataFrame) -> str:
    if "peak_mem_mb" not in runs.columns:
        return ""
    kinds = set(runs.get("peak_mem_kind", pd.Series(dtype=object)).dropna())
    words = {"cuda_allocated": "GPU memory allocated by torch during the job (peak statistics reset per job)",
             "cpu_rss_sampled": "the process's resident set size sampled during the job (it includes what earlier "
                                "jobs of the same process still hold)"}
    said = [words[k] for k in sorted(kinds) if k in words]
    return ("Peak memory (MiB): " + "; ".join(said) + ".") if said else "Peak memory in MiB."


# --- sweep grid ---------------------------------------------------------------------------------

def sweep_report(
    runs: pd.DataFrame, out_dir: str | Path, *, rows: str = "aggregator.num_layers", cols: str = "aggregator.num_queries",
    metric: str = "R@1", benchmark: str | None = None, title: str = "BoQ sweep",
) -> dict[str, Path]:
    """Heatmap of ``metric`` over ``rows`` x ``cols`` (mean over the seeds of one setting per cell, fixed
    0-100 colour scale) plus a table with descriptor dim, parameters and throughput per cell. Runs
    without a value for ``rows``/``cols`` are left out (and named); a cell that would hold two settings
    (another config key differs) is an error that lists the key, since its average would mix them."""
    for column in (rows, cols):
        if column not in runs.columns:
            raise ValueError(f"the runs have no column {column!r}; sweep columns found: "
                             f"{', '.join(c for c in runs.columns if c.startswith('aggregator.'))}")
    benchmark = pick_benchmark(runs, benchmark)
    data = runs[runs["benchmark"] == benchmark]
    absent = data[rows].map(_text).eq("-") | data[cols].map(_text).eq("-")
    left_out = sorted(data.loc[absent, "job"].astype(str).unique()) if "job" in data.columns else []
    data = data[~absent]
    if data.empty:
        raise ValueError(f"no run on {benchmark!r} has both {rows} and {cols}")
    metrics = (metric, *[m for m in RECALLS if m != metric])
    table = settings_table(data, [rows, cols], metrics=metrics, extra=_MEASURES)
    other = [k for k in table.attrs["shown"] if k not in (rows, cols)]
    if other:
        values = {k: sorted(table[k].map(_text).unique()) for k in other}
        raise ValueError(
            f"cells of the {rows} x {cols} grid would average different configurations: inside a cell "
            + "; ".join(f"{k} takes {', '.join(v)}" for k, v in values.items())
            + ". Keep one value with --where KEY=VALUE (e.g. --where " + f"{other[0]}={values[other[0]][0]}), "
            "or report them with --rows/--cols"
        )
    grid = table.pivot(index=rows, columns=cols, values=metric).sort_index(key=_order).sort_index(axis=1, key=_order)
    std = table.pivot(index=rows, columns=cols, values=f"{metric} std").reindex_like(grid)
    count = table.pivot(index=rows, columns=cols, values="n").reindex_like(grid)
    subset = table.pivot(index=rows, columns=cols, values="subset").reindex_like(grid) if "subset" in table else None
    dims = table.pivot(index=rows, columns=cols, values="descriptor_dim").reindex_like(grid) if "descriptor_dim" in table else None
    speed = table.pivot(index=rows, columns=cols, values="train_img_per_s").reindex_like(grid) if "train_img_per_s" in table else None
    epoch_text = epoch_statement(data)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * grid.shape[1], 1.6 + 1.1 * grid.shape[0]))
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0.0, vmax=100.0)
    ax.set_xticks(range(grid.shape[1]), [_text(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [_text(r) for r in grid.index])
    ax.set_xlabel(cols)
    ax.set_ylabel(rows)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = values[i, j]
            if math.isnan(value):
                ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="grey")
                continue
            n = int(count.iloc[i, j])
            label = f"{value:.1f} ± {std.iloc[i, j]:.1f}" if n > 1 else f"{value:.1f}"
            if subset is not None and isinstance(subset.iloc[i, j], str) and subset.iloc[i, j]:
                label += SUBSET_MARK
            label += f"\nn={n}"
            if dims is not None and not math.isnan(dims.iloc[i, j]):
                label += f", {int(dims.iloc[i, j])}-d"
            if speed is not None and not math.isnan(speed.iloc[i, j]):
                label += f"\n{speed.iloc[i, j]:.0f} img/s"
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color="black" if value > 55 else "white")
    fig.colorbar(image, ax=ax, label=f"{metric} (%), fixed 0-100 scale")
    rule = _epoch_rule(data)
    ax.set_title(f"{title}: {metric} on {benchmark}\n" + (f"epoch: {rule}; " if rule else "") + "mean ± std over n seeds",
                 fontsize=9)
    fig.tight_layout()
    out_dir = Path(out_dir)
    png = save_figure(fig, out_dir / "heatmap.png")

    shown = format_mean_std(table, metrics)
    columns = [rows, cols, *[m for m in RECALLS if m in shown.columns], "n", "seeds", "descriptor_dim", "params",
               "train_img_per_s", "eval_img_per_s", "peak_mem_mb"]
    columns = [c for c in columns if c in shown.columns]
    notes = [f"{metric} (%) on `{benchmark}`: mean ± std over the n seeds of one setting (runs that differ in "
             "nothing but the seed); heatmap colours on a fixed 0-100 scale.", epoch_text,
             "Throughput in images per second. " + memory_statement(data)]
    if left_out:
        notes.append(f"Left out (no {rows} or {cols}): {', '.join(left_out)}.")
    markdown = (
        f"# {title}\n\n" + "\n\n".join(n for n in notes if n) + "\n\n"
        f"![{metric} heatmap]({png.name})\n\n"
        + markdown_table(_rows(shown), columns, float_format=".1f") + subset_notes_of(table)
    )
    return {**_write(out_dir, "report", markdown, table), "png": png}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# --- comparison of settings ---------------------------------------------------------------------

def methods_report(
    runs: pd.DataFrame, out_dir: str | Path, *, by: Sequence[str] = ("aggregator",), title: str = "Aggregator comparison",
) -> dict[str, Path]:
    """R@1/5/10 per benchmark, descriptor dim, parameters, train/eval img/s and peak memory per setting,
    and R@1 against descriptor dim (log x). Rows are settings; ``by`` names them, and config keys that
    differ between settings with the same ``by`` values are columns too."""
    data = runs[runs["benchmark"].notna()]
    table = settings_table(data, list(by), extra=_MEASURES)
    shown = format_mean_std(table)
    label_columns = table.attrs["shown"]
    columns = [*label_columns, "benchmark", *[m for m in RECALLS if m in shown.columns], "n", "seeds", "descriptor_dim",
               "params", "aggregator_params", "train_img_per_s", "eval_img_per_s", "peak_mem_mb"]
    columns = [c for c in columns if c in shown.columns]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    has_dims = "descriptor_dim" in table.columns and table["descriptor_dim"].notna().any()
    for bench, part in table.groupby("benchmark"):
        part = part[part["descriptor_dim"].notna()].sort_values("descriptor_dim") if has_dims else part
        if part.empty:
            continue
        err = part["R@1 std"] if "R@1 std" in part else None
        marked = "subset" in part and part["subset"].map(lambda v: isinstance(v, str) and bool(v)).any()
        ax.errorbar(part["descriptor_dim"], part["R@1"], yerr=err, fmt="o", capsize=3,
                    label=f"{bench}{SUBSET_MARK} (not the published image counts)" if marked else str(bench))
        seen_at: dict[float, int] = {}
        for _, row in part.iterrows():
            name = " ".join(_text(row[c]) if c in by else f"{c.rsplit('.', 1)[-1]}={_text(row[c])}" for c in label_columns)
            # Settings with the same descriptor size: labels stacked, not drawn over each other.
            nth = seen_at[row["descriptor_dim"]] = seen_at.get(row["descriptor_dim"], -1) + 1
            ax.annotate(name, (row["descriptor_dim"], row["R@1"]), textcoords="offset points", xytext=(6, 4 - 11 * nth), fontsize=8)
    if has_dims:
        ax.set_xscale("log")
        dims = sorted(table["descriptor_dim"].dropna().unique())
        ax.set_xticks(dims, [str(int(d)) for d in dims])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlim(min(dims) / 1.6, max(dims) * 1.6)
    ax.set_ylim(0, 100)
    ax.set_xlabel("descriptor dimension (log)")
    ax.set_ylabel("R@1 (%), mean ± std over seeds")
    rule = _epoch_rule(data)
    benches = ", ".join(map(str, table["benchmark"].unique()))
    ax.set_title(f"{title}: R@1 on {benches}" + (f"\nepoch: {rule}" if rule else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if table["benchmark"].nunique() > 1 or ("subset" in table and table["subset"].notna().any()):
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir = Path(out_dir)
    png = save_figure(fig, out_dir / "r1_vs_dim.png")

    markdown = (
        f"# {title}\n\nRecall@N (%) as mean ± std over the n seeds of one setting (runs that differ in nothing but "
        "the seed; config keys that differ between rows of the same "
        f"{', '.join(by)} are shown as columns). {epoch_statement(data)} Parameters of the whole model; training and "
        f"evaluation throughput in images per second. {memory_statement(data)}\n\n"
        f"![R@1 against descriptor dimension]({png.name})\n\n"
        + markdown_table(_rows(shown), columns, float_format=".1f") + subset_notes_of(table)
    )
    return {**_write(out_dir, "report", markdown, table), "png": png}


def seeds_report(runs: pd.DataFrame, out_dir: str | Path, *, by: Sequence[str] = ("aggregator",)) -> dict[str, Path]:
    """Mean ± std over seeds, one row per setting and benchmark."""
    data = runs[runs["benchmark"].notna()]
    table = settings_table(data, list(by), extra=("descriptor_dim",))
    shown = format_mean_std(table)
    columns = [*table.attrs["shown"], "benchmark", *[m for m in RECALLS if m in shown.columns], "n", "seeds", "descriptor_dim"]
    columns = [c for c in columns if c in shown.columns]
    markdown = (
        "# Mean ± std over seeds\n\nOne row per setting: runs are averaged only when their resolved configs differ in "
        f"nothing but the seed (n = how many); config keys that differ between rows of the same {', '.join(by)} are "
        f"shown as columns. {epoch_statement(data)}\n\n" + markdown_table(_rows(shown), columns, float_format=".1f")
        + subset_notes_of(table)
    )
    return _write(Path(out_dir), "seeds", markdown, table)
