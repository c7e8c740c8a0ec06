"""Our recalls next to a model's published numbers, with the differences: printed after
`evaluate.py compare_with_paper=...` (:func:`compare_with_paper`) and built from run folders by
`vprlab report paper` (:func:`paper_report`, Markdown, CSV and LaTeX).

The published numbers are the rows of ``vprlab/resources/published_results.csv`` (one row per model,
benchmark and source, recall@1/5/10/20 in percent): for the BoQ paper models (``boq_resnet50``,
``boq_dinov2``, or their released names) the rows whose source is the BoQ README (:func:`paper_results`,
the table the reproduce recipes compare with); for every other published model its own rows, the one
compared with on each benchmark being the file's first (the method's own source), the others listed
(:func:`published_rows_for`). A benchmark the file has no number for says "no published number".
Benchmark configs are matched to the papers' benchmark names through
:data:`~vprlab.reports.published.PAPER_BENCHMARKS` (``nordland`` is the 1-frame "Nordland*",
``nordland_10frames`` the 10-frame "Nordland**").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from vprlab.evaluation.results import (
    SUBSET_MARK,
    markdown_table,
    subset_footnote,
    subset_note,
)
from vprlab.reports.comparison import latex_escape, number_sources, number_text, reference_text
from vprlab.reports.published import (
    NO_PUBLISHED,
    NOT_GIVEN,
    PUBLISHED_RESULTS,
    paper_benchmark,
    published_models,
    published_results,
)
from vprlab.reports.tables import _settings, _write, config_keys, epoch_statement
from vprlab.utils.console import make_console
from vprlab.utils.io import atomic_write_text

# The rows of published_results.csv that are the BoQ paper's table (its README's results).
PAPER_SOURCE = "BoQ README"


def paper_results(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The BoQ paper's rows of the published results (:func:`~vprlab.reports.published.published_results`;
    ``path``: another published-results CSV), each under the paper's model name (``boq_resnet50``,
    ``boq_dinov2``): model, benchmark, R@1..R@20, descriptor_dim, eval_size, source, note."""
    from vprlab.pretrained import released_model

    return [{**row, "model": released_model(row["model"]).paper_model}
            for row in published_results(path) if row["source"].startswith(PAPER_SOURCE)]


def paper_models(rows: Sequence[dict] | None = None) -> list[str]:
    return sorted({row["model"] for row in (rows if rows is not None else paper_results())})


def _resolve_model(model: str, paper_rows: Sequence[dict]) -> str:
    models = paper_models(paper_rows)
    if model in models:
        return model
    try:  # a released model name (boq_resnet50_16384) stands for its paper rows
        from vprlab.pretrained import released_model

        paper_model = released_model(model).paper_model
    except ValueError:
        paper_model = None
    if paper_model not in models:
        raise ValueError(f"compare_with_paper={model!r}: the paper reports {models}; use one of them")
    return paper_model


def published_rows_for(model: str, path: str | Path | None = None, what: str = "compare_with_paper") -> tuple[str, list[dict]]:
    """``(label, rows)``: the published numbers ``model`` is set against, one row per benchmark.

    A BoQ paper model or released BoQ name: the BoQ README rows under the paper model name (as the
    reproduce recipes compare). Any other published name (registry name or alias, or a model of the
    published-results file): its rows under its registry name, on each benchmark the file's first row
    (the method's own source) with ``other sources`` naming the others; a registered model the file has
    no row for gets no rows (every benchmark then says "no published number"). Anything else is an
    error naming the models with published numbers (``what``: the option named in it)."""
    paper_rows = paper_results(path)
    try:
        label = _resolve_model(model, paper_rows)
        return label, [{**row, "other sources": []} for row in paper_rows if row["model"] == label]
    except ValueError:
        pass
    from vprlab.pretrained import is_published, published_model

    rows = published_results(path)
    name = published_model(model).name if is_published(model) else model
    mine = [row for row in rows if row["model"] == name]
    if not mine and not is_published(model):
        raise ValueError(f"{what}={model!r}: neither a published model nor a model of {path or PUBLISHED_RESULTS}; "
                         f"the models with published numbers are {published_models(rows)} (BoQ also as {paper_models(paper_rows)})")
    by_benchmark: dict[str, list[dict]] = {}
    for row in mine:
        by_benchmark.setdefault(paper_benchmark(row["benchmark"]) or row["benchmark"], []).append(row)
    return name, [{**group[0], "other sources": [r["source"] for r in group[1:]]} for group in by_benchmark.values()]


def _is_boq_paper(label: str) -> bool:
    return label in paper_models()


def _whose(label: str) -> str:
    return "the BoQ paper" if _is_boq_paper(label) else "the published numbers"


def source_references(rows: Sequence[dict]) -> dict[str, int]:
    """The sources of published rows (each compared with, then its others), numbered from 1."""
    return number_sources((row["source"], row.get("other sources", [])) for row in rows)


def _reference(row: dict | None, refs: dict[str, int]) -> str:
    return reference_text(row["source"] if row else None, (row or {}).get("other sources", []), refs)


def compare_with_paper(
    rows: Sequence[dict[str, Any]],
    model: str,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    out_dir: str | Path | None = None,
    console: Console | None = None,
    paper_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Print our R@k next to the paper's for ``model`` (``boq_resnet50`` / ``boq_dinov2``, or a released
    model name) and return one row per benchmark with ``R@k``, ``paper R@k`` and ``delta R@k``.

    ``rows`` are result rows as run_evaluation writes them (``benchmark`` + ``R@k``, and the measured and
    published image counts). Benchmarks the paper does not report get "-"; paper benchmarks that were not
    evaluated are listed below the table. A benchmark evaluated on other image counts than published is
    marked with :data:`SUBSET_MARK` and named under the table; a row whose ``status`` says ``skipped``
    (evaluate.py ``skip_missing=true``) is shown as skipped with its reason.
    With ``out_dir`` the same table is written to ``<out_dir>/paper_comparison_<model>.md``.
    """
    model, own = published_rows_for(model, paper_path)
    published = {row["benchmark"]: row for row in own}
    refs = source_references(own)
    comparison = []
    for row in rows:
        paper_name = paper_benchmark(str(row["benchmark"]))
        paper = published.get(paper_name) if paper_name else None
        entry: dict[str, Any] = {"benchmark": row["benchmark"], "paper benchmark": paper_name if paper else None,
                                 "subset": subset_note(row), "skipped": _skip_reason(row),
                                 "published": _reference(paper, refs), "has published": paper is not None}
        for k in ks:
            ours, theirs = row.get(f"R@{k}"), (paper or {}).get(f"R@{k}")
            entry[f"R@{k}"] = ours
            entry[f"paper R@{k}"] = theirs
            entry[f"delta R@{k}"] = ours - theirs if ours is not None and theirs is not None else None
        comparison.append(entry)
    evaluated = {entry["paper benchmark"] for entry in comparison}
    not_run = [name for name in published if name not in evaluated]

    title = f"Recall@N (%) vs {_whose(model)} ({model})"
    table = Table(title=title, caption=f"each cell: ours / paper (difference); {NO_PUBLISHED}: none in the published-results file")
    table.add_column("benchmark")
    table.add_column("paper")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    for entry in comparison:
        if not entry["has published"]:
            cells = [("skipped" if entry["skipped"] else number_text(entry[f"R@{k}"]) + (SUBSET_MARK if entry["subset"] else ""))
                     + f" / {NO_PUBLISHED}" for k in ks]
        elif entry["skipped"]:
            cells = [f"skipped / {_paper_text(entry[f'paper R@{k}'], True)}" for k in ks]
        else:
            mark = SUBSET_MARK if entry["subset"] else ""
            cells = [f"{number_text(entry[f'R@{k}'])}{mark} / {_paper_text(entry[f'paper R@{k}'], True)}"
                     + (f" ({number_text(entry[f'delta R@{k}'], sign=True)})" if entry[f"paper R@{k}"] is not None else "")
                     for k in ks]
        table.add_row(str(entry["benchmark"]), entry["paper benchmark"] or "-", *cells)
    console = console or make_console()
    console.print(table)
    for line in _notes_below(comparison):
        console.print(line, markup=False)
    if not_run:
        console.print(f"paper benchmarks not evaluated here: {', '.join(not_run)}")
    for source, n in refs.items():
        console.print(f"[{n}] {source}", markup=False)
    if out_dir is not None:
        path = Path(out_dir) / f"paper_comparison_{model}.md"
        atomic_write_text(path, paper_comparison_markdown(comparison, title, ks, not_run, refs))
        print(f"comparison: {path}")  # plain print: a path must never be wrapped
    return comparison


def _skip_reason(row: dict) -> str | None:
    status = str(row.get("status") or "")
    return status.partition("skipped: ")[2] or "skipped" if status.startswith("skipped") else None


def _notes_below(comparison: Sequence[dict]) -> list[str]:
    """Plain-text lines under the printed table: subsets and skipped benchmarks."""
    lines = [f"{SUBSET_MARK} {e['subset']} (not comparable with the paper's numbers)" for e in comparison if e.get("subset")]
    lines += [f"skipped: {e['benchmark']}: {e['skipped']}" for e in comparison if e.get("skipped")]
    return lines


def _paper_text(value: Any, published: bool) -> str:
    """A published number's cell: the number, "not given" where the source gives none for that recall,
    empty where there is no published row (the 'published' cell says "no published number")."""
    if not published:
        return ""
    return NOT_GIVEN if value is None or (isinstance(value, float) and math.isnan(value)) else number_text(value)


def _diff_text(value: Any, published_value: Any) -> str:
    return "" if published_value is None or (isinstance(published_value, float) and math.isnan(published_value)) else number_text(value, sign=True)


def _sources_lines(refs: dict[str, int]) -> list[str]:
    if not refs:
        return []
    return ["", "Sources of the published numbers (where several give a benchmark, the method's own is compared with "
            "and the others follow 'also'):", ""] + [f"- [{n}] {source}" for source, n in refs.items()]


def paper_comparison_markdown(comparison: Sequence[dict], title: str, ks: Sequence[int], not_run: Sequence[str] = (),
                              refs: dict[str, int] | None = None) -> str:
    header = ["benchmark", "paper"] + [label for k in ks for label in (f"R@{k}", f"paper R@{k}", f"Δ R@{k}")] + ["published"]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 3) + "---|"]
    for entry in comparison:
        cells = [str(entry["benchmark"]), (entry["paper benchmark"] or "-").replace("*", "\\*")]
        mark = SUBSET_MARK if entry.get("subset") else ""
        has = entry.get("has published", entry.get("paper benchmark") is not None)
        for k in ks:
            ours = "skipped" if entry.get("skipped") else number_text(entry[f"R@{k}"]) + mark
            cells += [ours, _paper_text(entry[f"paper R@{k}"], has), _diff_text(entry[f"delta R@{k}"], entry[f"paper R@{k}"])]
        cells.append(entry.get("published") or (NO_PUBLISHED if not has else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"'-': not measured; '{NO_PUBLISHED}': the published-results file has none for this benchmark; "
              f"'{NOT_GIVEN}': the source gives no number for that recall."]
    footnote = subset_footnote([e["subset"] for e in comparison if e.get("subset")])
    if footnote:
        lines.append(footnote.rstrip("\n").replace("*", "\\*"))
    skipped = [e for e in comparison if e.get("skipped")]
    if skipped:
        lines += ["", "Skipped (`skip_missing=true`: the data is not here; not evaluated, not counted):", ""]
        lines += [f"- {e['benchmark']}: {e['skipped']}" for e in skipped]
    if not_run:
        lines += ["", "Paper benchmarks not evaluated here: " + ", ".join(n.replace("*", "\\*") for n in not_run) + "."]
    lines += _sources_lines(refs or {})
    return "\n".join(lines) + "\n"


# --- paper table --------------------------------------------------------------------------------

def _one_setting(measured: pd.DataFrame) -> pd.DataFrame:
    """The rows of one setting, or an error listing the settings the rows hold (a paper table compares
    one model; averaging several would print a number nobody trained)."""
    settings = _settings(measured)
    if settings.nunique() <= 1:
        return measured
    keys = config_keys(measured)
    names = []
    for setting, part in measured.groupby(settings, sort=False):
        first = part.iloc[0]
        label = ", ".join(f"{k}={first[k]}" for k in keys if str(first[k]) not in ("-", "nan", "None"))
        if "model" in part.columns and isinstance(first.get("model"), str):
            label = f"model={first['model']}" + (f", {label}" if label else "")
        names.append(label or str(setting))
    raise ValueError(
        f"the runs hold {len(names)} different settings, and a paper table shows one: "
        + "; ".join(f"[{n}]" for n in names)
        + ". Choose one with --where KEY=VALUE (e.g. --where model=<name>), or pass a folder holding only its runs"
    )


def paper_table(measured: pd.DataFrame | Sequence[dict], model: str = "boq_resnet50", ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """Every published benchmark of ``model`` (a BoQ paper model, or any published model name: see
    :func:`published_rows_for`): paper R@k, ours (mean over the seeds of one setting; rows of several
    settings are an error) and ours - paper. Measured benchmarks with no published number are appended
    with empty paper cells. ``n``: runs averaged per benchmark; ``subset``: why a benchmark's numbers are
    not the published protocol's (other image counts), else empty; ``published``: the source as ``[n]``
    (``attrs["sources"]`` numbers them) or "no published number"."""
    measured = pd.DataFrame(list(measured)) if not isinstance(measured, pd.DataFrame) else measured
    _, published = published_rows_for(model, what="--model")
    if not published and _is_boq_paper(model):
        raise ValueError(f"the paper has no results for {model!r}; use one of boq_resnet50, boq_dinov2")
    refs = source_references(published)
    ours: dict[str, dict[str, float]] = {}
    if len(measured) and "benchmark" in measured.columns:
        measured = _one_setting(measured[measured["benchmark"].notna()])
        for bench, part in measured.groupby("benchmark"):
            name = paper_benchmark(str(bench)) or str(bench)
            ours[name] = {f"R@{k}": pd.to_numeric(part[f"R@{k}"], errors="coerce").mean()
                          for k in ks if f"R@{k}" in part.columns}
            ours[name]["n"] = len(part)
            notes = [n for n in dict.fromkeys(subset_note(r) for r in part.to_dict("records")) if n]
            ours[name]["subset"] = "\n".join(notes) or None
    rows = []
    for paper in published:
        name = paper["benchmark"]
        row: dict[str, Any] = {"benchmark": name}
        for k in ks:
            theirs, mine = paper[f"R@{k}"], ours.get(name, {}).get(f"R@{k}")
            row[f"paper R@{k}"] = theirs
            row[f"ours R@{k}"] = mine
            row[f"Δ R@{k}"] = mine - theirs if mine is not None and theirs is not None and not math.isnan(mine) else None
        row["n"] = ours.get(name, {}).get("n")
        row["subset"] = ours.get(name, {}).get("subset")
        row["published"] = _reference(paper, refs)
        rows.append(row)
    for name, values in ours.items():
        if not any(r["benchmark"] == name for r in rows):
            rows.append({"benchmark": name, **{f"ours R@{k}": values.get(f"R@{k}") for k in ks}, "n": values.get("n"),
                         "subset": values.get("subset"), "published": NO_PUBLISHED})
    columns = ["benchmark", *[f"{what} R@{k}" for k in ks for what in ("paper", "ours", "Δ")], "n", "subset", "published"]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["sources"] = refs
    return table


def _cell_text(record: dict, column: str) -> str:
    """A paper-table cell: paper numbers as :func:`_paper_text` (a published row's missing recall: "not
    given"; no published row: empty), differences empty without a paper number, ours '-' when not measured."""
    value = record.get(column)
    has = record.get("published") not in (None, NO_PUBLISHED) and not pd.isna(record.get("published"))
    if column.startswith("paper"):
        return _paper_text(None if pd.isna(value) else value, has)
    if column.startswith("Δ"):  # "Δ R@k" -> "paper R@k"
        theirs = record.get("paper" + column[1:])
        return "" if theirs is None or pd.isna(theirs) else number_text(None if pd.isna(value) else value, sign=True)
    return number_text(None if pd.isna(value) else value)


def _text_of(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def paper_latex(table: pd.DataFrame, caption: str, label: str = "tab:boq-paper") -> str:
    """A booktabs table; '-' where a measured number is missing, "not given" where the source gives no
    published number for that recall, the source as [n] (named in the caption) or "no published
    number"; measured cells of a subset marked with a dagger and named in the caption."""
    columns = [c for c in table.columns if c not in ("n", "subset")]
    header = " & ".join(c.replace("Δ", r"$\Delta$").replace("@", "@") for c in columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(columns) - 2) + "l}",
             r"\toprule", header + r" \\", r"\midrule"]
    for record in table.to_dict("records"):
        cells = [str(record["benchmark"]).replace("*", r"$^*$").replace("_", r"\_")]
        dagger = r"$^\dagger$" if _text_of(record.get("subset")) else ""
        cells += [_text_of(record.get(c)) if c == "published" else
                  _cell_text(record, c) + (dagger if c.startswith("ours") and not pd.isna(record.get(c)) else "")
                  for c in columns[1:]]
        lines.append(" & ".join(cells) + r" \\")
    notes = [n for r in table.to_dict("records") for n in _text_of(r.get("subset")).split("\n") if n]
    if notes:
        caption += (r" $^\dagger$Not the published benchmark (other image counts; not comparable with the paper): "
                    + "; ".join(n.replace("_", r"\_") for n in notes) + ".")
    refs = table.attrs.get("sources") or {}
    if refs:
        caption += " Published: " + "; ".join(f"[{n}] " + latex_escape(source) for source, n in refs.items()) + "."
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _measured_by(runs: pd.DataFrame) -> list[str]:
    """What 'ours' is: the evaluated weights (evaluate.py rows) or the training runs, and the epoch rule."""
    lines = []
    data = runs[runs["benchmark"].notna()] if "benchmark" in runs.columns else runs
    if "checkpoint_hash" in data.columns and data["checkpoint_hash"].notna().any():
        first = data[data["checkpoint_hash"].notna()].iloc[0]
        parts = [f"`{first[k]}`" if k == "model" else f"{k} {first[k]}" for k in ("model", "checkpoint_hash", "image_size", "protocol", "precision")
                 if k in data.columns and not pd.isna(first.get(k))]
        lines.append("Ours: " + ", ".join(parts) + ".")
    elif "job" in data.columns and len(data):
        lines.append("Ours: training runs " + ", ".join(f"`{j}`" for j in sorted(data["job"].astype(str).unique())) + ".")
    statement = epoch_statement(data)
    if statement:
        lines.append(statement)
    return lines


def paper_model_of(runs: pd.DataFrame) -> str | None:
    """The published label of the released model that every row of ``runs`` evaluated: the paper model
    (``boq_resnet50`` / ``boq_dinov2``) for a BoQ release (evaluate.py ``pretrained=`` / the
    reproduce_boq_* recipes), the registry name for any other published model; None when a row has
    another model (a training run, a checkpoint) or the rows hold several."""
    if "model" not in runs.columns or runs["model"].isna().any() or not len(runs):
        return None
    found = set()
    for name in runs["model"].astype(str).unique():
        try:
            found.add(published_rows_for(name)[0])
        except ValueError:
            return None
    return found.pop() if len(found) == 1 else None


def paper_report(
    runs: pd.DataFrame | Sequence[dict], out_dir: str | Path, *, model: str | None = None, ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Path]:
    """``paper_<model>.md`` / ``.csv`` / ``.tex``: the published numbers of ``model`` next to the runs, with
    the source of each. ``model`` picks the published rows, never the runs (``--where`` does): None takes
    the model the runs evaluated (:func:`paper_model_of`: a BoQ release's paper model, or any other
    published model's name), else ``boq_resnet50``; a ``model`` that differs from the released model the
    runs evaluated is an error, since the table would set one model against another's published numbers."""
    runs = pd.DataFrame(list(runs)) if not isinstance(runs, pd.DataFrame) else runs
    evaluated = paper_model_of(runs[runs["benchmark"].notna()] if "benchmark" in runs.columns else runs)
    model = published_rows_for(model, what="--model")[0] if model else evaluated or "boq_resnet50"
    if evaluated and evaluated != model:
        names = ", ".join(sorted(runs["model"].astype(str).unique()))
        raise ValueError(f"--model {model}: the runs evaluated {names}, whose paper numbers are {evaluated}'s; pass "
                         f"--model {evaluated} (or leave --model out), or select other runs with --where")
    table = paper_table(runs, model=model, ks=ks)
    measured = table[[c for c in table.columns if c.startswith("ours")]].notna().any(axis=1).sum()
    whose = _whose(model)
    caption = (f"Recall@N (\\%) of {model.replace('_', '-')}: {whose} vs.\\ our runs ({measured} benchmarks measured); "
               f"{NOT_GIVEN}: the source gives no number for that recall; {NO_PUBLISHED}: none in the published-results file.")
    shown = [c for c in table.columns if c != "subset"]
    markdown_rows = []
    for record in table.to_dict("records"):
        mark = SUBSET_MARK if _text_of(record.get("subset")) else ""
        line = {}
        for k in shown:
            v = record.get(k)
            if k == "benchmark":
                line[k] = str(v).replace("*", "\\*")
            elif k == "n":
                line[k] = "-" if pd.isna(v) else str(int(v))
            elif k == "published":
                line[k] = _text_of(v)
            else:
                line[k] = _cell_text(record, k) + (mark if k.startswith("ours") and not pd.isna(v) else "")
        markdown_rows.append(line)
    notes = [n for r in table.to_dict("records") for n in _text_of(r.get("subset")).split("\n") if n]
    source = "the BoQ README rows of" if _is_boq_paper(model) else "the rows of"
    markdown = (
        f"# {'BoQ paper' if _is_boq_paper(model) else 'Published numbers'} vs measured ({model})\n\nPublished numbers: {source} "
        "`src/vprlab/resources/published_results.csv`, each with its source below. `-` = not measured here; "
        f"`{NOT_GIVEN}` = the source gives no number for that recall; `{NO_PUBLISHED}` = the file has none for that "
        "benchmark. Δ = ours - paper; ours = mean over the n runs of one setting (they differ in nothing but the seed).\n\n"
        + "".join(f"{line}\n\n" for line in _measured_by(runs))
        + markdown_table(markdown_rows, shown)
        + subset_footnote(notes).replace("*", "\\*")
        + "\n".join(_sources_lines(table.attrs.get("sources") or {})) + "\n"
    )
    out_dir = Path(out_dir)
    paths = _write(out_dir, f"paper_{model}", markdown, table)
    label = "tab:boq-paper" if _is_boq_paper(model) else f"tab:published-{model.replace('_', '-')}"
    paths["latex"] = atomic_write_text(out_dir / f"paper_{model}.tex", paper_latex(table, caption, label))
    return paths
