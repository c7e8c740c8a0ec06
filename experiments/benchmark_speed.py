"""Speed benchmark: vprlab's BoQ against a baseline that follows the BoQ code published with
the paper, in the same process, on the same inputs.

    python experiments/benchmark_speed.py                       # BoQ-ResNet50 sizes, CPU
    python experiments/benchmark_speed.py --device cuda --precision bf16 --batch-size 64
    python experiments/benchmark_speed.py --backbone dinov2 --image-size 322 --what model

What it prints (and writes as JSON with --out):
- aggregator eval img/s: feature map -> descriptor, ours (cached query context, fused attention,
  oneDNN matrix products for fp32 on a CPU) vs the baseline (query self-attention recomputed per
  call, attention weights always computed, PyTorch's default kernels), with the ratio and the
  max abs difference of the descriptors (same weights);
- model eval img/s as descriptor extraction runs it and training step img/s as the trainer
  runs it (forward, MultiSimilarity loss, backward, AdamW step); on a CPU in fp32 both also
  with every linear layer through F.linear, and the ratios;
- input pipeline img/s on its own for each ``dataset.decoder`` (GSV-Cities reader on the
  synthetic data, if generated; ``device`` decodes on --device: nvjpeg on CUDA);
- peak memory: CUDA max allocated, or the process's peak RSS on the CPU.
Numbers are medians over --iters timed runs after --warmup runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F
from torch import nn

from vprlab.losses import multi_similarity
from vprlab.models.aggregators import BoQ
from vprlab.models.aggregators import boq as boq_module
from vprlab.models.cpu_kernels import onednn_linear_available, onednn_linears
from vprlab.models.vpr_model import build_model
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD
from vprlab.utils.io import print_results


class PaperStyleBoQBlock(nn.Module):
    """The block as the paper's code runs it: the queries' self-attention is recomputed on
    every call (once per image of the batch) and cross-attention always returns its weights."""

    def __init__(self, dim: int, num_queries: int) -> None:
        super().__init__()
        heads = max(1, dim // 64)
        self.encoder = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.encoder(x)
        q = self.queries.repeat(x.shape[0], 1, 1)
        q = self.norm_q(q + self.self_attn(q, q, q)[0])
        out, attn = self.cross_attn(q, x, x)
        return x, self.norm_out(out), attn


class PaperStyleBoQ(nn.Module):
    def __init__(self, in_channels: int, proj_channels: int, num_queries: int, num_layers: int, row_dim: int) -> None:
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj_channels, 3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(PaperStyleBoQBlock(proj_channels, num_queries) for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.norm_input(self.proj_c(x).flatten(2).permute(0, 2, 1))
        outs, attns = [], []
        for block in self.boqs:
            x, out, attn = block(x)
            outs.append(out)
            attns.append(attn)
        out = self.fc(torch.cat(outs, dim=1).permute(0, 2, 1))
        return F.normalize(out.flatten(1), p=2, dim=-1), attns


BACKBONES = {
    "resnet50": dict(_target_="vprlab.models.backbones.resnet.ResNetBackbone", model_name="resnet50", pretrained=False),
    "resnet18": dict(_target_="vprlab.models.backbones.resnet.ResNetBackbone", model_name="resnet18", pretrained=False),
    "dinov2": dict(_target_="vprlab.models.backbones.dinov2.DinoV2Backbone", pretrained=False),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of one call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def autocast(device: torch.device, precision: str):
    dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def bench_aggregator(args, device: torch.device, in_channels: int, grid: tuple[int, int]) -> dict:
    sizes = dict(in_channels=in_channels, proj_channels=in_channels // 2, num_queries=args.num_queries,
                 num_layers=args.num_layers, row_dim=args.row_dim)
    ours = BoQ(**sizes).to(device).eval()
    baseline = PaperStyleBoQ(**sizes).to(device).eval()
    baseline.load_state_dict(ours.state_dict())  # same parameter names, same weights
    x = torch.randn(args.batch_size, in_channels, *grid, device=device)
    with torch.inference_mode(), autocast(device, args.precision):
        diff = (ours(x, return_attention=False)[0].float() - baseline(x)[0].float()).abs().max().item()
        # Interleaved rounds, so load from other processes hits both sides alike.
        rounds = [(timed(lambda: ours(x, return_attention=False), device, args.warmup, 1),
                   timed(lambda: baseline(x), device, args.warmup, 1),
                   timed(lambda: ours(x, return_attention=True), device, args.warmup, 1)) for _ in range(args.iters)]
        t_ours, t_base, t_maps = (statistics.median(r[i] for r in rounds) for i in range(3))
    n = args.batch_size
    return {
        "aggregator_eval_img_s": n / t_ours, "baseline_aggregator_eval_img_s": n / t_base,
        "aggregator_eval_with_maps_img_s": n / t_maps, "aggregator_speedup": t_base / t_ours,
        "max_abs_diff": diff,
    }


def bench_model(args, device: torch.device) -> dict:
    model = build_model(BACKBONES[args.backbone], {"_target_": "vprlab.models.aggregators.boq.BoQ",
                                                   "proj_channels": None, "num_queries": args.num_queries,
                                                   "num_layers": args.num_layers, "row_dim": args.row_dim}).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    eval_model = torch.compile(model) if args.compile else model
    model.eval()
    results = {}
    with torch.inference_mode(), autocast(device, args.precision):
        # As descriptor extraction runs it: fp32 CPU inference routes nn.Linear through oneDNN.
        with onednn_linears(model, enabled=device.type == "cpu" and args.precision == "32"):
            t_eval = timed(lambda: eval_model(x), device, args.warmup, args.iters)
        if device.type == "cpu" and args.precision == "32" and onednn_linear_available():
            with patch.object(boq_module, "use_onednn", lambda _: False):  # everything through F.linear
                t_plain = timed(lambda: eval_model(x), device, args.warmup, args.iters)
            results = {"model_eval_f_linear_img_s": args.batch_size / t_plain, "model_eval_onednn_speedup": t_plain / t_eval}

    model.train()
    loss_fn = multi_similarity()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    k = 4
    labels = torch.arange(args.batch_size // k, device=device).repeat_interleave(k)
    xb = x[: labels.numel()]

    def train_step() -> None:
        with autocast(device, args.precision):
            desc = model(xb)
        loss, _ = loss_fn(desc, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    on_cpu_fp32 = device.type == "cpu" and args.precision == "32"
    with onednn_linears(model, enabled=on_cpu_fp32):  # as the trainer runs it: frozen layers through oneDNN
        t_train = timed(train_step, device, args.warmup, args.iters)
    results["train_step_img_s"] = labels.numel() / t_train
    if on_cpu_fp32 and onednn_linear_available():
        t_train_plain = timed(train_step, device, args.warmup, args.iters)
        results.update(train_step_f_linear_img_s=labels.numel() / t_train_plain, train_step_onednn_speedup=t_train_plain / t_train)
    return {"model_eval_img_s": args.batch_size / t_eval, **results}


def bench_input_pipeline(args, device: torch.device) -> dict:
    """img/s of the training loader on its own, for each ``dataset.decoder`` asked for; with
    ``device`` decoding the time includes decoding and augmenting each batch on ``device``."""
    root = Path(args.data_dir) / "synthetic" / "gsv"
    if not root.is_dir():
        return {"input_pipeline_img_s": None}
    from vprlab.data.loaders import build_train_loader

    results = {}
    for decoder in args.decoders.split(","):
        cfg = {"_target_": "vprlab.data.gsv_cities.GSVCitiesDataset", "root": str(root), "cities": None,
               "img_per_place": 4, "min_img_per_place": 4, "image_size": args.image_size,
               "places_per_batch": max(2, args.batch_size // 4), "num_workers": args.num_workers, "decoder": decoder}
        loader, sampler, _ = build_train_loader(cfg, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=0,
                                                device_type=device.type)
        sampler.set_epoch(0)
        start, seen = time.perf_counter(), 0
        for i, (images, _) in enumerate(loader):
            images = images.to(device, non_blocking=True)
            if i == args.warmup - 1:  # worker start-up and first batches are not throughput
                sync(device)
                start, seen = time.perf_counter(), 0
                continue
            seen += images.shape[0]
            if i + 1 >= args.iters + args.warmup:
                break
        sync(device)
        results[f"input_pipeline_{decoder}_img_s"] = seen / (time.perf_counter() - start)
    results["input_pipeline_img_s"] = max(results.values())
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet50")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-queries", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--row-dim", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["32", "bf16", "fp16"], default="32")
    p.add_argument("--what", choices=["aggregator", "model", "input", "all"], default="all")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for the eval measurement")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--decoders", default="pil,torchvision,device",
                   help="dataset.decoder values whose input pipeline is measured (comma-separated)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    stride = 14 if args.backbone == "dinov2" else 16
    in_channels = {"resnet50": 1024, "resnet18": 256, "dinov2": 768}[args.backbone]
    grid = (args.image_size // stride, args.image_size // stride)
    results: dict = {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
                     "threads": torch.get_num_threads(), **{k: v for k, v in vars(args).items() if k != "out"}}
    if args.what in ("aggregator", "all"):
        results.update(bench_aggregator(args, device, in_channels, grid))
    if args.what in ("model", "all"):
        results.update(bench_model(args, device))
    if args.what in ("input", "all"):
        results.update(bench_input_pipeline(args, device))
    if results.get("input_pipeline_img_s") and results.get("train_step_img_s"):
        # A step is input-bound when the loader cannot deliver images as fast as the model eats them.
        results["input_bound"] = results["input_pipeline_img_s"] < results["train_step_img_s"]
    results["peak_memory_mb"] = peak_memory_mb(device)

    print_results(results, args.out)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
