"""`vprlab leaderboard`: every published model whose weights are on disk, on every benchmark whose data
is here and complete, in one ranked table with the published numbers beside the measured ones.

    vprlab leaderboard [--data-dir DIR] [--benchmarks B ...] [--models NAME ...] [--weights NAME=PATH ...]
                       [--weights-dir DIR ...] [--stand-ins] [--protocol P] [--cache DIR] [--out DIR]

What is found, and what is skipped (listed with the reason on the terminal and in every output file):

- **models**: every name of the registry (``vprlab models list``; ``--models`` picks some) whose file
  is here: ``--weights NAME=PATH``, a file named like the release in a ``--weights-dir`` folder (or
  in its ``<cache_dir>/`` sub-folder, a hub-dir layout), or ``PublishedModel.local_path()`` in the
  torch hub cache. Nothing is downloaded (``vprlab models download NAME`` does that); a model with
  no file is skipped ("no weights on disk"), and with ``--protocol`` one without that protocol.
- **benchmarks**: every ``conf/benchmark`` config (``--benchmarks`` picks some), resolved as
  ``evaluate.py`` and ``vprlab benchmarks`` resolve them (``paths.data_dir`` = ``--data-dir``): one
  whose root is missing, whose lists cannot be read, whose image counts differ from the published ones
  (incomplete; ``--allow-incomplete`` keeps it, marked †) or that has no ground truth (MSLS challenge)
  is skipped.

Every (model, benchmark) cell is evaluated by :func:`vprlab.commands.compare.compare_models` (the
pipeline of ``evaluate.py``: each model with its own evaluation preprocessing, or ``--protocol``'s),
all with one descriptor cache (``--cache``, default evaluate.yaml's ``cache_dir``), so a second run
reads every descriptor instead of extracting it. The tables and plots are written by
:mod:`vprlab.reports.leaderboard`.

``--stand-ins`` evaluates random stand-in weights instead (offline demos, CI): for each ``--models``
name a seeded random file in the release's own layout is written into a temporary hub dir
(:func:`vprlab.pretrained.standins.write_random_release`) and loaded like the real file; every such
row is named ``NAME (random stand-in)``, the caption says the weights are not the published models,
and no difference with the published numbers is computed.

Exit status: 0 when at least one cell was evaluated, 1 when none was (nothing found), 2 for a mistake
(an unknown model or benchmark name, ``--weights`` for a model not asked for, ``--stand-ins`` without
``--models``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vprlab.commands.benchmarks import default_data_dir
from vprlab.commands.compare import _parse_weights, compare_models
from vprlab.evaluation.settings import EvalSettings
from vprlab.reports.comparison import Comparison, Skipped, skipped_lines, terminal_notes
from vprlab.reports.leaderboard import RELEASED, STAND_IN, leaderboard_table, write_leaderboard
from vprlab.reports.published import PUBLISHED_RESULTS
from vprlab.utils.errors import ConfigError, MissingFileError, UserError


@dataclass
class FoundModel:
    """A published model to evaluate: its registry name, the file to load and whether that file is a
    random stand-in (written by the command, not the release)."""

    name: str
    path: Path | None  # None for a stand-in not written yet
    stand_in: bool = False


# ------------------------------------------------------------------------------------ discovery


def find_models(
    names: Sequence[str] | None = None,
    weights: dict[str, str] | None = None,
    weights_dirs: Sequence[str | Path] = (),
    *,
    stand_ins: bool = False,
    protocol: str | None = None,
) -> tuple[list[FoundModel], list[Skipped]]:
    """The published models to evaluate and those skipped, with the reason.

    ``names``: registry names or aliases (None: every registered model, in registry order);
    ``weights``: name -> a local copy of its file; ``weights_dirs``: folders holding release files by
    their release names (directly or in a ``<cache_dir>/`` sub-folder); otherwise the torch hub cache
    (``PublishedModel.local_path()``). ``stand_ins``: every named model gets a stand-in (needs
    ``names``; a family that cannot write its layout is skipped)."""
    from vprlab.pretrained.catalog import PUBLISHED_MODELS, is_published, published_model
    from vprlab.pretrained.standins import standin_reason

    if stand_ins and not names:
        raise ConfigError("--stand-ins writes random weights for the models you name: add --models NAME ... "
                          "(vprlab models list shows the names), e.g. --models cosplace_resnet18_512 mixvpr_resnet50_512")
    unknown = [n for n in (names or []) if not is_published(n)]
    if unknown:
        raise ConfigError(f"--models {' '.join(unknown)}: not a published model name; the leaderboard ranks published "
                          f"models only (vprlab compare takes checkpoints). Known: {', '.join(PUBLISHED_MODELS)}")
    specs = list(dict.fromkeys(published_model(n) for n in names)) if names else list(PUBLISHED_MODELS.values())
    weights = {published_model(k).name if is_published(k) else k: v for k, v in (weights or {}).items()}
    stray = sorted(set(weights) - {s.name for s in specs})
    if stray:
        raise ConfigError(f"--weights given for {', '.join(stray)}, which is not among the models to rank "
                          f"({'--models ' + ' '.join(s.name for s in specs) if names else 'not a published name'})")
    if stand_ins and weights:
        raise ConfigError("--stand-ins and --weights exclude each other: stand-ins are random files written by the command")
    dirs = [Path(d).expanduser() for d in weights_dirs]
    for folder in dirs:
        if not folder.is_dir():
            raise MissingFileError(f"--weights-dir {folder}: no such folder; give the folder that holds the release files")

    found: list[FoundModel] = []
    skipped: list[Skipped] = []
    for spec in specs:
        if protocol not in (None, "", "original") and protocol not in spec.protocols:
            skipped.append(Skipped(spec.name, "*", f"no {protocol!r} protocol (has: original"
                                   + "".join(f", {p}" for p in sorted(spec.protocols)) + ")"))
            continue
        if stand_ins:
            reason = standin_reason(spec)
            if reason:
                skipped.append(Skipped(spec.name, "*", reason))
            else:
                found.append(FoundModel(spec.name, None, stand_in=True))
            continue
        if spec.name in weights:
            path = Path(weights[spec.name]).expanduser()
            if path.is_file():
                found.append(FoundModel(spec.name, path))
            else:
                skipped.append(Skipped(spec.name, "*", f"weights file {str(path)!r} not found"))
            continue
        candidates = [d / sub / file for d in dirs for sub in ("", spec.cache_dir)
                      for file in dict.fromkeys((spec.file_name, spec.download_name))]
        candidates.append(spec.local_path())
        path = next((c for c in candidates if c.is_file()), None)
        if path is not None:
            found.append(FoundModel(spec.name, path))
            continue
        where = f"{spec.local_path()}" + "".join(f" or {d}/" for d in dirs)
        how = f"vprlab models download {spec.name}" if spec.url else f"get it from {spec.manual_download}"
        skipped.append(Skipped(spec.name, "*", f"no weights on disk: no {spec.file_name} at {where}; {how}, "
                               f"or --weights {spec.name}=PATH"))
    return found, skipped


def find_benchmarks(
    names: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    allow_incomplete: bool = False,
) -> tuple[list[Any], list[Skipped], Any]:
    """The benchmarks whose data is here and complete (built from their configs, composed with
    evaluate.yaml as evaluate.py composes them; ``data_dir``: ``paths.data_dir``, default as
    ``vprlab benchmarks``), the skipped ones with the reason, and the composed config (device, batch
    size, cache...). ``names``: config names (None: every ``conf/benchmark`` config)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vprlab.commands.cli import repo_conf_dir
    from vprlab.data.benchmark import BenchmarkCountWarning
    from vprlab.utils.instantiate import build

    conf = repo_conf_dir()
    known = sorted(p.stem for p in (conf / "benchmark").glob("*.yaml"))
    names = list(dict.fromkeys(names)) if names else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--benchmarks {' '.join(unknown)}: no conf/benchmark/<name>.yaml; known: {', '.join(known)}")
    data_dir = default_data_dir() if data_dir is None else str(data_dir)
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"benchmark=[{','.join(names)}]", "paths.output_dir=.",
                                                 f"paths.data_dir={data_dir}", *overrides])
    except HydraException as err:
        raise ConfigError(f"--override {' '.join(overrides)}: {str(err).splitlines()[0]} (a benchmark.<name>.<key> override "
                          "needs <name> among --benchmarks; other keys are evaluate.yaml's)") from err
    present: list[Any] = []
    skipped: list[Skipped] = []
    for name in names:
        node = cfg.benchmark[name]
        try:
            root = OmegaConf.select(node, "root", throw_on_missing=False, default=None)
        except Exception as error:  # noqa: BLE001 - an interpolation that cannot resolve (an unset variable)
            skipped.append(Skipped("*", name, f"unreadable: its root does not resolve ({str(error).splitlines()[0]})"))
            continue
        if root is not None and not Path(str(root)).exists():
            skipped.append(Skipped("*", name, f"missing: no data at {root} (vprlab benchmarks; vprlab data list)"))
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", BenchmarkCountWarning)
                bench = build(node)
        except Exception as error:  # noqa: BLE001 - any failure to read a benchmark is a reason to skip it
            cause = error.__cause__ or error
            what = "missing" if isinstance(cause, (FileNotFoundError, NotADirectoryError)) else "unreadable"
            skipped.append(Skipped("*", name, f"{what}: {type(cause).__name__}: {str(cause).split(';')[0]}"))
            continue
        counts = [w for w in caught if issubclass(w.category, BenchmarkCountWarning)]
        if not getattr(bench, "has_ground_truth", True):
            skipped.append(Skipped("*", name, "no ground truth here (scored on a server): no recall to rank"))
        elif counts and not allow_incomplete:
            skipped.append(Skipped("*", name, f"incomplete: {bench.num_db} db / {bench.num_queries} queries, "
                                   f"published {getattr(bench, 'expected_num_db', '?')} / {getattr(bench, 'expected_num_queries', '?')} "
                                   "(vprlab data verify; --allow-incomplete ranks it anyway, marked †)"))
        else:
            present.append(bench)
    return present, skipped, cfg


# ------------------------------------------------------------------------------------ evaluation


def stand_in_label(name: str, protocol: str | None = None) -> str:
    from vprlab.pretrained.load import display_name

    return f"{display_name(name, protocol)} ({STAND_IN})"


def rank_models(
    models: Sequence[FoundModel],
    benchmarks: Sequence[Any],
    settings: EvalSettings,
    skipped: Sequence[Skipped] = (),
    *,
    protocol: str | None = None,
    published: str | Path | None = None,
    stand_in_dir: str | Path | None = None,
) -> Comparison:
    """Evaluate every model on every benchmark (one model in memory at a time; every cell through
    :func:`~vprlab.commands.compare.compare_models`, with ``settings.cache_dir`` as the one descriptor
    cache) and return the comparison, ``skipped`` listed first. Stand-ins (``FoundModel.stand_in``)
    are written into ``stand_in_dir`` (a hub-dir layout; default: a temporary folder removed
    afterwards), named ``NAME (random stand-in)`` and get no difference with the published numbers."""
    from vprlab.pretrained.standins import write_random_release

    with tempfile.TemporaryDirectory(prefix="vprlab-stand-ins-") as tmp:
        hub = Path(stand_in_dir) if stand_in_dir is not None else Path(tmp)
        items, labels = [], {}
        for model in models:
            if model.stand_in:
                label = stand_in_label(model.name, protocol)
                labels[label] = model.name
                items.append((f"{label}={model.name}", str(write_random_release(model.name, hub, hub_layout=True))))
            else:
                items.append((model.name, str(model.path)))
        source = PUBLISHED_RESULTS if published is None else str(published)
        result = Comparison([], [], tuple(sorted(settings.ks)), str(settings.device), source, [])
        for item in items:  # one model at a time: a model that cannot run on a benchmark skips that cell only
            for part in _evaluate_model(item, benchmarks, settings, published, protocol):
                result.rows += part.rows
                result.skipped += part.skipped
                result.notes += [n for n in part.notes if n not in result.notes]
    for row in result.rows:
        row["weights"] = STAND_IN if row["model"] in labels else RELEASED
        if row["weights"] == STAND_IN:  # the published numbers are the real model's: never a difference
            for key in [k for k in row if k.startswith("diff R@")]:
                row[key] = None
    result.skipped = [*skipped, *result.skipped]
    return result


def _evaluate_model(item: tuple[str, str], benchmarks: Sequence[Any], settings: EvalSettings,
                    published: str | Path | None, protocol: str | None) -> list[Comparison]:
    """One model on every benchmark; when a benchmark refuses it (a ViT at an image size that is not a
    multiple of its patch, SALAD at an image too small for its clusters: a UserError / ValueError), each
    benchmark again on its own, the refused cells skipped with the message."""
    try:
        return [compare_models([item], benchmarks, settings.replace(protocol=protocol), published=published)]
    except (UserError, ValueError):
        pass
    parts = []
    for bench in benchmarks:
        try:
            parts.append(compare_models([item], [bench], settings.replace(protocol=protocol), published=published))
        except (UserError, ValueError) as err:
            label = item[0].split("=", 1)[0]
            parts.append(Comparison([], [Skipped(label, bench.name, f"refused: {str(err).splitlines()[0]}")],
                                    tuple(settings.ks), str(settings.device), "", []))
    return parts


# ------------------------------------------------------------------------------------ the command


def _plan_lines(models: Sequence[FoundModel], benchmarks: Sequence[Any]) -> list[str]:
    lines = [f"model {m.name}: {'random stand-in (written at run time)' if m.stand_in else m.path}" for m in models]
    lines += [f"benchmark {b.name}: {b.num_db} db / {b.num_queries} queries" for b in benchmarks]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vprlab leaderboard",
        description="Every published model whose weights are on disk on every benchmark whose data is here, in one "
                    "ranked table (Markdown, CSV, LaTeX) with the published numbers and the differences, and plots of "
                    "R@1 against descriptor size and speed. Skipped models and benchmarks are listed with the reason.",
    )
    parser.add_argument("--data-dir", default=None,
                        help="paths.data_dir the benchmark roots resolve against (default: $VPRLAB_DATA_DIR, else $VPRLAB_ROOT/data or data)")
    parser.add_argument("--benchmarks", nargs="+", default=None, metavar="NAME",
                        help="benchmark config names (vprlab benchmarks); default: every config whose data is here")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="published names (vprlab models list); default: every registered model whose file is here")
    parser.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH", help="a local copy of a published model's file")
    parser.add_argument("--weights-dir", nargs="+", default=[], metavar="DIR",
                        help="folders holding release files under their release names (also DIR/<cache_dir>/, a torch hub dir layout)")
    parser.add_argument("--stand-ins", action="store_true",
                        help="evaluate random stand-in weights in each release's layout for the --models (demos, offline); "
                             "labelled as such, never compared with the published numbers")
    parser.add_argument("--protocol", default=None,
                        help="evaluate every model with this named protocol (e.g. vpr-methods-evaluation) instead of its own "
                             "preprocessing; models without it are skipped")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="rank benchmarks whose image counts differ from the published ones too (marked †)")
    parser.add_argument("--cache", default=None, metavar="DIR", help="the descriptor cache (default: evaluate.yaml's cache_dir)")
    parser.add_argument("--no-cache", action="store_true", help="extract every descriptor again (fresh speed numbers)")
    parser.add_argument("--out", default="outputs/leaderboard", help="folder for leaderboard.md/.csv/.tex and the plots (default: outputs/leaderboard)")
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="evaluate.yaml overrides: device=cpu batch_size=16 benchmark.<name>.image_size=[32,64] ...")
    parser.add_argument("--published", default=None, help="a published-results CSV instead of vprlab's")
    parser.add_argument("--dry-run", action="store_true", help="list what would be evaluated and what is skipped; evaluate nothing")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.cache and args.no_cache:
        raise ConfigError("--cache and --no-cache exclude each other")
    if args.published and not Path(args.published).is_file():
        raise MissingFileError(f"--published {args.published}: no such file")
    start = time.perf_counter()
    models, skipped_models = find_models(args.models, _parse_weights(args.weights), args.weights_dir,
                                         stand_ins=args.stand_ins, protocol=args.protocol)
    benchmarks, skipped_benchmarks, cfg = find_benchmarks(args.benchmarks, args.data_dir, args.override,
                                                          allow_incomplete=args.allow_incomplete)
    skipped = [*skipped_benchmarks, *skipped_models]
    if args.dry_run:
        plan = Comparison([], skipped, (), "", "")
        for line in _plan_lines(models, benchmarks) + [f"skipped: {line}" for line in skipped_lines(plan)]:
            print(line)
        return 0 if models and benchmarks else 1
    settings = EvalSettings.from_eval_config(cfg)  # evaluate.yaml's keys, as evaluate.py reads them
    if args.no_cache:
        settings = settings.replace(cache_dir=None)
    elif args.cache:
        settings = settings.replace(cache_dir=str(Path(args.cache).expanduser()))
    result = rank_models(models, benchmarks if models else [], settings, skipped, protocol=args.protocol,
                         published=args.published)
    paths = write_leaderboard(result, args.out, command=" ".join(["vprlab leaderboard", *argv]))
    table = leaderboard_table(result)
    if table:
        from vprlab.evaluation.results import markdown_table

        print(markdown_table(table, list(table[0])))
    else:
        print("no cell evaluated: " + ("no model has weights on disk" if not models else "no benchmark data is here"))
    for line in terminal_notes(result):
        print(line)
    print(f"{len(result.rows)} cells ({len({r['model'] for r in result.rows})} models x "
          f"{len({r['benchmark'] for r in result.rows})} benchmarks) in {time.perf_counter() - start:.1f} s; wrote "
          + "  ".join(str(p) for p in paths.values()))
    return 0 if result.rows else 1
