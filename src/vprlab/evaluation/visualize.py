"""Pictures of an evaluation: retrieved images per query, and BoQ's attention over a query image.

- :func:`save_retrieval_grid`: one row per chosen query, the query then its top-k database images,
  framed green (a positive), red (not a positive) or grey (no ground truth).
- :func:`save_attention_figure`: for a BoQ model, one row per BoQ block and one column per learned
  query, the query's cross-attention over the image (as in the BoQ paper's figures).

Figures are drawn with matplotlib's object API on the Agg canvas (no display, no global backend
switch) and written atomically as PNG.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vprlab.utils.io import atomic_write_bytes

SELECTIONS = ("spread", "failures", "random")
_GREEN, _RED, _GREY, _BLUE = "#1a9850", "#d73027", "#9e9e9e", "#2c7fb8"


@dataclass(frozen=True)
class PictureSettings:
    """What evaluate.py draws (``visualize`` in conf/evaluate.yaml) and how the figures look."""

    num_queries: int = 0  # queries drawn per benchmark (0: none, unless ``queries`` names some)
    top_k: int = 5  # retrieved images per query
    select: str = "spread"  # which queries: spread | failures | random
    queries: Sequence[int] | None = None  # these query indices instead
    seed: int = 0  # of select=random
    attention: bool = True  # BoQ's attention maps too
    attention_queries: Sequence[int] | None = None  # BoQ's learned queries to show (None: spread)
    num_attention_queries: int = 4
    thumb_size: int = 224
    dpi: int = 100
    out_dir: str | None = None  # where evaluate.py writes them

    @classmethod
    def from_config(cls, vis: Any, default_out_dir: str | os.PathLike) -> PictureSettings | None:
        """evaluate.yaml's ``visualize`` node (``out_dir`` null: ``default_out_dir``); None when nothing
        is to be drawn."""
        if not vis or (int(vis.num_queries or 0) <= 0 and not vis.queries):
            return None
        return cls(out_dir=str(vis.out_dir or default_out_dir),
            num_queries=int(vis.num_queries or 0), top_k=int(vis.top_k), select=str(vis.select),
            queries=list(vis.queries or []), seed=int(vis.seed), attention=bool(vis.attention),
            attention_queries=None if vis.attention_queries is None else list(vis.attention_queries),
            num_attention_queries=int(vis.num_attention_queries),
        )


def choose_queries(
    num_queries: int,
    settings: PictureSettings,
    positives: Sequence[np.ndarray] | None = None,
    predictions: np.ndarray | None = None,
) -> list[int]:
    """Indices of the queries to draw: ``settings.queries`` when given, else ``settings.num_queries`` of
    them: ``spread`` evenly over the list, ``random`` (seeded), or ``failures`` (top-1 is not a positive,
    among queries that have one; the first ones in query order)."""
    explicit, count, select, seed = settings.queries, settings.num_queries, settings.select, settings.seed
    if explicit:
        chosen = [int(i) for i in explicit]
        bad = [i for i in chosen if not 0 <= i < num_queries]
        if bad:
            raise ValueError(f"visualize.queries {bad} outside [0, {num_queries}); the benchmark has {num_queries} queries")
        return chosen
    count = min(int(count), num_queries)
    if count <= 0:
        return []
    if select not in SELECTIONS:
        raise ValueError(f"visualize.select={select!r}; use one of {SELECTIONS}")
    if select == "spread":
        return sorted({int(round(v)) for v in np.linspace(0, num_queries - 1, count)})
    if select == "random":
        return sorted(np.random.default_rng(seed).choice(num_queries, size=count, replace=False).tolist())
    if positives is None or predictions is None:
        raise ValueError("visualize.select=failures needs the positives and the predictions")
    failures = [
        i for i, (pos, row) in enumerate(zip(positives, predictions)) if len(pos) and not np.isin(row[0], pos)
    ]
    return failures[:count]


def _thumbnail(path: str, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        return np.asarray(image)


def _frame(ax, colour: str, width: float = 4.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def save_retrieval_grid(
    path: str | os.PathLike,
    benchmark: Any,
    query_indices: Sequence[int],
    run: Any,
    settings: PictureSettings,
    title: str = "",
) -> Path:
    """A PNG grid: per query of ``benchmark`` (its query and database paths, and its positives when it has
    ground truth), the query image then its ``settings.top_k`` retrieved database images (``run.predictions``,
    ``run.scores``: None for no scores); frames are green for a positive, red for a wrong match, grey
    without ground truth."""
    query_paths, db_paths = benchmark.query_paths, benchmark.db_paths
    positives = benchmark.positives if getattr(benchmark, "has_ground_truth", True) else None
    predictions, scores = run.predictions, getattr(run, "scores", None)
    top_k, thumb_size, dpi = settings.top_k, settings.thumb_size, settings.dpi
    from matplotlib.figure import Figure

    if not query_indices:
        raise ValueError("no queries to draw; set visualize.num_queries > 0 or visualize.queries")
    top_k = min(int(top_k), predictions.shape[1])
    rows, cols = len(query_indices), top_k + 1
    aspect = min(max(_thumbnail(query_paths[query_indices[0]], 64).shape[0] / 64, 0.3), 1.5)  # h / w
    fig = Figure(figsize=(2.2 * cols, (2.2 * aspect + 0.5) * rows + (0.4 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, q in enumerate(query_indices):
        pos = None if positives is None else np.asarray(positives[q])
        ax = axes[r][0]
        ax.imshow(_thumbnail(query_paths[q], thumb_size))
        _frame(ax, _BLUE)
        label = f"query {q}" + ("" if pos is None else f"\n{len(pos)} positive(s)")
        ax.set_title(label, fontsize=8)
        for c in range(top_k):
            d = int(predictions[q, c])
            ax = axes[r][c + 1]
            ax.imshow(_thumbnail(db_paths[d], thumb_size))
            if pos is None:
                colour, mark = _GREY, ""
            else:
                correct = bool(np.isin(d, pos))
                colour, mark = (_GREEN, " correct") if correct else (_RED, " wrong")
            score = "" if scores is None else f" s={float(scores[q, c]):.3f}"
            ax.set_title(f"#{c + 1} db {d}{mark}{score}", fontsize=7, color=colour if mark else "black")
            _frame(ax, colour)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)


def feature_grid(num_tokens: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) with h * w = ``num_tokens`` whose aspect ratio is closest to the image's: the
    backbone's feature map behind BoQ's flattened tokens."""
    best = None
    for h in range(1, num_tokens + 1):
        if num_tokens % h:
            continue
        w = num_tokens // h
        error = abs(math.log((h / w) / (height / width)))
        if best is None or error < best[0]:
            best = (error, h, w)
    assert best is not None
    return best[1], best[2]


@torch.inference_mode()
def attention_maps(model: torch.nn.Module, image: torch.Tensor, device: str | torch.device = "cpu") -> list[np.ndarray] | None:
    """Per BoQ block, the cross-attention of every learned query over the image: [Q, h, w] arrays.
    ``image`` is one transformed image [3, H, W]. None for models without attention maps."""
    forward = getattr(model, "forward_with_attention", None)
    if forward is None:
        return None
    was_training = model.training
    model.eval()
    try:
        _, attentions = forward(image.unsqueeze(0).to(device))
    finally:
        model.train(was_training)
    if not attentions:
        return None
    height, width = image.shape[-2:]
    maps = []
    for attention in attentions:
        attention = attention[0].float().cpu()  # [Q, N]
        h, w = feature_grid(attention.shape[-1], height, width)
        maps.append(attention.reshape(attention.shape[0], h, w).numpy())
    return maps


def save_attention_figure(
    path: str | os.PathLike,
    image_path: str,
    maps: Sequence[np.ndarray],
    image_size: tuple[int, int],
    settings: PictureSettings,
    title: str = "",
) -> Path:
    """Rows: BoQ blocks; columns: the image, then the attention of each chosen learned query
    upsampled to the image (bilinear) and overlaid. ``settings.attention_queries`` defaults to
    ``settings.num_attention_queries`` indices spread over the queries (the same ones for every image, so a
    query's role can be compared across images)."""
    from matplotlib.figure import Figure

    learned_queries, num_learned_queries = settings.attention_queries, settings.num_attention_queries

    num_q = maps[0].shape[0]
    if learned_queries is None:
        learned_queries = sorted({int(round(v)) for v in np.linspace(0, num_q - 1, min(num_learned_queries, num_q))})
    bad = [q for q in learned_queries if not 0 <= q < num_q]
    if bad:
        raise ValueError(f"visualize.attention_queries {bad} outside [0, {num_q}); the model has {num_q} learned queries")
    height, width = image_size
    with Image.open(image_path) as image:
        picture = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))
    rows, cols = len(maps), len(learned_queries) + 1
    fig = Figure(figsize=(2.4 * cols * width / max(height, width) + 0.4, 2.4 * rows * height / max(height, width) + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for b, block in enumerate(maps):
        ax = axes[b][0]
        ax.imshow(picture)
        _frame(ax, _BLUE, 1.0)
        ax.set_ylabel(f"block {b + 1}", fontsize=8)
        for c, q in enumerate(learned_queries):
            heat = torch.from_numpy(np.ascontiguousarray(block[q]))[None, None]
            heat = torch.nn.functional.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            heat = (heat / heat.max().clamp_min(1e-12)).numpy()
            ax = axes[b][c + 1]
            ax.imshow(picture)
            ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            _frame(ax, _GREY, 1.0)
            if b == 0:
                ax.set_title(f"query {q}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, settings.dpi)


def draw_attention(
    model: torch.nn.Module,
    transform: Callable,
    image_path: str,
    path: str | os.PathLike,
    settings: PictureSettings,
    title: str = "",
) -> Path | None:
    """Run ``model`` (on the device its weights are on) on one image and save its attention figure, drawn at
    the size ``transform`` gives; None for models without attention."""
    with Image.open(image_path) as image:
        tensor = transform(image.convert("RGB"))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    maps = attention_maps(model, tensor, device)
    if maps is None:
        return None
    return save_attention_figure(path, image_path, maps, tuple(int(v) for v in tensor.shape[-2:]), settings, title)
