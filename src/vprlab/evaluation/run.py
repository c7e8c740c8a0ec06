"""Evaluation as the trainer and evaluate.py run it: the model's own eval transform at each
benchmark's size, result rows written next to the run, and the tables people read."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from vprlab.data.loaders import build_benchmarks
from vprlab.data.transforms import eval_transform
from vprlab.engine.checkpoint import file_hash, load_checkpoint, state_dict_hash
from vprlab.evaluation.evaluate import evaluate
from vprlab.evaluation.report import print_recall_table, write_results
from vprlab.models.vpr_model import VPRModel, build_model

log = logging.getLogger(__name__)


def evaluate_model(
    model: torch.nn.Module, benchmarks: Sequence, *, default_image_size: Any = None, **kwargs: Any
) -> dict[str, dict]:
    """Evaluate ``model`` on every benchmark with bicubic antialiased resizing at the
    benchmark's configured size and the backbone's normalisation."""
    mean, std = model.backbone.mean, model.backbone.std
    if default_image_size is None:
        default_image_size = getattr(model.backbone, "eval_image_size", None)

    def transform_for(image_size: Any):
        size = image_size if image_size is not None else default_image_size
        if size is None:
            raise ValueError("benchmark has no image_size and the backbone has no eval_image_size; set benchmark.<name>.image_size=[H,W]")
        return eval_transform(size, mean=mean, std=std)

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
    with weights from ``weights_path`` or, with a warning, untrained.
    """
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


def run_evaluation(cfg: DictConfig) -> dict[str, dict]:
    """What evaluate.py does: load the model, evaluate every selected benchmark, print the
    table and write results.csv / results.json (rows keyed by model and benchmark)."""
    from vprlab.engine.trainer import Precision, resolve_device

    benchmarks = build_benchmarks(cfg.get("benchmark"))
    if not benchmarks:
        raise ValueError("no benchmark selected; pass e.g. benchmark=[pitts30k_test] (see conf/benchmark/)")
    device = resolve_device(str(cfg.device))
    precision = Precision.from_config(cfg.precision or "32", device)
    model, name, weights_hash = load_model_for_eval(cfg)
    model.to(device)
    metrics = evaluate_model(
        model, benchmarks, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
        device=device, ks=tuple(cfg.recall_ks), amp_dtype=precision.dtype,
    )
    rows = []
    for bench in benchmarks:
        size = bench.image_size if bench.image_size is not None else model.backbone.eval_image_size
        rows.append({
            "model": name, "checkpoint_hash": weights_hash, "benchmark": bench.name,
            "image_size": "x".join(str(int(v)) for v in size), **metrics[bench.name],
        })
    print_recall_table(rows, title=f"Recall@N (%) of {name}")
    paths = write_results(rows, cfg.results_dir)
    print(f"results: {paths.csv}  {paths.json}")
    return metrics
