"""How an evaluation runs, as one value built once from the config and passed down.

:class:`EvalSettings` holds everything the evaluation path reads besides the model and the benchmark:
the loader (batch size, workers), the device and precision, the recall ks and search depth, the exact
search's options, the descriptor cache and the evaluation preprocessing. ``evaluate.py``
(:meth:`EvalSettings.from_eval_config`, conf/evaluate.yaml), ``vprlab compare`` (the same evaluate.yaml
keys) and the trainer's epoch-end validation (:meth:`EvalSettings.from_train_config`, train.yaml's
``trainer`` keys) each build it once; :func:`~vprlab.evaluation.protocol.run_benchmark`, descriptor
extraction and search read it, so no function on the way takes more than a handful of arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vprlab.data.transforms import EvalPreprocessing
from vprlab.evaluation.cache import DescriptorCache
from vprlab.evaluation.visualize import PictureSettings
from vprlab.models.fusion import fold_batchnorm as fold_batchnorm_into_convs
from vprlab.utils.device import Precision, resolve_device
from vprlab.utils.errors import ConfigError


@dataclass(frozen=True)
class EvalSettings:
    """Everything an evaluation reads besides the model and the benchmark (defaults: a plain CPU run)."""

    batch_size: int = 32
    num_workers: int = 0
    device: str | torch.device = "cpu"  # a name ("auto", "cuda:1") is resolved to a torch.device
    ks: Sequence[int] = (1, 5, 10, 20)
    amp_dtype: torch.dtype | str | None = None  # autocast dtype; None: float32
    precision: str = "32"  # the name results rows record
    progress: bool = True
    db_chunk_size: int | None = None  # exact search in database chunks of this many rows
    use_gpu: bool | str = "auto"  # faiss GPUs: "auto", True (required), False
    search_float16: bool = False
    k: int | None = None  # predictions kept per query; at least max(ks) (and the pictures' top_k)
    submission_top_k: int | None = None  # predictions per query for a benchmark with a submission_format
    cache_dir: str | None = None  # the descriptor cache; None: no cache
    cache_dtype: str = "float32"
    image_size: Any = None  # the size when a benchmark gives none (None: the model's own)
    preprocessing: EvalPreprocessing | None = None  # instead of the model's (trainer.val_preprocessing)
    channels_last: bool = False  # NHWC model and batches
    fold_batchnorm: bool = False  # BatchNorm folded into its convolution (evaluation only)
    pictures: PictureSettings | None = None  # what evaluate.py draws (None: nothing)
    protocol: str | None = None  # released models: a named eval protocol instead of their own preprocessing

    def __post_init__(self) -> None:
        device = self.device if isinstance(self.device, torch.device) else resolve_device(str(self.device))
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def replace(self, **changes: Any) -> EvalSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_eval_config(cls, cfg: DictConfig) -> EvalSettings:
        """conf/evaluate.yaml's keys (evaluate.py, ``vprlab compare``); a key missing from a hand-made
        config is an error, not a silently different value."""
        device = resolve_device(str(cfg.device))
        precision = Precision.from_config(cfg.precision or "32", device)
        ks = tuple(int(k) for k in cfg.recall_ks)
        return cls(
            batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers), device=device, ks=ks,
            amp_dtype=precision.dtype, precision=precision.name, progress=bool(cfg.progress),
            db_chunk_size=cfg.db_chunk_size, use_gpu=cfg.faiss_gpu, search_float16=bool(cfg.search_float16),
            submission_top_k=int(cfg.submission_top_k),
            cache_dir=str(cfg.cache_dir) if cfg.cache else None, cache_dtype=str(cfg.cache_dtype),
            channels_last=bool(cfg.channels_last), fold_batchnorm=bool(cfg.fold_batchnorm),
            pictures=PictureSettings.from_config(cfg.visualize, Path(str(cfg.results_dir)) / "visuals"),
        )

    @classmethod
    def from_train_config(
        cls, cfg: DictConfig, device: torch.device, num_workers: int, backbone: torch.nn.Module,
    ) -> EvalSettings:
        """The trainer's epoch-end validation: train.yaml's ``trainer`` keys (eval_batch_size, recall_ks,
        precision, val_preprocessing), on the training ``device`` with the training loader's ``num_workers``;
        ``backbone`` gives the normalisation of ``trainer.val_preprocessing``. No cache (the weights change)."""
        tcfg = cfg.trainer
        precision = Precision.from_config(tcfg.precision, device)
        return cls(
            batch_size=int(tcfg.eval_batch_size), num_workers=int(num_workers), device=device,
            ks=tuple(tcfg.recall_ks), amp_dtype=precision.dtype, precision=precision.name,
            preprocessing=validation_preprocessing(tcfg.get("val_preprocessing"), backbone),
        )

    def search_k(self, benchmark: Any) -> int:
        """How many predictions per query: the recall ks, the pictures and the submission file."""
        k = max(int(self.k or 0), *self.ks)
        if self.pictures is not None:
            k = max(k, int(self.pictures.top_k))
        if getattr(benchmark, "submission_format", None) and self.submission_top_k:
            k = max(k, int(self.submission_top_k))
        return k

    def descriptor_cache(self) -> DescriptorCache | None:
        return DescriptorCache(self.cache_dir, dtype=self.cache_dtype) if self.cache_dir is not None else None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device, with BatchNorm folded and NHWC weights when these settings ask for them."""
        model.to(self.device)
        if self.fold_batchnorm:  # evaluation only: BatchNorm folded into its convolution (models/fusion.py)
            fold_batchnorm_into_convs(model.eval())
        if self.channels_last:  # NHWC: faster convolutions (CPU oneDNN, tensor cores)
            model.to(memory_format=torch.channels_last)
        return model


def validation_preprocessing(cfg: Any, backbone: torch.nn.Module) -> EvalPreprocessing | None:
    """``trainer.val_preprocessing``: how the epoch-end validation prepares its images when a recipe's
    own code validates differently from the final evaluation (SALAD: 224x224 PIL bilinear during
    training, 322x322 for its results); null = the benchmark's size or the backbone's ``eval_image_size``."""
    if not cfg:
        return None
    fields = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    try:
        return EvalPreprocessing(**fields, mean=tuple(backbone.mean), std=tuple(backbone.std))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"trainer.val_preprocessing={fields}: {err}; give size [H, W], interpolation (bilinear | bicubic) "
            "and stage (pil | tensor | normalized), or null for the benchmark's / backbone's evaluation size"
        ) from err
