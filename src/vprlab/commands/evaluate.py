"""What evaluate.py runs: load the model (a vprlab checkpoint, a bare weights file, a released
model or the configured architecture untrained), evaluate every selected benchmark with its own
eval transform at each benchmark's size (descriptors cached by weights, benchmark, size and
transform), print the table, write results.csv / .json / .md next to the run, and the MSLS
challenge predictions, pictures and paper comparison when asked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from vprlab.commands.benchmarks import benchmark_hint
from vprlab.commands.models import configured_name, load_model
from vprlab.config.composition import check_component_keys
from vprlab.engine.resume import refuse_overrides
from vprlab.evaluation.protocol import (
    check_unique_names,
    eval_size_for,
    log_metrics,
    run_benchmark,
    transform_for_settings,
)
from vprlab.evaluation.results import (
    benchmark_counts,
    print_recall_table,
    read_results,
    write_results,
)
from vprlab.evaluation.settings import EvalSettings
from vprlab.evaluation.visualize import PictureSettings
from vprlab.models.vpr_model import VPRModel
from vprlab.utils.config import command_line_overrides
from vprlab.utils.errors import ConfigError, MissingFileError
from vprlab.utils.images import as_hw
from vprlab.utils.instantiate import build

log = logging.getLogger(__name__)


def load_model_for_eval(cfg: DictConfig) -> tuple[VPRModel, str, str]:
    """The model evaluate.py evaluates, its display name and a hash of its weights, from evaluate.yaml's keys
    (the one loader, :func:`vprlab.commands.models.load_model`, does the loading).

    From a vprlab checkpoint (``ckpt_path``) the model is rebuilt from the config stored in it (so the
    evaluate.yaml backbone/aggregator groups are ignored); otherwise from those groups, with weights from
    ``weights_path`` or, with a warning, untrained. ``pretrained=<name>`` selects a published model
    instead (any `vprlab models list` name) (``pretrained.path``: a local copy of its file).
    """
    allow = bool(cfg.allow_unsafe_pickle)
    if cfg.get("pretrained"):
        if cfg.get("ckpt_path") or cfg.get("weights_path"):
            raise ConfigError("pretrained= and ckpt_path=/weights_path= both name the weights; set only one of them")
        loaded = load_model(cfg.pretrained.name, cfg.pretrained.get("path"), protocol=cfg.pretrained.get("protocol"),
                            allow_unsafe_pickle=allow)
    elif cfg.get("ckpt_path"):
        loaded = load_model(str(cfg.ckpt_path), kind="checkpoint", allow_unsafe_pickle=allow)
    else:
        loaded = load_model(cfg.get("weights_path"), architecture=cfg, allow_unsafe_pickle=allow)
    return loaded.model, loaded.name, loaded.weights_hash


# The keys that describe the model: with ckpt_path= or pretrained= the file's own architecture is built,
# so a value given for one of them would be recorded in the run's config without being used.
MODEL_KEYS = ("backbone", "backbone.", "aggregator", "aggregator.")


def refuse_unused_model_overrides(cfg: DictConfig, overrides: Sequence[str] | None) -> None:
    """Before anything is loaded: with ``ckpt_path=`` (the stored model) or ``pretrained=`` (the released
    architecture), a command-line override of the backbone or aggregator (``aggregator=gem``,
    ``aggregator.num_queries=64``, ``backbone.eval_image_size=...``) would be ignored while the run's
    ``.hydra/config.yaml`` records it; it is refused, naming it. ``overrides``: the command line's
    (:func:`command_line_overrides`; None outside Hydra: nothing to check). Overrides of what evaluation
    does (benchmarks and their image sizes, batch size, device, precision...) stay allowed."""
    if cfg.get("ckpt_path") and cfg.get("weights_path"):
        raise ConfigError("ckpt_path= and weights_path= both name the weights; set only one of them")
    sizes = "to evaluate at another image size, set benchmark.<name>.image_size=[H,W]"
    if cfg.get("ckpt_path"):
        refuse_overrides(
            overrides, MODEL_KEYS, f"ckpt_path={cfg.ckpt_path} evaluates the model stored in the checkpoint (its "
            "backbone and aggregator, as trained)",
            f"Drop them; {sizes}; to evaluate another model, pass its own checkpoint, or weights_path= with "
            "backbone=/aggregator= (without ckpt_path)",
        )
    elif cfg.get("pretrained") and cfg.pretrained.get("name"):
        name = cfg.pretrained.name
        refuse_overrides(
            overrides, MODEL_KEYS, f"pretrained={name} evaluates the released architecture of {name}",
            f"Drop them; {sizes} (or pretrained.protocol=...); to train a variant of it, use "
            f"`python train.py pretrained={name} backbone.KEY=VALUE ...`",
        )


def _size_text(size: Any) -> str:
    if size is None:
        return "native"
    return "x".join(str(int(v)) for v in as_hw(size))


def _write_submission(cfg: DictConfig, benchmark: Any, run: Any, name: str, weights_hash: str) -> list[Path]:
    from vprlab.evaluation.submission import write_msls_predictions

    if benchmark.submission_format != "msls":
        raise ConfigError(f"benchmark {benchmark.name!r}: unknown submission_format {benchmark.submission_format!r}")
    # The server takes a .zip holding one .csv (space-separated, despite the name) of predictions.
    out = Path(cfg.results_dir) / "predictions" / f"{benchmark.name}_{weights_hash}.csv"
    header = f"{benchmark.name} predictions of {name} (weights {weights_hash}); <query key> <database keys, best first>"
    paths = write_msls_predictions(
        out, benchmark.query_paths, benchmark.db_paths, run.predictions,
        top_k=int(cfg.submission_top_k), header=header,
    )
    return list(paths)


def _draw(pictures: PictureSettings | None, model: torch.nn.Module, benchmark: Any, run: Any, transform: Callable,
          model_id: tuple[str, str]) -> list[Path]:
    """The retrieval grid (and, for BoQ, the attention maps) of the queries chosen in ``visualize``;
    ``model_id``: (display name, weights hash)."""
    from vprlab.evaluation.visualize import (
        choose_queries,
        draw_attention,
        save_retrieval_grid,
    )

    if pictures is None:
        return []
    name, weights_hash = model_id
    has_gt = getattr(benchmark, "has_ground_truth", True)
    chosen = choose_queries(benchmark.num_queries, pictures, benchmark.positives if has_gt else None, run.predictions)
    if not chosen:
        log.info("%s: no query matches visualize.select=%s; nothing to draw", benchmark.name, pictures.select)
        return []
    out_dir = Path(str(pictures.out_dir))
    stem = f"{benchmark.name}_{weights_hash}"
    top_k = pictures.top_k
    written = [save_retrieval_grid(
        out_dir / f"{stem}_top{top_k}.png", benchmark, chosen, run, pictures,
        title=f"{benchmark.name}: top-{top_k} of {name} (green: correct, red: wrong)",
    )]
    if pictures.attention:
        for query in chosen:
            path = draw_attention(
                model, transform, benchmark.query_paths[query], out_dir / f"{stem}_attention_q{query}.png", pictures,
                title=f"{benchmark.name} query {query}: attention of BoQ's learned queries",
            )
            if path is None:
                log.info("%s has no attention maps (not a BoQ aggregator); skipping them", type(model.aggregator).__name__)
                break
            written.append(path)
    return written


def _notes(rows: Sequence[dict]) -> list[str]:
    notes = []
    for row in rows:
        missing = row.get("num_without_positive")
        if row.get("R@1") is None and missing is None:
            notes.append(f"{row['benchmark']}: no ground truth here; recall comes from the benchmark's server")
        elif missing:
            policy = "counted as misses" if row.get("queries_without_positive", "miss") == "miss" else "left out of recall"
            notes.append(f"{row['benchmark']}: {missing} of {row['num_queries']} queries have no positive ({policy})")
    return notes


def _missing_weights(cfg: DictConfig) -> list[str]:
    """The weights files named in ``cfg`` that are not there, each with where such a file comes from."""
    named = [("ckpt_path", cfg.get("ckpt_path"), "a checkpoint train.py wrote (outputs/train/runs/<run>/checkpoints/best.ckpt)"),
             ("weights_path", cfg.get("weights_path"), "a state dict with backbone.* / aggregator.* keys")]
    if cfg.get("pretrained"):
        named.append(("pretrained.path", cfg.pretrained.get("path"),
                      f"the released file of {cfg.pretrained.get('name')} (`vprlab models list` gives its URL; "
                      "without pretrained.path it is downloaded)"))
    return [f"{key}={value}: no such file; expected {what}" for key, value, what in named
            if value and not Path(str(value)).expanduser().is_file()]


def check_inputs(cfg: DictConfig) -> tuple[list, list[dict[str, str]]]:
    """Before any model is loaded: every requested benchmark is read (lists and ground truth) and every
    weights file is looked for. Returns (the benchmarks that are there, the missing ones as
    ``{"benchmark", "reason"}``); with missing weights, or missing benchmarks without
    ``skip_missing=true``, raises one FileNotFoundError that lists all of them and where to get each."""
    problems = _missing_weights(cfg)
    benchmarks, missing = [], []
    for key, node in (cfg.get("benchmark") or {}).items():
        if node is None:
            continue
        try:
            benchmarks.append(build(node))
        except Exception as error:  # noqa: BLE001 - Hydra wraps the reader's error; only missing data is collected
            cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
            if not isinstance(cause, (FileNotFoundError, NotADirectoryError)):
                raise
            name = str(node.get("name") or key)
            missing.append({"benchmark": name, "reason": f"{str(cause).split('; ')[0]} [{benchmark_hint(str(key), node)}]"})
    skip = bool(cfg.get("skip_missing"))
    if missing and (not skip or problems):
        problems += [f"benchmark {m['benchmark']}: {m['reason']}" for m in missing]
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        advice = " Pass skip_missing=true to evaluate the benchmarks that are there." if missing and not skip and benchmarks else ""
        raise MissingFileError(
            f"{len(problems)} input{'s' if len(problems) > 1 else ''} of this evaluation "
            f"{'are' if len(problems) > 1 else 'is'} missing (nothing was loaded):\n{listing}\n"
            f"`vprlab benchmarks` lists every benchmark, its root and whether it is here; docs/evaluation.md says where to "
            f"download each.{advice}"
        )
    if not benchmarks and not missing:
        raise ConfigError("no benchmark selected; pass benchmark=[<name>,...] with names from `vprlab benchmarks` "
                          "(it lists every benchmark config and whether its data is here)")
    return benchmarks, missing  # no benchmark but missing ones: skip_missing=true with nothing here


def _write_rows(cfg: DictConfig, rows: list[dict], skipped: Sequence[dict], name: str, weights_hash: str | None,
                ks: Sequence[int]) -> None:
    """results.csv / .json / .md with a row per skipped benchmark (unless the results file already holds a
    real result for that model and benchmark), and the paper comparison with the skipped rows marked."""
    rows = list(rows)
    if skipped:
        print(f"skipped (data missing, skip_missing=true): {', '.join(e['benchmark'] for e in skipped)}")
        earlier = {(str(r.get("model")), str(r.get("benchmark"))) for r in read_results(cfg.results_dir)}
        rows += [{"model": name, "checkpoint_hash": weights_hash, "benchmark": e["benchmark"],
                  "status": f"skipped: data missing ({e['reason']})"}
                 for e in skipped if (name, e["benchmark"]) not in earlier]
    paths = write_results(rows, cfg.results_dir)
    print(f"results: {paths.csv}  {paths.json}  {paths.markdown}")
    if cfg.get("compare_with_paper"):
        from vprlab.reports.paper import compare_with_paper

        skipped_rows = [{"benchmark": e["benchmark"], "status": f"skipped: data missing ({e['reason']})"} for e in skipped]
        compare_with_paper([r for r in rows if r.get("status") == "evaluated"] + skipped_rows, cfg.compare_with_paper,
                           ks=ks, out_dir=cfg.results_dir)


def evaluation_name(cfg: DictConfig) -> str:
    """The name evaluate.py gives the model in its results rows, known without loading it."""
    if cfg.get("pretrained"):
        from vprlab.pretrained.load import display_name

        return display_name(str(cfg.pretrained.name), cfg.pretrained.get("protocol"))
    if cfg.get("ckpt_path"):
        return f"{Path(cfg.ckpt_path).parent.parent.name}/{Path(cfg.ckpt_path).stem}"
    return configured_name(cfg, bool(cfg.get("weights_path")))


def _nothing_present(cfg: DictConfig, skipped: Sequence[dict]) -> None:
    """skip_missing=true and none of the selected benchmarks is here: no model is loaded; the skipped rows
    (and the paper table, with every row marked skipped) are written, then a MissingFileError (exit 2)
    names each missing benchmark and how to get it."""
    _write_rows(cfg, [], skipped, evaluation_name(cfg), None, tuple(int(k) for k in cfg.recall_ks))
    listing = "\n".join(f"  - {e['benchmark']}: {e['reason']}" for e in skipped)
    raise MissingFileError(
        f"skip_missing=true, but none of the {len(skipped)} selected benchmarks is here, so nothing was evaluated "
        f"(the results files in {cfg.results_dir} list each as skipped):\n{listing}\n"
        "`vprlab benchmarks` lists every benchmark, its root and whether it is here; docs/evaluation.md says where "
        "to download each. Point paths.data_dir (or the benchmark's environment variable) at the data, or select "
        "benchmarks that are here with benchmark=[...]"
    )


def run_evaluation(cfg: DictConfig) -> dict[str, dict]:
    """What evaluate.py does: load the model, evaluate every selected benchmark (descriptors from the
    cache when it has them), print the table, write results.csv / .json / .md (rows keyed by model and
    benchmark), and the MSLS challenge predictions and pictures when asked.

    Settings are read from ``cfg`` as conf/evaluate.yaml gives them, without defaults of their own here:
    a key missing from a hand-made config is an error, not a silently different value."""
    refuse_unused_model_overrides(cfg, command_line_overrides())
    if not cfg.get("pretrained") and not cfg.get("ckpt_path"):
        # The model comes from the backbone / aggregator groups: check their keys before anything is built.
        check_component_keys(cfg)
    benchmarks, skipped = check_inputs(cfg)
    for entry in skipped:
        log.warning("skip_missing=true: skipping benchmark %s: %s", entry["benchmark"], entry["reason"])
    if not benchmarks:
        _nothing_present(cfg, skipped)
    check_unique_names(benchmarks)
    settings = EvalSettings.from_eval_config(cfg)  # every evaluation setting, read once
    model, name, weights_hash = load_model_for_eval(cfg)
    settings.prepare_model(model)
    transform_for = transform_for_settings(model, settings)
    ks = settings.ks

    metrics: dict[str, dict] = {}
    rows, extra_files = [], []
    for bench in benchmarks:
        size = eval_size_for(model, bench.image_size)  # None: native size (published CosPlace, NetVLAD...)
        run = run_benchmark(model, bench, settings, transform_for, weights_hash)
        log_metrics(bench.name, run.metrics)
        metrics[bench.name] = run.metrics
        rows.append({
            "model": name, "checkpoint_hash": weights_hash, "benchmark": bench.name, "image_size": _size_text(size),
            "descriptor_dim": run.metrics["descriptor_dim"], **benchmark_counts(bench), **run.metrics, "queries_without_positive": bench.queries_without_positive,
            "from_cache": run.descriptors.from_cache, "protocol": bench.protocol, "precision": settings.precision,
            "backbone": type(model.backbone).__name__, "aggregator": type(model.aggregator).__name__.lower(),
            "status": "evaluated",
        })
        if getattr(bench, "submission_format", None):
            extra_files += _write_submission(cfg, bench, run, name, weights_hash)
        extra_files += _draw(settings.pictures, model, bench, run, transform_for(bench.image_size), (name, weights_hash))

    print_recall_table(rows, title=f"Recall@N (%) of {name}")
    for note in _notes(rows):
        print(note)
    _write_rows(cfg, rows, skipped, name, weights_hash, ks)
    for path in extra_files:
        print(f"wrote {path}")
    return metrics
