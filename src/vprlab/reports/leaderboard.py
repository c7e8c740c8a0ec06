"""The leaderboard (``vprlab leaderboard``) in every format it is written in: one table of every
evaluated (model, benchmark) cell, ranked by R@1 within each benchmark, with descriptor size, speed,
measured R@1/R@5 beside the published numbers and the difference (Markdown, CSV, LaTeX), and two
plots: R@1 against descriptor size and R@1 against extraction speed, one panel per benchmark.

It reads a :class:`~vprlab.reports.comparison.Comparison` (what ``vprlab compare`` evaluates), so the
numbers, skipped cells, subset marks and the CSV columns are compare's; a row whose ``weights`` is
:data:`STAND_IN` holds random stand-in weights: the table says so in its caption and in the row's
name, shows the published model's numbers for reference only and computes no difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vprlab.evaluation.results import SUBSET_MARK, markdown_table, subset_footnote
from vprlab.reports.comparison import (
    Comparison,
    comparison_csv,
    diff_text,
    latex_caption_tail,
    latex_escape,
    number_text,
    published_ref,
    published_text,
    source_refs,
    sources_and_skipped_markdown,
    subset_notes,
)
from vprlab.reports.published import NO_PUBLISHED, NOT_GIVEN
from vprlab.reports.plots import fit_legend, nice_ticks, pyplot, readable_log_ticks, save_figure
from vprlab.utils.io import atomic_write_text

STAND_IN = "random stand-in"  # the ``weights`` value of a row evaluated with stand-in weights
RELEASED = "released file"
STAND_IN_DIFF = "n/a (stand-in)"
STEM = "leaderboard"
PLOTS = {"descriptor_dim": "r1_vs_dim", "img_per_s": "r1_vs_speed"}


def ranked_rows(result: Comparison) -> list[dict[str, Any]]:
    """The evaluated rows grouped by benchmark (in the order evaluated) and ranked by measured R@1
    (highest first; ties by R@5, then name), each with its ``rank`` (1 = best on that benchmark)."""
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in result.rows))
    out = []
    for bench in benchmarks:
        rows = [r for r in result.rows if r["benchmark"] == bench]
        rows.sort(key=lambda r: (-(r.get("R@1") if r.get("R@1") is not None else -1.0),
                                 -(r.get("R@5") if r.get("R@5") is not None else -1.0), str(r["model"])))
        out += [{**r, "rank": i} for i, r in enumerate(rows, 1)]
    return out


def has_stand_ins(result: Comparison) -> bool:
    return any(r.get("weights") == STAND_IN for r in result.rows)


def table_ks(result: Comparison) -> tuple[int, ...]:
    return tuple(k for k in (1, 5) if k in result.ks) or tuple(result.ks[:1])


def _published_cells(row: dict, ks: Sequence[int], refs: dict[str, int]) -> dict[str, str]:
    """paper R@k, Δ R@k and the 'published' cell as ``vprlab compare`` writes them (the number or
    ``not given``; the difference; ``[n]`` of the source or ``no published number``), with
    ``n/a (stand-in)`` as the Δ of a stand-in row."""
    cells = {f"paper R@{k}": published_text(row, k) for k in ks}
    for k in ks:
        if row.get("weights") == STAND_IN:
            cells[f"Δ R@{k}"] = STAND_IN_DIFF if row.get(f"published R@{k}") is not None else ""
        else:
            cells[f"Δ R@{k}"] = diff_text(row, k)
    cells["published"] = published_ref(row, refs)
    return cells


def speed_text(value: Any) -> str:
    """img/s in a cell: whole numbers from 10 up, one decimal below (a slow model never reads 0)."""
    return number_text(value, 0 if value is not None and value >= 10 else 1)


def leaderboard_table(result: Comparison) -> list[dict[str, str]]:
    """The printed table, one line per evaluated cell: rank, model, benchmark, dim, size, img/s, measured
    R@1/R@5 (marked :data:`SUBSET_MARK` on a benchmark with other image counts than published), the
    published numbers and the difference."""
    ks = table_ks(result)
    refs = source_refs(result)
    out = []
    for row in ranked_rows(result):
        mark = SUBSET_MARK if row.get("subset") else ""
        line = {"#": str(row["rank"]), "model": str(row["model"]), "benchmark": str(row["benchmark"]),
                "dim": str(row["descriptor_dim"]), "size": str(row["image_size"]), "img/s": speed_text(row["img_per_s"])}
        line.update({f"R@{k}": number_text(row.get(f"R@{k}")) + mark for k in ks})
        line.update(_published_cells(row, ks, refs))
        out.append(line)
    return out


def caption_lines(result: Comparison) -> list[str]:
    """What the table's numbers are, the same sentences under the Markdown table and in the LaTeX caption."""
    lines = []
    if has_stand_ins(result):
        lines.append(f"Rows marked '({STAND_IN})' hold {STAND_IN} weights, not the published models: their recalls "
                     "mean nothing. The paper columns show the published model's numbers for reference only; "
                     f"they are not compared with these rows (Δ: {STAND_IN_DIFF}).")
    lines.append(f"Recall@N in percent, ranked by R@1 within each benchmark. paper: the method's published number "
                 f"({result.published_source}; its source in the 'published' column, listed below; '{NOT_GIVEN}': the source "
                 f"gives no number for that N), Δ: measured minus published, '{NO_PUBLISHED}': none for this model and "
                 f"benchmark, '-': not measured.")
    lines.append(f"dim: descriptor size; size: evaluation image size (native: the images' own); img/s: database + "
                 f"query images per second during descriptor extraction on {result.device}.")
    lines += [f"Note: {note}." for note in result.notes]
    return lines


def leaderboard_markdown(result: Comparison, title: str = "VPR leaderboard", command: str | None = None) -> str:
    rows = leaderboard_table(result)
    parts = [f"# {title}\n\n"]
    if has_stand_ins(result):
        parts.append(f"**{STAND_IN.capitalize()} weights, not the published models: the recalls below mean nothing.**\n\n")
    if command:
        parts.append(f"Made by `{command}`.\n\n")
    parts.append(markdown_table(rows, list(rows[0])) if rows else "(no cell evaluated)\n")
    parts.append(subset_footnote(subset_notes(result)))
    parts.append("\n" + "\n".join(caption_lines(result)) + "\n")
    parts.append(sources_and_skipped_markdown(result))
    return "".join(parts)


def leaderboard_latex(result: Comparison) -> str:
    """A booktabs table with the Markdown table's columns; the caption says what the numbers are, which
    rows are stand-ins and what was skipped."""
    table = leaderboard_table(result)
    ks = table_ks(result)
    head = ["\\#", "Model", "Benchmark", "Dim", "Size", "img/s", *[f"R@{k}" for k in ks],
            *[f"Paper R@{k}" for k in ks], *[f"$\\Delta$ R@{k}" for k in ks], "Published"]
    lines = [r"\begin{tabular}{rll" + "r" * (len(head) - 3) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    previous = None
    for line in table:
        if previous is not None and line["benchmark"] != previous:
            lines.append(r"\midrule")
        previous = line["benchmark"]
        cells = [latex_escape(v.replace(SUBSET_MARK, "")) + (r"$^\dagger$" if SUBSET_MARK in v else "") for v in line.values()]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = " ".join(latex_escape(text) for text in caption_lines(result)).replace("Δ", r"$\Delta$")
    caption += latex_caption_tail(result)
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", *lines, r"\caption{" + caption + "}", r"\end{table}"]) + "\n"


def leaderboard_csv(result: Comparison) -> str:
    """compare's CSV (every number of every cell, skipped lines with their reason) with the ``rank`` and
    ``weights`` (released file / random stand-in) of each row, in ranked order."""
    ranked = Comparison(ranked_rows(result), result.skipped, result.ks, result.device, result.published_source, result.notes)
    return comparison_csv(ranked, extra_columns=("rank", "weights"))


def leaderboard_figure(result: Comparison, x_key: str) -> Any:
    """R@1 against ``x_key`` (``descriptor_dim`` or ``img_per_s``), one panel per benchmark, one colour
    and marker per model (legend under the panels, sized to stay inside the figure); logarithmic x axis
    labelled at the sizes present or at 1-2-5 speeds, labels never overlapping. None when no cell has a
    recall."""
    rows = [r for r in result.rows if r.get("R@1") is not None and r.get(x_key) is not None
            and math.isfinite(float(r[x_key])) and float(r[x_key]) > 0]
    if not rows:
        return None
    plt = pyplot()
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    markers = "os^Dv<>pP*Xh"
    colors = plt.get_cmap("tab10")
    ncols = min(3, len(benchmarks))
    nrows = math.ceil(len(benchmarks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.4, 4.2 * ncols + 0.6), 3.6 * nrows + 0.4), squeeze=False)
    renderer = fig.canvas.get_renderer()
    xs_all = [float(r[x_key]) for r in rows]
    low, high = min(xs_all) / 1.6, max(xs_all) * 1.6
    label = "descriptor size (dimensions)" if x_key == "descriptor_dim" else f"extraction speed (images/s, {result.device})"
    subsets = {r["benchmark"] for r in rows if r.get("subset")}
    used = []
    for ax, bench in zip(axes.flat, benchmarks):
        for r in (r for r in rows if r["benchmark"] == bench):
            i = models.index(r["model"])
            ax.scatter(float(r[x_key]), r["R@1"], marker=markers[i % len(markers)], color=colors(i % 10), s=55,
                       edgecolors="black", linewidths=0.4, zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(0, 100)
        ax.set_title(f"{bench}{SUBSET_MARK}" if bench in subsets else bench, fontsize=10)
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylabel("R@1 (%)", fontsize=9)
        ax.grid(True, alpha=0.3)
        used.append(ax)
    for ax in list(axes.flat)[len(benchmarks):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], marker=markers[i % len(markers)], color=colors(i % 10), markeredgecolor="black",
                          markeredgewidth=0.4, linestyle="", label=m) for i, m in enumerate(models)]
    title = "R@1 against descriptor size" if x_key == "descriptor_dim" else "R@1 against extraction speed"
    if has_stand_ins(result):
        title += f"\n{STAND_IN} weights, not the published models: the recalls mean nothing"
    if subsets:
        title += f"\n{SUBSET_MARK}: not the published image counts"
    fig.suptitle(title, fontsize=11)
    _, bottom = fit_legend(fig, handles, renderer)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    candidates = sorted({float(r[x_key]) for r in rows}) if x_key == "descriptor_dim" else nice_ticks(low, high)
    for ax in used:  # after the layout: label widths are measured where they are drawn
        readable_log_ticks(ax, candidates, renderer)
    return fig


def write_leaderboard(result: Comparison, out_dir: str | Path, command: str | None = None,
                      title: str = "VPR leaderboard") -> dict[str, Path]:
    """leaderboard.md, .csv, .tex, leaderboard_r1_vs_dim.png and leaderboard_r1_vs_speed.png under
    ``out_dir``, each written atomically (``command``: quoted in the Markdown)."""
    out = Path(out_dir)
    paths = {
        "markdown": atomic_write_text(out / f"{STEM}.md", leaderboard_markdown(result, title, command)),
        "csv": atomic_write_text(out / f"{STEM}.csv", leaderboard_csv(result)),
        "latex": atomic_write_text(out / f"{STEM}.tex", leaderboard_latex(result)),
    }
    for key, suffix in PLOTS.items():
        fig = leaderboard_figure(result, key)
        if fig is not None:
            paths[suffix] = save_figure(fig, out / f"{STEM}_{suffix}.png")
    return paths
