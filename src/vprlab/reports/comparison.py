"""The comparison table of models x benchmarks (``vprlab compare``) in every format it is written in:
Markdown, CSV, LaTeX and a plot of R@1 against descriptor size and speed.

:class:`Comparison` holds the rows (one per evaluated cell, with the published numbers and the
differences) and the skipped cells; :mod:`vprlab.commands.compare` evaluates and fills it, and the
writers here turn it into files (:func:`write_comparison`), so every command that compares models
writes the same tables.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vprlab.evaluation.results import (
    SUBSET_MARK,
    markdown_table,
    subset_footnote,
)
from vprlab.reports.plots import fit_legend, nice_ticks, pyplot, readable_log_ticks, save_figure
from vprlab.reports.published import NO_PUBLISHED, NOT_GIVEN, published_all
from vprlab.utils.io import atomic_write_text


@dataclass
class Skipped:
    model: str  # "*" for every model
    benchmark: str  # "*" for every benchmark
    reason: str



@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    skipped: list[Skipped]
    ks: tuple[int, ...]
    device: str
    published_source: str
    notes: list[str] = field(default_factory=list)



def number_text(value: Any, digits: int = 1, sign: bool = False) -> str:
    """A recall or speed in a table cell: ``"-"`` for None or NaN, ``digits`` decimals, ``+`` sign with ``sign``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def published_columns(rows: Sequence[dict], model_key: str | None, benchmark: str, measured: dict[str, Any],
                      ks: Sequence[int]) -> dict[str, Any]:
    """The published columns of one compared cell (``measured``: its ``R@k``): ``published R@k`` and
    ``diff R@k`` (None where there is no published number), the ``published source`` and ``published
    note`` of the row compared with (the first of the file for this model and benchmark), the ``other
    published sources`` (with their R@1; ``other sources``: their names) and the ``published status`` ("published" or
    :data:`~vprlab.reports.published.NO_PUBLISHED`)."""
    found = published_all(rows, model_key, benchmark)
    pub = found[0] if found else None
    out: dict[str, Any] = {}
    for k in ks:
        value = pub.get(f"R@{k}") if pub else None
        out[f"published R@{k}"] = value
        ours = measured.get(f"R@{k}")
        out[f"diff R@{k}"] = None if value is None or ours is None else ours - value
    out["published source"] = pub["source"] if pub else None
    out["published note"] = (pub.get("note") or None) if pub else None
    out["other published sources"] = "; ".join(f"{r['source']} (R@1 {number_text(r.get('R@1'))})" for r in found[1:]) or None
    out["other sources"] = [r["source"] for r in found[1:]]  # the same, for the [n] references
    out["published status"] = "published" if pub else NO_PUBLISHED
    return out


def number_sources(cited: Iterable[tuple[str | None, Sequence[str]]]) -> dict[str, int]:
    """Every source cited as (source compared with, other sources) pairs, numbered from 1 in order."""
    refs: dict[str, int] = {}
    for source, others in cited:
        for name in [source, *others]:
            if name:
                refs.setdefault(name, len(refs) + 1)
    return refs


def reference_text(source: str | None, others: Sequence[str], refs: dict[str, int]) -> str:
    """A 'published' cell: ``[n]`` of the source compared with (``, also [m]`` for the others), or
    :data:`~vprlab.reports.published.NO_PUBLISHED` without a source."""
    if not source:
        return NO_PUBLISHED
    also = [f"[{refs[s]}]" for s in others]
    return f"[{refs[source]}]" + (f", also {', '.join(also)}" if also else "")


def source_refs(result: Comparison) -> dict[str, int]:
    """Every published source the rows cite (compared with, then the others), numbered from 1."""
    return number_sources((row.get("published source"), row.get("other sources") or []) for row in result.rows)


def published_ref(row: dict[str, Any], refs: dict[str, int]) -> str:
    return reference_text(row.get("published source"), row.get("other sources") or [], refs)


def published_text(row: dict[str, Any], k: int) -> str:
    """A published R@k cell: the number, :data:`~vprlab.reports.published.NOT_GIVEN` where the source
    gives none for this k, empty where there is no published row (the 'published' cell says so)."""
    if not row.get("published source"):
        return ""
    value = row.get(f"published R@{k}")
    return NOT_GIVEN if value is None else number_text(value)


def diff_text(row: dict[str, Any], k: int) -> str:
    """A measured-minus-published cell: empty where there is no published number, '-' where the recall
    was not measured."""
    return "" if row.get(f"published R@{k}") is None else number_text(row.get(f"diff R@{k}"), sign=True)


def table_rows(result: Comparison, ks: Sequence[int] | None = None) -> list[dict[str, str]]:
    """The printed table: model, benchmark, dim, img/s, R@k, then published R@k, difference and the
    published source (``[n]``, or "no published number"). Measured cells of a benchmark evaluated on
    another number of images than it is published with end in :data:`SUBSET_MARK` (:func:`subset_notes`
    says which)."""
    ks = tuple(ks or [k for k in result.ks if k <= 10])
    refs = source_refs(result)
    out = []
    for row in result.rows:
        mark = SUBSET_MARK if row.get("subset") else ""
        line = {"model": row["model"], "benchmark": row["benchmark"], "dim": str(row["descriptor_dim"]),
                "size": row["image_size"], "img/s": number_text(row["img_per_s"], 0)}
        line.update({f"R@{k}": number_text(row[f"R@{k}"]) + mark for k in ks})
        line.update({f"paper R@{k}": published_text(row, k) for k in ks})
        line.update({f"Δ R@{k}": diff_text(row, k) for k in ks})
        line["published"] = published_ref(row, refs)
        out.append(line)
    return out


def published_notes(result: Comparison) -> list[str]:
    """One line per compared cell whose published row carries a note (another protocol, split, threshold)."""
    return list(dict.fromkeys(f"{r['model']} on {r['benchmark']}: {r['published note']}" for r in result.rows if r.get("published note")))


def skipped_lines(result: Comparison) -> list[str]:
    lines = []
    for s in result.skipped:
        if s.model == "*":
            lines.append(f"benchmark {s.benchmark}: skipped for every model ({s.reason})")
        elif s.benchmark != "*":
            lines.append(f"model {s.model} on benchmark {s.benchmark}: skipped ({s.reason})")
        else:
            lines.append(f"model {s.model}: skipped on every benchmark ({s.reason})")
    return lines


def subset_notes(result: Comparison) -> list[str]:
    """One line per benchmark evaluated on another number of images than it is published with."""
    return list(dict.fromkeys(r["subset"] for r in result.rows if r.get("subset")))


SKIP_RULE = ("Skipped cells (missing benchmark data or weights file) are not evaluated and not counted; "
             "every other cell is evaluated as usual.")


def comparison_markdown(result: Comparison, title: str = "Model comparison", command: str | None = None) -> str:
    rows = table_rows(result)
    parts = [f"# {title}\n\n"]
    if command:
        parts.append(f"Made by `{command}`.\n\n")
    parts.append(markdown_table(rows, list(rows[0]) if rows else ["model", "benchmark"]) if rows else "(no cell evaluated)\n")
    parts.append(subset_footnote(subset_notes(result)))
    parts.append(
        f"\nRecall@N in percent; paper: the published number ({result.published_source}; its source in the "
        f"'published' column, listed below; '{NOT_GIVEN}': the source gives no number for that N), Δ: measured minus "
        f"published; '{NO_PUBLISHED}': the file has no number for that model and benchmark; '-': not measured. "
        f"img/s: database + query images per second during descriptor extraction on {result.device}.\n"
    )
    for note in result.notes:
        parts.append(f"Note: {note}.\n")
    parts.append(sources_and_skipped_markdown(result))
    return "".join(parts)


def sources_and_skipped_markdown(result: Comparison) -> str:
    """The end of a Markdown table file: the sources of the published numbers shown (numbered as the
    'published' column cites them), the notes of those numbers, then the skipped cells."""
    parts = []
    refs = source_refs(result)
    if refs:
        parts.append("\nSources of the published numbers (where several give a cell, the method's own is compared "
                     "with and the others follow 'also'):\n\n" + "".join(f"- [{n}] {s}\n" for s, n in refs.items()))
    notes = published_notes(result)
    if notes:
        parts.append("\nNotes on the published numbers:\n\n" + "".join(f"- {n}\n" for n in notes))
    parts.append(f"\n## Skipped\n\n{SKIP_RULE}\n\n")
    lines = skipped_lines(result)
    parts.append("".join(f"- {line}\n" for line in lines) if lines else "Nothing was skipped.\n")
    return "".join(parts)


def terminal_notes(result: Comparison) -> list[str]:
    """What a command prints under its table: the subset marks, the skipped cells and the skip rule."""
    lines = [f"{SUBSET_MARK} {note} (not comparable with published numbers)" for note in subset_notes(result)]
    lines += [f"skipped: {line}" for line in skipped_lines(result)]
    return lines + ([SKIP_RULE] if result.skipped else [])


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def latex_caption_tail(result: Comparison) -> str:
    """The end of a LaTeX caption: the numbered sources of the published numbers, the benchmarks marked
    with a dagger (other image counts than published) and the skipped cells."""
    text = ""
    refs = source_refs(result)
    if refs:
        text += " Published: " + "; ".join(f"[{n}] {latex_escape(s)}" for s, n in refs.items()) + "."
    notes = subset_notes(result)
    if notes:
        text += (r" $^\dagger$Not the published benchmark (other image counts; not comparable with published numbers): "
                 + "; ".join(latex_escape(n) for n in notes) + ".")
    if result.skipped:
        text += " Skipped: " + "; ".join(latex_escape(line) for line in skipped_lines(result)) + "."
    return text


def comparison_latex(result: Comparison) -> str:
    """A booktabs table: one row per evaluated cell, measured R@k with the published number and the
    difference in parentheses where there is one."""
    ks = [k for k in result.ks if k <= 10]
    refs = source_refs(result)
    head = ["Model", "Benchmark", "Dim", "img/s", *[f"R@{k}" for k in ks], "Published"]
    lines = [r"\begin{tabular}{ll" + "r" * (len(head) - 3) + "l}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for row in result.rows:
        cells = [latex_escape(str(row["model"])), latex_escape(str(row["benchmark"])), str(row["descriptor_dim"]), number_text(row["img_per_s"], 0)]
        for k in ks:
            cell = number_text(row[f"R@{k}"]) + (r"$^\dagger$" if row.get("subset") else "")
            if row[f"published R@{k}"] is not None:
                cell += f" ({number_text(row[f'published R@{k}'])}, {number_text(row[f'diff R@{k}'], sign=True)})"
            elif row.get("published source"):
                cell += f" ({NOT_GIVEN})"
            cells.append(cell)
        cells.append(published_ref(row, refs))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = (f"Recall@N (\\%); in parentheses: published number and measured minus published ({NOT_GIVEN}: the source "
               f"gives none); {NO_PUBLISHED}: none in the published-results file.")
    caption += latex_caption_tail(result)
    return "\n".join([r"\begin{table}[t]", r"\centering", *lines, r"\caption{" + caption + "}", r"\end{table}"]) + "\n"


def comparison_csv(result: Comparison, extra_columns: Sequence[str] = ()) -> str:
    """Every evaluated cell with all its numbers (published R@k empty where there is none: ``published
    status`` says whether the file has a row), then one ``skipped`` line per skipped model or benchmark
    (``extra_columns``: row keys written after ``status``, e.g. the leaderboard's rank)."""
    columns = ["status", *extra_columns, "model", "source", "kind", "checkpoint_hash", "benchmark", "image_size", "descriptor_dim",
               "num_queries", "num_db", "expected_num_queries", "expected_num_db", "subset", *[f"R@{k}" for k in result.ks], *[f"published R@{k}" for k in result.ks],
               *[f"diff R@{k}" for k in result.ks], "published status", "published source", "published note",
               "other published sources", "img_per_s", "speed measured", "reason"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns if c in row} | {"status": "ok"})
    for s in result.skipped:
        writer.writerow({"status": "skipped", "model": s.model, "benchmark": s.benchmark, "reason": s.reason})
    return buffer.getvalue()


def comparison_plot(result: Comparison, path: str | Path) -> Path | None:
    """:func:`comparison_figure` saved to ``path`` (None when no cell has a recall)."""
    fig = comparison_figure(result)
    return None if fig is None else save_figure(fig, path)


def comparison_figure(result: Comparison) -> Any:
    """R@1 against descriptor size and against extraction speed, one point per evaluated cell
    (colour: benchmark, marker: model). Both x axes are logarithmic with labels at the descriptor
    sizes present and at 1-2-5 speeds, never overlapping; the legend is sized to stay inside the figure
    however long the model names. None when no cell has a recall."""
    rows = [r for r in result.rows if r.get("R@1") is not None]
    if not rows:
        return None
    plt = pyplot()
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    markers = "os^Dv<>pP*Xh"
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    renderer = fig.canvas.get_renderer()
    ticks: list[list[float]] = []
    for ax, key, label in ((axes[0], "descriptor_dim", "descriptor size (dimensions)"),
                           (axes[1], "img_per_s", f"extraction speed (images/s, {result.device})")):
        xs = []
        for r in rows:
            x = float(r[key])
            if not math.isfinite(x) or x <= 0:
                continue
            xs.append(x)
            ax.scatter(x, r["R@1"], marker=markers[models.index(r["model"]) % len(markers)],
                       color=colors(benchmarks.index(r["benchmark"]) % 10), s=50)
        ax.set_xscale("log")
        if xs:
            ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ticks.append(sorted(set(xs)) if key == "descriptor_dim" else nice_ticks(*ax.get_xlim()) if xs else [])
        ax.set_xlabel(label)
        ax.set_ylabel("R@1 (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], marker=markers[i % len(markers)], color="gray", linestyle="", label=m) for i, m in enumerate(models)]
    subsets = {r["benchmark"] for r in rows if r.get("subset")}
    handles += [plt.Line2D([], [], marker="o", color=colors(i % 10), linestyle="",
                           label=f"{b}{SUBSET_MARK} (not the published image counts)" if b in subsets else b)
                for i, b in enumerate(benchmarks)]
    fig.suptitle("R@1 against descriptor size and extraction speed")
    _, bottom = fit_legend(fig, handles, renderer)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for ax, candidates in zip(axes, ticks):  # after the layout: label widths are measured where they are drawn
        if candidates:
            readable_log_ticks(ax, candidates, renderer)
    return fig


def write_comparison(result: Comparison, out_dir: str | Path, stem: str = "comparison", command: str | None = None) -> dict[str, Path]:
    """comparison.md, .csv, .tex and .png under ``out_dir`` (``command``: quoted in the Markdown)."""
    out = Path(out_dir)
    paths = {
        "markdown": atomic_write_text(out / f"{stem}.md", comparison_markdown(result, command=command)),
        "csv": atomic_write_text(out / f"{stem}.csv", comparison_csv(result)),
        "latex": atomic_write_text(out / f"{stem}.tex", comparison_latex(result)),
    }
    plot = comparison_plot(result, out / f"{stem}.png")
    if plot is not None:
        paths["plot"] = plot
    return paths
