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
from omegaconf import DictConfig, OmegaConf

from vprlab.config.composition import check_component_keys
from vprlab.data.loaders import build_benchmarks
from vprlab.engine.checkpoint import load_checkpoint
from vprlab.evaluation.cache import DescriptorCache
from vprlab.evaluation.protocol import (
    check_unique_names,
    eval_size_for,
    log_metrics,
    make_transform_for,
    run_benchmark,
)
from vprlab.evaluation.results import print_recall_table, write_results
from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.utils.device import Precision, resolve_device
from vprlab.utils.images import as_hw
from vprlab.utils.weights import file_hash, read_state_dict, state_dict_hash

log = logging.getLogger(__name__)


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
        return load_for_evaluation(
            cfg.pretrained.name, cfg.pretrained.get("path"), bool(cfg.allow_unsafe_pickle), protocol=cfg.pretrained.get("protocol"),
        )
    if cfg.get("ckpt_path"):
        state = load_checkpoint(cfg.ckpt_path, allow_unsafe_pickle=bool(cfg.allow_unsafe_pickle))
        train_cfg = OmegaConf.create(state["config"])
        # The checkpoint holds every weight: never download pretrained backbone weights.
        train_cfg.backbone.pretrained = False
        model = build_model(train_cfg.backbone, train_cfg.aggregator)
        model.load_state_dict(state["model"])
        if (train_cfg.get("pretrained") or {}).get("name"):  # fine-tuned from a published model: its preprocessing
            from vprlab.pretrained import published_model

            model.eval_preprocessing = published_model(train_cfg.pretrained.name).preprocessing
        name = f"{Path(cfg.ckpt_path).parent.parent.name}/{Path(cfg.ckpt_path).stem}"
        return model, name, file_hash(cfg.ckpt_path)
    backbone_cfg = OmegaConf.create(OmegaConf.to_container(cfg.backbone, resolve=True))
    if cfg.get("weights_path"):
        backbone_cfg.pretrained = False
    model = build_model(backbone_cfg, cfg.aggregator)
    name = f"{backbone_cfg.get('model_name', 'backbone')}-{str(cfg.aggregator._target_).rsplit('.', 1)[-1]}"
    if cfg.get("weights_path"):
        weights = read_state_dict(cfg.weights_path, allow_unsafe_pickle=bool(cfg.allow_unsafe_pickle))
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
    if size is None:
        return "native"
    return "x".join(str(int(v)) for v in as_hw(size))


def _search_k(cfg: DictConfig, ks: Sequence[int], benchmark: Any) -> int:
    """How many predictions per query: the recall ks, the pictures and the submission file."""
    k = max(ks)
    visualize = cfg.visualize
    if visualize and (int(visualize.num_queries or 0) > 0 or visualize.queries):
        k = max(k, int(visualize.top_k))
    if getattr(benchmark, "submission_format", None):
        k = max(k, int(cfg.submission_top_k))
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
        top_k=int(cfg.submission_top_k), header=header,
    )
    return list(paths)


def _draw(cfg: DictConfig, model: torch.nn.Module, benchmark: Any, run: Any, transform: Callable,
          size: tuple[int, int], device: torch.device, name: str, weights_hash: str) -> list[Path]:
    """The retrieval grid (and, for BoQ, the attention maps) of the queries chosen in ``cfg.visualize``."""
    from vprlab.evaluation.visualize import (
        choose_queries,
        draw_attention,
        save_retrieval_grid,
    )

    vis = cfg.visualize
    if not vis:
        return []
    count = int(vis.num_queries or 0)
    if count <= 0 and not vis.queries:
        return []
    has_gt = getattr(benchmark, "has_ground_truth", True)
    chosen = choose_queries(
        benchmark.num_queries, count, select=str(vis.select),
        explicit=list(vis.queries or []), positives=benchmark.positives if has_gt else None,
        predictions=run.predictions, seed=int(vis.seed),
    )
    if not chosen:
        log.info("%s: no query matches visualize.select=%s; nothing to draw", benchmark.name, vis.select)
        return []
    out_dir = Path(vis.out_dir or Path(cfg.results_dir) / "visuals")
    stem = f"{benchmark.name}_{weights_hash}"
    top_k = int(vis.top_k)
    written = [save_retrieval_grid(
        out_dir / f"{stem}_top{top_k}.png", benchmark.query_paths, benchmark.db_paths, chosen,
        run.predictions, run.scores, positives=benchmark.positives if has_gt else None, top_k=top_k,
        title=f"{benchmark.name}: top-{top_k} of {name} (green: correct, red: wrong)",
    )]
    if vis.attention:
        for query in chosen:
            path = draw_attention(
                model, transform, benchmark.query_paths[query], size, out_dir / f"{stem}_attention_q{query}.png",
                device=device, learned_queries=vis.attention_queries,
                num_learned_queries=int(vis.num_attention_queries),
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
    benchmark), and the MSLS challenge predictions and pictures when asked.

    Settings are read from ``cfg`` as conf/evaluate.yaml gives them, without defaults of their own here:
    a key missing from a hand-made config is an error, not a silently different value."""
    if not cfg.get("pretrained") and not cfg.get("ckpt_path"):
        # The model comes from the backbone / aggregator groups: check their keys before anything is built.
        check_component_keys(cfg)
    benchmarks = build_benchmarks(cfg.get("benchmark"))
    if not benchmarks:
        raise ValueError("no benchmark selected; pass e.g. benchmark=[pitts30k_test] (see conf/benchmark/)")
    check_unique_names(benchmarks)
    device = resolve_device(str(cfg.device))
    precision = Precision.from_config(cfg.precision or "32", device)
    model, name, weights_hash = load_model_for_eval(cfg)
    model.to(device)
    if cfg.channels_last:  # NHWC: faster convolutions (CPU oneDNN, tensor cores)
        model.to(memory_format=torch.channels_last)
    transform_for = make_transform_for(model)
    cache = DescriptorCache(cfg.cache_dir, dtype=str(cfg.cache_dtype)) if cfg.cache else None
    ks = tuple(int(k) for k in cfg.recall_ks)
    progress = bool(cfg.progress)

    metrics: dict[str, dict] = {}
    rows, extra_files = [], []
    for bench in benchmarks:
        size = eval_size_for(model, bench.image_size)  # None: native size (published CosPlace, NetVLAD...)
        run = run_benchmark(
            model, bench, transform_for, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
            device=device, ks=ks, amp_dtype=precision.dtype, progress=progress,
            db_chunk_size=cfg.db_chunk_size, use_gpu=cfg.faiss_gpu,
            search_float16=bool(cfg.search_float16), k=_search_k(cfg, ks, bench),
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
        from vprlab.reports.paper import compare_with_paper

        compare_with_paper(rows, cfg.compare_with_paper, ks=ks, out_dir=cfg.results_dir)
    for path in extra_files:
        print(f"wrote {path}")
    return metrics
