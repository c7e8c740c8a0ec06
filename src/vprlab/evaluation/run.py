"""Evaluation as the trainer and evaluate.py run it: the model's own eval transform at each
benchmark's size, descriptors cached by (weights, benchmark, size, transform), result rows written
next to the run (CSV, JSON, Markdown), and the tables and pictures people read."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from vprlab.data.loaders import build_benchmarks
from vprlab.data.transforms import as_hw, eval_transform
from vprlab.engine.checkpoint import file_hash, load_checkpoint, state_dict_hash
from vprlab.evaluation.cache import DescriptorCache
from vprlab.evaluation.evaluate import check_unique_names, evaluate, log_metrics, run_benchmark
from vprlab.evaluation.report import print_recall_table, write_results
from vprlab.models.vpr_model import VPRModel, build_model

log = logging.getLogger(__name__)


def make_transform_for(model: torch.nn.Module, default_image_size: Any = None) -> Callable[[Any], Callable]:
    """``transform_for(image_size)``: bicubic antialiased resizing to ``image_size`` (None: the
    backbone's ``eval_image_size``) and the backbone's normalisation."""
    mean, std = model.backbone.mean, model.backbone.std
    if default_image_size is None:
        default_image_size = getattr(model.backbone, "eval_image_size", None)

    def transform_for(image_size: Any):
        size = image_size if image_size is not None else default_image_size
        if size is None:
            raise ValueError("benchmark has no image_size and the backbone has no eval_image_size; set benchmark.<name>.image_size=[H,W]")
        return eval_transform(size, mean=mean, std=std)

    return transform_for


def evaluate_model(
    model: torch.nn.Module, benchmarks: Sequence, *, default_image_size: Any = None, **kwargs: Any
) -> dict[str, dict]:
    """Evaluate ``model`` on every benchmark with bicubic antialiased resizing at the
    benchmark's configured size and the backbone's normalisation."""
    transform_for = make_transform_for(model, default_image_size)
    was_training = model.training
    try:
        return evaluate(model, list(benchmarks), transform_for, **kwargs)
    finally:
        model.train(was_training)


def print_before_after(before: dict[str, dict], after: dict[str, dict], ks: Sequence[int] = (1, 5, 10, 20)) -> None:
    table = Table(title="Recall@k before / after training (%)")
    table.add_column("benchmark")
    table.add_column("")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    for bench in after:
        b, a = before.get(bench, {}), after[bench]
        table.add_row(bench, "before", *(f"{b.get(f'R@{k}', float('nan')):.1f}" for k in ks))
        table.add_row("", "after", *(f"{a[f'R@{k}']:.1f}" for k in ks))
        table.add_row("", "change", *(f"{a[f'R@{k}'] - b.get(f'R@{k}', float('nan')):+.1f}" for k in ks), end_section=True)
    Console().print(table)


def load_model_for_eval(cfg: DictConfig) -> tuple[VPRModel, str, str]:
    """The model to evaluate, its display name and a hash of its weights.

    From a vprlab checkpoint the model is rebuilt from the config stored in it (so the
    evaluate.yaml backbone/aggregator groups are ignored); otherwise from those groups,
    with weights from ``weights_path`` or, with a warning, untrained. ``pretrained=<name>``
    selects a released BoQ model instead (``pretrained.path``: a local copy of its file).
    """
    if cfg.get("pretrained"):
        from vprlab.pretrained import load_for_evaluation

        if cfg.get("ckpt_path") or cfg.get("weights_path"):
            raise ValueError("pretrained= and ckpt_path=/weights_path= both name the weights; set only one of them")
        return load_for_evaluation(cfg.pretrained.name, cfg.pretrained.get("path"))
    if cfg.get("ckpt_path"):
        state = load_checkpoint(cfg.ckpt_path)
        train_cfg = OmegaConf.create(state["config"])
        # The checkpoint holds every weight: never download pretrained backbone weights.
        train_cfg.backbone.pretrained = False
        model = build_model(train_cfg.backbone, train_cfg.aggregator)
        model.load_state_dict(state["model"])
        name = f"{Path(cfg.ckpt_path).parent.parent.name}/{Path(cfg.ckpt_path).stem}"
        return model, name, file_hash(cfg.ckpt_path)
    backbone_cfg = OmegaConf.create(OmegaConf.to_container(cfg.backbone, resolve=True))
    if cfg.get("weights_path"):
        backbone_cfg.pretrained = False
    model = build_model(backbone_cfg, cfg.aggregator)
    name = f"{backbone_cfg.get('model_name', 'backbone')}-{str(cfg.aggregator._target_).rsplit('.', 1)[-1]}"
    if cfg.get("weights_path"):
        weights = torch.load(cfg.weights_path, map_location="cpu", weights_only=True)
        weights = weights.get("state_dict", weights.get("model", weights)) if isinstance(weights, dict) else weights
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"weights '{cfg.weights_path}' do not match the configured model: "
                f"missing keys {list(missing)[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected keys {list(unexpected)[:8]}{'...' if len(unexpected) > 8 else ''}; "
                "check backbone=/aggregator= and their sizes"
            )
        return model, name, file_hash(cfg.weights_path)
    log.warning("no ckpt_path or weights_path given: evaluating an untrained model")
    return model, name + "-untrained", state_dict_hash(model.state_dict())


def _size_text(size: Any) -> str:
    return "x".join(str(int(v)) for v in as_hw(size))


def _search_k(cfg: DictConfig, ks: Sequence[int], benchmark: Any) -> int:
    """How many predictions per query: the recall ks, the pictures and the submission file."""
    k = max(ks)
    visualize = cfg.get("visualize") or {}
    if int(visualize.get("num_queries", 0) or 0) > 0 or visualize.get("queries"):
        k = max(k, int(visualize.get("top_k", 5)))
    if getattr(benchmark, "submission_format", None):
        k = max(k, int(cfg.get("submission_top_k", 25)))
    return k


def _write_submission(cfg: DictConfig, benchmark: Any, run: Any, name: str, weights_hash: str) -> list[Path]:
    from vprlab.evaluation.submission import write_msls_predictions

    if benchmark.submission_format != "msls":
        raise ValueError(f"benchmark {benchmark.name!r}: unknown submission_format {benchmark.submission_format!r}")
    # The server takes a .zip holding one .csv (space-separated, despite the name) of predictions.
    out = Path(cfg.results_dir) / "predictions" / f"{benchmark.name}_{weights_hash}.csv"
    header = f"{benchmark.name} predictions of {name} (weights {weights_hash}); <query key> <database keys, best first>"
    paths = write_msls_predictions(
        out, benchmark.query_paths, benchmark.db_paths, run.predictions,
        top_k=int(cfg.get("submission_top_k", 25)), header=header,
    )
    return list(paths)


def _draw(cfg: DictConfig, model: torch.nn.Module, benchmark: Any, run: Any, transform: Callable,
          size: tuple[int, int], device: torch.device, name: str, weights_hash: str) -> list[Path]:
    """The retrieval grid (and, for BoQ, the attention maps) of the queries chosen in ``cfg.visualize``."""
    from vprlab.evaluation.visualize import choose_queries, draw_attention, save_retrieval_grid

    vis = cfg.get("visualize") or {}
    count = int(vis.get("num_queries", 0) or 0)
    if count <= 0 and not vis.get("queries"):
        return []
    has_gt = getattr(benchmark, "has_ground_truth", True)
    chosen = choose_queries(
        benchmark.num_queries, count, select=str(vis.get("select", "spread")),
        explicit=list(vis.get("queries") or []), positives=benchmark.positives if has_gt else None,
        predictions=run.predictions, seed=int(vis.get("seed", 0)),
    )
    if not chosen:
        log.info("%s: no query matches visualize.select=%s; nothing to draw", benchmark.name, vis.get("select"))
        return []
    out_dir = Path(vis.get("out_dir") or Path(cfg.results_dir) / "visuals")
    stem = f"{benchmark.name}_{weights_hash}"
    top_k = int(vis.get("top_k", 5))
    written = [save_retrieval_grid(
        out_dir / f"{stem}_top{top_k}.png", benchmark.query_paths, benchmark.db_paths, chosen,
        run.predictions, run.scores, positives=benchmark.positives if has_gt else None, top_k=top_k,
        title=f"{benchmark.name}: top-{top_k} of {name} (green: correct, red: wrong)",
    )]
    if vis.get("attention", True):
        for query in chosen:
            path = draw_attention(
                model, transform, benchmark.query_paths[query], size, out_dir / f"{stem}_attention_q{query}.png",
                device=device, learned_queries=vis.get("attention_queries"),
                num_learned_queries=int(vis.get("num_attention_queries", 4)),
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


def run_evaluation(cfg: DictConfig) -> dict[str, dict]:
    """What evaluate.py does: load the model, evaluate every selected benchmark (descriptors from the
    cache when it has them), print the table, write results.csv / .json / .md (rows keyed by model and
    benchmark), and the MSLS challenge predictions and pictures when asked."""
    from vprlab.engine.trainer import Precision, resolve_device

    benchmarks = build_benchmarks(cfg.get("benchmark"))
    if not benchmarks:
        raise ValueError("no benchmark selected; pass e.g. benchmark=[pitts30k_test] (see conf/benchmark/)")
    check_unique_names(benchmarks)
    device = resolve_device(str(cfg.device))
    precision = Precision.from_config(cfg.precision or "32", device)
    model, name, weights_hash = load_model_for_eval(cfg)
    model.to(device)
    if cfg.get("channels_last", False):  # NHWC: faster convolutions (CPU oneDNN, tensor cores)
        model.to(memory_format=torch.channels_last)
    transform_for = make_transform_for(model)
    cache = DescriptorCache(cfg.cache_dir, dtype=str(cfg.get("cache_dtype", "float32"))) if cfg.get("cache", False) else None
    ks = tuple(int(k) for k in cfg.recall_ks)
    progress = bool(cfg.get("progress", True))

    metrics: dict[str, dict] = {}
    rows, extra_files = [], []
    for bench in benchmarks:
        size = as_hw(bench.image_size if bench.image_size is not None else model.backbone.eval_image_size)
        run = run_benchmark(
            model, bench, transform_for, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
            device=device, ks=ks, amp_dtype=precision.dtype, progress=progress,
            db_chunk_size=cfg.get("db_chunk_size"), use_gpu=cfg.get("faiss_gpu", "auto"),
            search_float16=bool(cfg.get("search_float16", False)), k=_search_k(cfg, ks, bench),
            cache=cache, weights_hash=weights_hash, resolved_image_size=size,
        )
        log_metrics(bench.name, run.metrics)
        metrics[bench.name] = run.metrics
        rows.append({
            "model": name, "checkpoint_hash": weights_hash, "benchmark": bench.name, "image_size": _size_text(size),
            "descriptor_dim": run.metrics["descriptor_dim"], **run.metrics, "queries_without_positive": bench.queries_without_positive,
            "from_cache": run.descriptors.from_cache, "protocol": bench.protocol,
        })
        if getattr(bench, "submission_format", None):
            extra_files += _write_submission(cfg, bench, run, name, weights_hash)
        extra_files += _draw(cfg, model, bench, run, transform_for(bench.image_size), size, device, name, weights_hash)

    print_recall_table(rows, title=f"Recall@N (%) of {name}")
    for note in _notes(rows):
        print(note)
    paths = write_results(rows, cfg.results_dir)
    print(f"results: {paths.csv}  {paths.json}  {paths.markdown}")
    if cfg.get("compare_with_paper"):
        from vprlab.evaluation.paper import compare_with_paper

        compare_with_paper(rows, cfg.compare_with_paper, ks=ks, out_dir=cfg.results_dir)
    for path in extra_files:
        print(f"wrote {path}")
    return metrics
