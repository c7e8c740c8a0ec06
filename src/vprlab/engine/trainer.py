"""The training loop.

Everything is built before the loop; the loop body reads top to bottom:
lr for this step, forward under autocast, (scaled) backward, unscale, clip, step,
update, zero_grad, log every N steps; at the end of each epoch: evaluate, checkpoint.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from vprlab.config.checks import check_monitor, validate_train_config
from vprlab.data.loaders import build_benchmarks, build_train_loader, loader_setting
from vprlab.data.transforms import DeviceNormalize
from vprlab.engine.checkpointer import Checkpointer
from vprlab.engine.distributed import (
    DistInfo,
    any_rank,
    barrier,
    broadcast_buffers,
    init_distributed,
    mean_across_ranks,
    shutdown,
)
from vprlab.engine.grad_cache import grad_cache_backward
from vprlab.engine.interrupt import StopOnSignal
from vprlab.engine.optim import make_optimizer, make_schedule, set_lr
from vprlab.engine.resume import (
    load_init_weights,
    prepare_init_from,
    prepare_resume,
    restore_training_state,
    seek_sampler,
)
from vprlab.evaluation.protocol import evaluate_model
from vprlab.evaluation.results import print_before_after
from vprlab.evaluation.settings import EvalSettings
from vprlab.losses import build_loss
from vprlab.models.cpu_kernels import onednn_linears
from vprlab.models.vpr_model import build_model
from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.finetune import (
    apply_published_architecture,
    load_published_weights,
)
from vprlab.tracking.logger import RunLogger
from vprlab.utils.device import Precision, resolve_device
from vprlab.utils.io import atomic_write_text
from vprlab.utils.memory import PeakMemory
from vprlab.utils.progress import progress_bar
from vprlab.utils.seed import cpu_threads, rng_state, seed_everything
from vprlab.utils.weights import state_dict_hash

log = logging.getLogger(__name__)

def prepare_train_config(cfg: DictConfig) -> tuple[DictConfig, Path | None, dict[str, Any] | None]:
    """(the config to train with, the checkpoint to resume, its state): everything train() settles before
    it builds anything, with every config check; a sweep runs it for each job before the first starts."""
    # train.py pretrained=<name>: the published model's backbone/aggregator; not for ckpt_path=<file>,
    # whose stored config already holds the architecture it trained (ckpt_path=auto checks the two agree).
    if not cfg.get("ckpt_path") or str(cfg.get("ckpt_path")) == "auto":
        apply_published_architecture(cfg)
    # ckpt_path=<file>: the stored run's config (only resume-safe overrides), checked before anything is built.
    cfg, resume_path, resume_state = prepare_resume(cfg)
    validate_train_config(cfg)
    return cfg, resume_path, resume_state


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the model described by ``cfg`` and return the final metrics.

    ``cfg`` is the composed ``train.yaml``; ``cfg.paths.output_dir`` is the run folder.
    Under torchrun every rank calls this; rank 0 alone logs, evaluates and writes files.
    """
    cfg, resume_path, resume_state = prepare_train_config(cfg)
    device = resolve_device(str(cfg.trainer.device))
    dist_info = init_distributed(device.type)
    try:
        if dist_info.enabled and device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
        # This job's peak memory (reset per job: a sweep may run many jobs in one process); its CPU thread
        # count, on which a CPU run's numbers depend (trainer.num_threads, null: as it is).
        with PeakMemory(device) as peak, cpu_threads(cfg.trainer.get("num_threads")):
            return _train(cfg, device, dist_info, peak, (resume_path, resume_state))
    finally:
        shutdown(dist_info)


def _train(
    cfg: DictConfig, device: torch.device, dist_info: DistInfo, peak: PeakMemory,
    resume: tuple[Path | None, dict[str, Any] | None] = (None, None),
) -> dict[str, Any]:
    # init_from=<file>: a new run from its model weights, checked before anything is built or written
    # (not when ckpt_path=auto found this run's own checkpoint: that run continues).
    init = prepare_init_from(cfg) if resume[1] is None else None
    run_dir = Path(cfg.paths.output_dir)
    ckpt_dir = run_dir / "checkpoints"
    resolved = OmegaConf.to_container(cfg, resolve=True)
    main = dist_info.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    tcfg = cfg.trainer
    # seed + rank: ranks draw different randomness; DDP copies rank 0's initial weights to all.
    seed_everything(int(cfg.seed) + dist_info.rank, deterministic=bool(tcfg.deterministic))
    precision = Precision.from_config(tcfg.precision, device)

    model = build_model(cfg.backbone, cfg.aggregator).to(device)
    channels_last = bool(tcfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader, sampler, dataset = build_train_loader(
        cfg.dataset, mean=model.backbone.mean, std=model.backbone.std, seed=int(cfg.seed), device_type=device.type,
        rank=dist_info.rank, world_size=dist_info.world_size,
    )
    benchmarks = build_benchmarks(cfg.get("benchmark"))
    loss_fn = build_loss(cfg.loss, cfg.get("miner")).to(device)
    optimizer = make_optimizer(cfg.optimizer, model)
    # The module that trains: DDP all-reduces gradients; `model` stays the plain module for
    # evaluation and checkpoints (so checkpoint keys never carry a "module." prefix).
    train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist_info.enabled else model
    if tcfg.compile:
        train_model = torch.compile(train_model)
    scaler = precision.make_scaler()
    steps_per_epoch = len(loader)
    max_epochs = int(tcfg.max_epochs)
    total_steps = max_epochs * steps_per_epoch
    schedule = make_schedule(cfg.scheduler, steps_per_epoch, total_steps)
    monitor = _monitor_key(tcfg, benchmarks)
    # When and what to save, and which rank writes: engine/checkpointer.py.
    checkpointer = Checkpointer(ckpt_dir, is_main=main, every_n_steps=tcfg.get("checkpoint_every_n_steps"), monitor=monitor,
                                save_top_k=int(tcfg.get("save_top_k") or 1))

    epoch, step, history = 0, 0, []
    ckpt_path, state = resume  # loaded (on the CPU) by prepare_resume before anything was built
    if state is not None:  # engine/resume.py: model, optimizer, scaler, checkpointer and RNG as they were
        epoch, step, history = restore_training_state(ckpt_path, state, model=model, optimizer=optimizer, scaler=scaler,
                                                      checkpointer=checkpointer)
        if (cfg.get("pretrained") or {}).get("name"):  # a fine-tuned published model keeps its method's preprocessing
            model.eval_preprocessing = published_model(str(cfg.pretrained.name)).preprocessing

    elif init is not None:  # init_from: the weights of a checkpoint or export, strictly; nothing else of it
        load_init_weights(model, *init)
        if (cfg.get("pretrained") or {}).get("name"):  # pretrained= gave the architecture: keep its preprocessing
            model.eval_preprocessing = published_model(str(cfg.pretrained.name)).preprocessing
    elif (cfg.get("pretrained") or {}).get("name"):  # fine-tuning a published model: its released weights
        load_published_weights(model, str(cfg.pretrained.name), cfg.pretrained.get("path"), bool(cfg.allow_unsafe_pickle))
    elif hasattr(model.aggregator, "init_from_features"):
        # Every rank computes the same initialisation (same images, same k-means seed).
        init_aggregator_from_data(model, dataset, device, num_images=int(tcfg.aggregator_init_images), normalize=loader.normalize)

    # A resumed run drops the rows the interrupted one wrote after this checkpoint: no duplicates.
    logger = RunLogger(run_dir, resolved, **OmegaConf.to_container(cfg.logger, resolve=True), enabled=main,
                       resume_step=step if state is not None else None)
    eval_settings = EvalSettings.from_train_config(cfg, device, loader_setting(cfg.dataset, "num_workers"), model.backbone)
    log.info(
        "model: %s + %s, %d-d descriptors, %.2fM trainable params; %d places, %d steps/epoch x %d epochs on %s (%s)",
        type(model.backbone).__name__, type(model.aggregator).__name__, model.descriptor_dim,
        sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        len(dataset), steps_per_epoch, max_epochs, device, precision.name,
    )

    def checkpoint_state(epoch_done: int) -> dict[str, Any]:
        """``epoch_done`` counts finished epochs; ``step`` may lie inside the next one (mid-epoch resume)."""
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch_done, "step": step, "best_metric": checkpointer.best_metric, "config": resolved,
            "rng": rng_state(), "history": history,
        }

    # Model size next to the metrics, so reports read it from metrics.jsonl without rebuilding the model.
    logger.log({
        "model/descriptor_dim": int(model.descriptor_dim),
        "model/params": sum(p.numel() for p in model.parameters()),
        "model/aggregator_params": sum(p.numel() for p in model.aggregator.parameters()),
        "model/trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }, step=0)  # a property of the run, not of a step: a resumed run does not log it twice

    log_every = int(tcfg.log_every_n_steps)
    # Images per chunk of the gradient-caching step; 0/null: the plain step.
    grad_cache_chunk = int(tcfg.get("grad_cache_chunk") or 0)
    guard = NonFiniteGuard(int(tcfg.max_nonfinite_steps))
    interrupted: str | None = None
    try:
        # CPU: frozen linear layers (most of a ViT backbone) compute through oneDNN (cpu_kernels).
        cpu_linears = onednn_linears(model, enabled=device.type == "cpu" and not tcfg.compile)
        with StopOnSignal() as stop, cpu_linears:
            if tcfg.eval_before_training and step == 0 and benchmarks and main:
                before = evaluate_model(model, benchmarks, eval_settings)
                history.append({"epoch": 0, "step": 0, "metrics": before})
                logger.log(_benchmark_metric_keys(before), step=0)
            barrier(dist_info)

            for epoch in range(epoch, max_epochs):
                # This epoch's order, past the batches already trained (> 0 only when resuming mid-epoch).
                done_in_epoch = seek_sampler(sampler, epoch, step, steps_per_epoch, loader.batch_size)
                model.train()
                bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{max_epochs}", initial=done_in_epoch,
                                   total=steps_per_epoch, enabled=main)
                tick, seen = time.perf_counter(), 0
                for images, labels in bar:
                    # uint8 images (or, with dataset.decoder=device, encoded ones that decode on the device here),
                    # converted to float and normalised on the device: the train transform's last step.
                    images = loader.normalize(images.to(device, non_blocking=True))
                    labels = labels.to(device, non_blocking=True)
                    if channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    set_lr(optimizer, schedule(step))

                    if 0 < grad_cache_chunk < images.shape[0]:  # same gradients, one chunk's memory (engine/grad_cache.py)
                        loss, stats = grad_cache_backward(
                            train_model, images, labels, loss_fn, grad_cache_chunk, precision.autocast, scaler.scale,
                            frozen_prefix=train_model is model,  # DDP / compiled: the wrapper runs whole
                        )
                    else:
                        with precision.autocast():
                            descriptors = train_model(images)
                        loss, stats = loss_fn(descriptors, labels)
                        scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg.grad_clip) if tcfg.grad_clip else math.inf)
                    # The miner has already synchronised with the host this step, so this check is free.
                    # fp16: the GradScaler itself skips overflowing steps while it calibrates its scale.
                    if guard.finite(loss, None if scaler.is_enabled() else grad_norm, step, optimizer):
                        scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    seen += images.shape[0]

                    if step % log_every == 0 or step == total_steps:
                        elapsed = time.perf_counter() - tick
                        metrics = {
                            "train/loss": mean_across_ranks(loss, dist_info).item(), "train/lr": optimizer.param_groups[-1]["lr"],
                            "train/grad_norm": grad_norm.item(),
                            "train/img_per_s": seen * dist_info.world_size / max(elapsed, 1e-9),
                            "train/skipped_steps": guard.skipped, "epoch": epoch + 1,
                            **{f"train/{k}": v for k, v in stats.items()},
                        }
                        logger.log(metrics, step=step)
                        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", lr=f"{metrics['train/lr']:.2e}", img_s=f"{metrics['train/img_per_s']:.1f}")
                        tick, seen = time.perf_counter(), 0
                    # SLURM signals every task, but only one rank may have seen it before this step.
                    stopping = any_rank(stop.requested is not None, dist_info, device)
                    if stopping:
                        checkpointer.on_stop(partial(checkpoint_state, epoch))
                        interrupted = signal.Signals(stop.requested or signal.SIGTERM).name
                        break
                    checkpointer.after_step(step, partial(checkpoint_state, epoch))
                broadcast_buffers(model, dist_info)
                if interrupted:
                    break

                epoch_metrics: dict[str, Any] = {}
                if main and benchmarks and ((epoch + 1) % int(tcfg.eval_every_n_epochs) == 0 or epoch + 1 == max_epochs):
                    epoch_metrics = evaluate_model(model, benchmarks, eval_settings)
                    history.append({"epoch": epoch + 1, "step": step, "metrics": epoch_metrics})
                    logger.log({**_benchmark_metric_keys(epoch_metrics), "epoch": epoch + 1}, step=step)
                checkpointer.after_epoch(epoch + 1, epoch_metrics, partial(checkpoint_state, epoch + 1))
                barrier(dist_info)

        final = history[-1]["metrics"] if history else {}
        logger.log({"system/peak_mem_mb": peak.peak_mb, "system/start_mem_mb": peak.start_mb,
                    "system/peak_mem_kind": peak.kind}, step=step)
        summary = {**_benchmark_metric_keys(final), "best/" + (monitor or "none"): checkpointer.best_metric, "train/steps": step}
        if history and history[0]["epoch"] == 0:
            summary.update({f"before/{k}": v for k, v in _benchmark_metric_keys(history[0]["metrics"]).items()})
        logger.update_summary(summary)
    finally:
        logger.finish()

    if interrupted and main:
        log.warning(
            "stopped by %s at step %d; resume with ckpt_path=%s (or ckpt_path=auto with the same run folder)",
            interrupted, step, checkpointer.last_path,
        )
    elif main and history and history[0]["epoch"] == 0 and len(history) > 1:
        print_before_after(history[0]["metrics"], history[-1]["metrics"], ks=tuple(tcfg.recall_ks))
    return {
        "metrics": final, "best_metric": checkpointer.best_metric, "monitor": monitor, "run_dir": str(run_dir),
        "checkpoints": str(ckpt_dir), "metrics_file": str(logger.metrics_path),
        "wandb_dir": str(logger.wandb_dir) if logger.wandb_dir else None, "history": history,
        "interrupted": interrupted, "step": step, "skipped_steps": guard.skipped,
        "weights_hash": state_dict_hash(model.state_dict()), "rank": dist_info.rank,
    }


@torch.no_grad()
def init_aggregator_from_data(model: torch.nn.Module, dataset, device: torch.device, num_images: int,
                              normalize: DeviceNormalize | None = None) -> None:
    """Aggregators that start from data (NetVLAD's k-means centroids) get the backbone features
    of up to ``num_images`` training images, one per place first, drawn reproducibly
    (``normalize``: the loader's ``DeviceNormalize``, for the uint8 images the dataset gives)."""
    normalize = normalize or DeviceNormalize(model.backbone.mean, model.backbone.std)
    was_training = model.training
    model.eval()
    features, seen = [], 0
    for place in range(len(dataset)):
        images, _ = dataset[(place, 0)]
        features.append(model.backbone(normalize(images.to(device)[:1])))  # .to first: encoded images decode there
        seen += 1
        if seen >= num_images:
            break
    log.info("initialising %s from %d training images", type(model.aggregator).__name__, seen)
    model.aggregator.init_from_features(torch.cat(features) if isinstance(features[0], torch.Tensor) else features)
    model.train(was_training)


class NonFiniteGuard:
    """Skip optimizer steps whose loss or gradient norm is NaN/inf; stop after ``patience`` in a row.

    A skipped step leaves weights and optimizer state untouched, so the last good checkpoint
    (and the next one) never contains NaNs.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.skipped = 0
        self.in_a_row = 0

    def finite(self, loss: torch.Tensor, grad_norm: torch.Tensor | None, step: int, optimizer: torch.optim.Optimizer) -> bool:
        if bool(torch.isfinite(loss)) and (grad_norm is None or bool(torch.isfinite(grad_norm))):
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        lr = optimizer.param_groups[-1]["lr"]
        grad = "n/a" if grad_norm is None else grad_norm.item()
        log.warning("step %d: non-finite loss %s / grad norm %s (lr %.3g): step skipped", step, loss.item(), grad, lr)
        if self.in_a_row >= self.patience:
            raise FloatingPointError(
                f"{self.in_a_row} steps in a row with non-finite loss or gradients (last at step {step}: loss "
                f"{loss.item()}, grad norm {grad}, lr {lr:.3g}); training stopped and the last good "
                "checkpoint is untouched. Lower optimizer.lr, set trainer.grad_clip, or use trainer.precision=32"
            )
        return False


def _monitor_key(tcfg: DictConfig, benchmarks: list) -> str | None:
    """``trainer.monitor`` like 'synthetic/R@1'; by default R@1 on the first benchmark. A monitor naming
    a benchmark that is not validated is refused before training (not after the first epoch)."""
    if tcfg.get("monitor"):
        check_monitor(tcfg.monitor, [b.name for b in benchmarks])
        return str(tcfg.monitor)
    return f"{benchmarks[0].name}/R@1" if benchmarks else None


def _benchmark_metric_keys(metrics: dict[str, dict]) -> dict[str, Any]:
    """``{"pitts30k_test": {"R@1": 90.0}}`` -> ``{"pitts30k_test/R@1": 90.0}``: the names the logger records."""
    return {f"{bench}/{k}": v for bench, values in metrics.items() for k, v in values.items()}
