"""`vprlab compare`: several models (released names, vprlab checkpoints, or both) on several
benchmarks, into one table with each method's published numbers and the difference.

    vprlab compare --models boq_resnet50_16384 mine=outputs/train/runs/<run>/checkpoints/best.ckpt \\
                   --benchmarks pitts30k_test real_nordland64 [--weights NAME=PATH ...] [--out DIR]

A model is named in every table and plot by ``LABEL=`` when given (``mine=.../best.ckpt``), else by
its published name, by ``<run>/<checkpoint stem>`` for a checkpoint and by the file's stem for another
weights file; a published name with ``--weights`` of another file than the release's is named
``<name> (<file name>)``, so a fine-tuned copy never looks like the published model.

Every (model, benchmark) cell goes through the same steps as ``evaluate.py`` (same loader, same
eval transform, same descriptor cache and cache keys, same search and recall), so a cell equals what
``evaluate.py`` prints for that model and benchmark, and a second comparison (or an ``evaluate.py``
run before it) reads the descriptors from the cache instead of running the model.

Skip semantics: a benchmark whose data is not on disk, and a model whose weights file is missing (or
cannot be downloaded), are *skipped*: their cells are left empty, listed with the reason in the
table files and on the terminal, and never counted; every other cell is evaluated as usual. The
command exits 0 when at least one cell was evaluated (``--strict``: only when nothing was skipped).
A name that is neither a released model nor a file, or an unknown benchmark config, is an error.

Python (no Hydra)::

    from vprlab.commands.compare import compare_models
    from vprlab.data.benchmarks import load_benchmark
    from vprlab.reports.comparison import write_comparison
    from vprlab.evaluation.settings import EvalSettings

    bench = load_benchmark(format="gt_csv", root="../shared/data/real/nordland_64x32_seqslam", name="nordland64")
    result = compare_models(["boq_resnet50_16384", "run/checkpoints/best.ckpt"], [bench], EvalSettings(cache_dir="cache"))
    write_comparison(result, "comparison/")    # comparison.md / .csv / .tex / .png

Published numbers come from ``vprlab/resources/published_results.csv`` (one row per released model,
benchmark and source, with the source of every number; read by :func:`vprlab.reports.published.published_results`);
a benchmark is matched through the paper names of :data:`vprlab.reports.published.PAPER_BENCHMARKS` or
its config name. Where several sources give a model's numbers on a benchmark, the first row of the file
(the method's own README or repository) is compared with and the others are listed beside it; a cell
with no published row says "no published number". The table and plot writers are :mod:`vprlab.reports.comparison`'s; this module parses
the arguments, loads the models, evaluates and hands the rows to them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vprlab.commands.models import LoadedModel, load_model
from vprlab.evaluation.protocol import (
    check_unique_names,
    eval_size_for,
    run_benchmark,
    transform_for_settings,
)
from vprlab.evaluation.results import (
    markdown_table,
    subset_note,
)
from vprlab.evaluation.settings import EvalSettings
from vprlab.reports.comparison import (
    Comparison,
    Skipped,
    published_columns,
    table_rows,
    terminal_notes,
    write_comparison,
)
from vprlab.reports.published import PUBLISHED_RESULTS, published_results
from vprlab.utils.errors import ConfigError

log = logging.getLogger(__name__)

KS = (1, 5, 10, 20)


# ------------------------------------------------------------------------------------ models


def _released_names() -> tuple[set[str], Callable[[str], str]]:
    """The published model names (and aliases) of the registry, and the canonical name of one."""
    from vprlab.pretrained.catalog import (
        _PUBLISHED_ALIASES,
        PUBLISHED_MODELS,
        published_model,
    )

    return set(PUBLISHED_MODELS) | set(_PUBLISHED_ALIASES), lambda name: published_model(name).name


def is_released(source: str) -> bool:
    from vprlab.pretrained import is_published

    return is_published(source)


def load_compare_model(source: str, weights: str | Path | None = None, allow_unsafe_pickle: bool = False,
                       protocol: str | None = None) -> LoadedModel:
    """One ``--models`` item through the one evaluation loader (:func:`vprlab.commands.models.load_model`).

    ``source``: a released model name (weights from ``weights``, a local copy of its file, or the
    torch hub cache, downloaded once; each method with its own evaluation preprocessing), a vprlab checkpoint (``*.ckpt``, rebuilt from its stored
    config exactly as ``evaluate.py ckpt_path=...`` does), or another weights file in a release
    layout (architecture read off its keys). Names and hashes are those ``evaluate.py`` uses, so both
    share descriptor cache entries. ``protocol``: a released model's other named evaluation protocol
    (``vpr-methods-evaluation``), as ``evaluate.py pretrained.protocol=``."""
    if weights is not None and not is_released(source):
        raise ValueError(f"--weights {source}=...: {source!r} is not a released model name; only released names take a weights file")
    loaded = load_model(source if is_released(source) else str(Path(source).expanduser()), weights,
                        allow_unsafe_pickle=allow_unsafe_pickle, protocol=protocol if is_released(source) else None)
    from vprlab.pretrained import published_model

    if weights is not None and Path(weights).name != published_model(source).file_name:
        loaded.name = f"{loaded.name} ({Path(weights).name})"  # maybe fine-tuned: never shown as the published model itself
    return loaded


def missing_weights(source: str, weights: str | Path | None) -> str | None:
    """Why ``source`` cannot be loaded without trying (a file that is not there), or None.

    A released name without a local file is not reported here: its download is attempted (and a
    failure then skips it)."""
    if weights is not None and not Path(weights).expanduser().is_file():
        return f"weights file {str(weights)!r} not found"
    if is_released(source):
        from vprlab.pretrained import published_model

        spec = published_model(source)
        if weights is None and spec.url is None and not spec.local_path().is_file():
            return f"no local {spec.file_name} and no download URL; get it from {spec.manual_download}, then --weights {source}=PATH"
        return None
    path = Path(source).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(_released_names()[0]))
        if path.suffix or "/" in source or "\\" in source:
            return f"file {source!r} not found"
        raise ValueError(f"{source!r} is neither a released model ({names}) nor a file; check the name or the path")
    return None


# ------------------------------------------------------------------------------------ the comparison


@dataclass
class MissingBenchmark:
    """A benchmark that could not be built (no data here): its cells are skipped."""

    name: str
    reason: str


def split_label(item: str) -> tuple[str | None, str]:
    """``"mine=runs/x/best.ckpt"`` -> ``("mine", "runs/x/best.ckpt")``; an item that is a released name or
    an existing file, or whose part before the first ``=`` holds a path separator (a Hydra job folder
    such as ``multiruns/t/aggregator=gem/...``), has no label: ``(None, item)``."""
    label, sep, source = item.partition("=")
    if not sep or is_released(item) or Path(item).expanduser().exists() or "/" in label or "\\" in label or not label.strip():
        return None, item
    return label.strip(), source


def _model_spec(item: Any) -> tuple[str | None, str, str | None]:
    """(display label or None, source, weights) of one ``models`` item."""
    if isinstance(item, (tuple, list)):
        source, weights = item
        label, source = split_label(str(source))
        return label, source, None if weights is None else str(weights)
    label, source = split_label(str(item))
    return label, source, None


def compare_models(
    models: Sequence[str | tuple[str, str | None]],
    benchmarks: Sequence[Any],
    settings: EvalSettings,
    *,
    weights: dict[str, str] | None = None,
    published: str | Path | Sequence[dict] | None = None,
    allow_unsafe_pickle: bool = False,
) -> Comparison:
    """Evaluate every model on every benchmark (Hydra-free; the ``vprlab compare`` command builds the
    benchmarks from their configs and calls this).

    ``models``: released names or file paths, each optionally as ``LABEL=SOURCE`` (the name in every
    table and plot), or ``(source, weights path)`` pairs; ``weights`` maps a released name to a local
    copy of its file. ``benchmarks``: :class:`~vprlab.data.benchmark.Benchmark`
    values, or :class:`MissingBenchmark` for one that is not on disk (skipped and listed).
    ``settings``: how every cell is evaluated (:class:`~vprlab.evaluation.settings.EvalSettings`: device,
    batch size, precision, recall ks, search options; ``cache_dir``: the descriptor cache, evaluate.py's
    keys; None: no cache; the command builds it from evaluate.yaml's keys). One model is in memory at
    a time. ``settings.protocol``: every released model evaluated with that named protocol instead of
    its method's own preprocessing (checkpoints keep theirs). Returns the rows (one per evaluated cell, with the published numbers and differences) and
    the skipped cells with their reasons."""
    weights = dict(weights or {})
    specs = [_model_spec(m) for m in models]
    specs = [(label, source, w if w is not None else weights.get(source)) for label, source, w in specs]
    unknown = sorted(set(weights) - {s for _, s, _ in specs})
    if unknown:
        raise ValueError(f"weights given for {unknown}, which are not among the models {[s for _, s, _ in specs]}")
    labels = [label for label, _, _ in specs if label]
    if len(set(labels)) < len(labels):
        raise ValueError(f"--models: the labels {sorted({x for x in labels if labels.count(x) > 1})} are given to more than one "
                         "model; each LABEL= must name one model")
    present = [b for b in benchmarks if not isinstance(b, MissingBenchmark)]
    check_unique_names(present)
    ks = tuple(sorted(settings.ks))
    published_rows = published_results(published) if published is None or isinstance(published, (str, Path)) else list(published)

    skipped = [Skipped("*", b.name, b.reason) for b in benchmarks if isinstance(b, MissingBenchmark)]
    # Check every file before any model is loaded, so all missing ones are listed at once.
    runnable = []
    for label, source, w in specs:
        reason = missing_weights(source, w)
        if reason:
            skipped.append(Skipped(label or source, "*", reason))
        else:
            runnable.append((label, source, w))

    rows: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for label, source, w in runnable:
        if not present:
            break
        try:
            loaded = load_compare_model(source, w, allow_unsafe_pickle, settings.protocol)
        except (RuntimeError, FileNotFoundError) as err:  # a release that could not be downloaded
            if "could not download" not in str(err) and "cannot be downloaded" not in str(err):
                raise
            reason = str(err).split(". ")[0]
            skipped.append(Skipped(label or source, "*", f"{reason}; give a local copy with --weights {source}=PATH"))
            continue
        name = label or loaded.name
        if name in names:
            raise ValueError(f"--models: {names[name]!r} and {source!r} would both be called {name!r} in the tables; "
                             f"name them with LABEL=, e.g. --models a={names[name]} b={source}")
        names[name] = source
        model = settings.prepare_model(loaded.model.eval())  # as evaluate.py: device, folded BatchNorm, NHWC
        transform_for = transform_for_settings(model, settings)
        for bench in present:
            size = eval_size_for(model, bench.image_size)  # None: the method's native size
            run = run_benchmark(model, bench, settings, transform_for, loaded.weights_hash)
            metrics = run.metrics
            row: dict[str, Any] = {
                "model": name, "source": source, "kind": loaded.kind, "checkpoint_hash": loaded.weights_hash,
                "benchmark": bench.name, "image_size": "native" if size is None else "x".join(str(v) for v in size),
                "descriptor_dim": int(metrics["descriptor_dim"]),
                "num_queries": metrics["num_queries"], "num_db": metrics["num_db"],
                "expected_num_queries": getattr(bench, "expected_num_queries", None),
                "expected_num_db": getattr(bench, "expected_num_db", None),
            }
            row["subset"] = subset_note(row)
            row.update({f"R@{k}": metrics.get(f"R@{k}") for k in ks})
            row.update(published_columns(published_rows, loaded.published_key, bench.name, row, ks))
            row["img_per_s"] = metrics["extract_img_per_s"]
            row["speed measured"] = "first run (cache)" if run.descriptors.from_cache else "this run"
            row["from_cache"] = bool(run.descriptors.from_cache)
            rows.append(row)
        del model, loaded
    notes = []
    if any(r["from_cache"] for r in rows):
        notes.append("img/s of a cached cell is that of the run that filled the cache (its device and batch size)")
    source = PUBLISHED_RESULTS if published is None else str(published) if isinstance(published, (str, Path)) else "the given rows"
    return Comparison(rows, skipped, ks, str(settings.device), source, notes)


# ------------------------------------------------------------------------------------ the command


def build_named_benchmarks(names: Sequence[str], overrides: Sequence[str] = ()) -> tuple[list[Any], Any]:
    """Benchmarks from their configs (conf/benchmark/<name>.yaml, composed with evaluate.yaml so the
    paths group and ``overrides`` apply), and that composed config (device, batch size, cache...).
    A benchmark whose data is missing becomes a :class:`MissingBenchmark`."""
    from hydra import compose, initialize_config_dir

    from vprlab.commands.cli import repo_conf_dir
    from vprlab.utils.instantiate import build

    conf = repo_conf_dir()
    unknown = [n for n in names if not (conf / "benchmark" / f"{n}.yaml").is_file()]
    if unknown:
        known = sorted(p.stem for p in (conf / "benchmark").glob("*.yaml"))
        raise ValueError(f"unknown benchmark {unknown}: no conf/benchmark/<name>.yaml; known: {', '.join(known)}")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"benchmark=[{','.join(names)}]", "paths.output_dir=.", *overrides])
    out: list[Any] = []
    for name in names:
        try:
            out.append(build(cfg.benchmark[name]))
        except Exception as err:  # noqa: BLE001 - Hydra wraps the reader's error; only missing data is a skip
            cause = err if isinstance(err, OSError) else err.__cause__
            if not isinstance(cause, (FileNotFoundError, NotADirectoryError)):
                raise
            out.append(MissingBenchmark(name, str(cause)))
    return out, cfg


def _parse_weights(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--weights {item!r}: write NAME=PATH, e.g. boq_resnet50_16384=/data/resnet50_16384.pth")
        name, path = item.split("=", 1)
        out[name] = path
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vprlab compare",
        description="Evaluate released models and/or vprlab checkpoints on benchmarks into one table "
                    "(Markdown, CSV, LaTeX, plot) with the published numbers and the differences.",
    )
    parser.add_argument("--models", nargs="+", required=True, metavar="[LABEL=]MODEL",
                        help="released names (vprlab models list) and/or .ckpt / weights files; LABEL= names one in every "
                             "table and plot (mine=outputs/train/runs/<run>/checkpoints/best.ckpt)")
    parser.add_argument("--benchmarks", nargs="+", required=True, help="benchmark config names (vprlab benchmarks)")
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=PATH", help="a local copy of a released model's file")
    parser.add_argument("--out", default="outputs/compare", help="folder for comparison.md/.csv/.tex/.png (default: outputs/compare)")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="evaluate.yaml overrides: device=cpu batch_size=16 cache_dir=... benchmark.<name>.image_size=[96,96] ...")
    parser.add_argument("--published", default=None, help="a published-results CSV instead of vprlab's")
    parser.add_argument("--no-cache", action="store_true", help="extract every descriptor again (fresh speed numbers)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything was skipped")
    parser.add_argument("--allow-unsafe-pickle", action="store_true", help="read trusted files that need the full unpickler")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        weights = _parse_weights(args.weights)
        benchmarks, cfg = build_named_benchmarks(args.benchmarks, args.override)
        start = time.perf_counter()
        settings = EvalSettings.from_eval_config(cfg)  # evaluate.yaml's keys, as evaluate.py reads them
        if args.no_cache:
            settings = settings.replace(cache_dir=None)
        result = compare_models(args.models, benchmarks, settings, weights=weights, published=args.published,
                                allow_unsafe_pickle=args.allow_unsafe_pickle)
    except (ValueError, FileNotFoundError) as err:
        print(f"vprlab compare: {err}", file=sys.stderr)
        return 2
    paths = write_comparison(result, args.out, command=" ".join(["vprlab compare", *argv]))
    print(markdown_table(table_rows(result)) if result.rows else "no cell evaluated")
    for line in terminal_notes(result):
        print(line)
    print(f"{len(result.rows)} cells in {time.perf_counter() - start:.1f} s; wrote " + "  ".join(str(p) for p in paths.values()))
    if not result.rows or (args.strict and result.skipped):
        return 1
    return 0
