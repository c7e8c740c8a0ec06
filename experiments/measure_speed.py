"""Speed measurement: vprlab's BoQ against a baseline that follows the BoQ code published with
the paper, in the same process, on the same inputs.

    python experiments/measure_speed.py                       # BoQ-ResNet50 sizes, CPU
    python experiments/measure_speed.py --device cuda --precision bf16 --batch-size 64
    python experiments/measure_speed.py --backbone dinov2 --image-size 322 --what model

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

With ``--vme /path/to/VPR-methods-evaluation`` it instead compares whole commands: ``evaluate.py
pretrained=boq_resnet50_16384`` against that checkout's ``main.py --method boq --backbone ResNet50``,
same random weights in the release layout, same folder of JPEGs (written here, ``@UTM@`` names),
1 thread and all threads, in interleaved rounds (see :func:`compare_with_vme`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
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


def bench_eval_formats(args, device: torch.device) -> dict:
    """Model eval (as descriptor extraction runs it) plain, with channels_last, with BatchNorm folded, and
    with both (evaluate.py's defaults), interleaved; on a CPU per process CPU second (load-proof)."""
    import copy

    from vprlab.models.fusion import fold_batchnorm

    torch.manual_seed(0)
    plain = build_model(BACKBONES[args.backbone], {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": None,
                                                   "num_queries": args.num_queries, "num_layers": args.num_layers,
                                                   "row_dim": args.row_dim}).to(device).eval()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    xcl = x.contiguous(memory_format=torch.channels_last)
    folded = copy.deepcopy(plain)
    fold_batchnorm(folded)
    variants = {"plain": (plain, x), "channels_last": (copy.deepcopy(plain).to(memory_format=torch.channels_last), xcl),
                "fold_batchnorm": (folded, x), "both": (copy.deepcopy(folded).to(memory_format=torch.channels_last), xcl)}
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode(), autocast(device, args.precision):
        reference = plain(x)
        diffs = {k: (m(i) - reference).abs().max().item() for k, (m, i) in variants.items()}  # also the warm-up
        for _ in range(args.iters):
            for name, (model, inputs) in variants.items():
                with onednn_linears(model, enabled=device.type == "cpu" and args.precision == "32"):
                    sync(device)
                    start = clock()
                    model(inputs)
                    sync(device)
                    times[name].append(clock() - start)
    base = statistics.median(times["plain"])
    results = {}
    for name in variants:
        t = statistics.median(times[name])
        results[f"eval_{name}_img_s"] = args.batch_size / t
        results[f"eval_{name}_speedup"] = base / t
        results[f"eval_{name}_max_abs_diff"] = diffs[name]
    return results


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
            images = loader.normalize(images.to(device, non_blocking=True))  # as the trainer does
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



# ----------------------------------------------------------------------------- whole commands vs VME

REPO = Path(__file__).resolve().parents[1]
# BoQ-ResNet50's release keys backbone.net.N -> torchvision ResNet50 names (VPR-methods-evaluation's
# BoQ builds the backbone from torchvision's ImageNet file and loads the release with strict=False).
_NET_TO_TORCHVISION = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3"}


def write_jpeg_folder(root: Path, num_db: int, num_queries: int, size: tuple[int, int], seed: int = 0) -> None:
    """``root/database`` and ``root/queries`` of ``@east@north@...@.jpg`` files (width x height ``size``): smooth
    random scenes 100 m apart; query i views place i again (shifted by 8 px, new noise) 5 m away."""
    import numpy as np
    from PIL import Image

    if (root / "queries").is_dir() and len(list((root / "queries").iterdir())) == num_queries:
        return
    rng = np.random.default_rng(seed)
    width, height = size
    for folder in ("database", "queries"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(num_db):
        coarse = torch.from_numpy(rng.random((1, 3, height // 16 + 2, width // 16 + 2), dtype=np.float32))
        scene = F.interpolate(coarse, size=(height + 16, width + 16), mode="bicubic", align_corners=False)[0]
        for folder, shift, east, count in (("database", 0, 100.0 * i, num_db), ("queries", 8, 100.0 * i + 5, num_queries)):
            if folder == "queries" and i >= num_queries:
                continue
            crop = scene[:, shift:shift + height, shift:shift + width]
            crop = crop + 0.03 * torch.from_numpy(rng.standard_normal(crop.shape, dtype=np.float32))
            pixels = (crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            name = f"@{east:010.2f}@{1000.0:.2f}@32@T@0@0@@@@@@@{folder[0]}{i:05d}@.jpg"  # sorted by name = by place
            Image.fromarray(pixels).save(root / folder / name, quality=90)


def write_release_weights(torch_home: Path, seed: int = 0) -> Path:
    """Random BoQ-ResNet50 weights in the release layout at ``<torch_home>/hub/checkpoints/resnet50_16384.pth``,
    and the same backbone weights as torchvision's ResNet50 ImageNet file next to it (what VPR-methods-evaluation
    reads for its backbone; the file is only downloaded, and its hash checked, when missing)."""
    import torchvision

    from vprlab.pretrained.layouts import to_release_layout

    checkpoints = torch_home / "hub" / "checkpoints"
    target = checkpoints / "resnet50_16384.pth"
    if target.is_file():
        return target
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(BACKBONES["resnet50"], {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": None,
                                                "num_queries": 64, "num_layers": 2, "row_dim": 32})
    state, _ = to_release_layout(model.state_dict())
    torch.save(state, target)
    tv = torchvision.models.resnet50().state_dict()
    for key, value in state.items():
        parts = key.split(".")
        if parts[:2] == ["backbone", "net"] and parts[2] in _NET_TO_TORCHVISION:
            tv[".".join([_NET_TO_TORCHVISION[parts[2]], *parts[3:]])] = value
    torch.save(tv, checkpoints / torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1])
    return target


def _run_timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command and its reaped children, output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout + proc.stderr
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def compare_with_vme(args) -> dict:
    """Whole-command CPU and wall time of ``evaluate.py pretrained=boq_resnet50_16384`` vs VPR-methods-evaluation's
    ``main.py --method boq`` on the same JPEG folder with the same weights; recalls and descriptors compared."""
    import numpy as np

    vme = Path(args.vme).resolve()
    if not (vme / "main.py").is_file() or not (vme / "vpr_models" / "boq.py").is_file():
        raise SystemExit(f"--vme {vme}: not a VPR-methods-evaluation checkout (no main.py / vpr_models/boq.py)")
    work = Path(args.vme_work or tempfile.mkdtemp(prefix="vprlab-vs-vme-")).resolve()
    width, height = (int(v) for v in args.vme_image_size.lower().split("x"))
    data = work / f"jpegs_{args.vme_db}_{args.vme_queries}_{width}x{height}"
    write_jpeg_folder(data, args.vme_db, args.vme_queries, (width, height))
    torch_home = work / "torch_home"
    weights = write_release_weights(torch_home)
    threads = [int(t) for t in args.vme_threads.split(",")]
    size = [str(args.vme_eval_size)] * 2
    print(f"{args.vme_db} database / {args.vme_queries} query JPEGs of {width}x{height} in {data}; "
          f"evaluated at {'x'.join(size)}; threads {threads}; {args.vme_rounds} interleaved rounds", flush=True)

    def ours(t: int, run: Path) -> list[str]:
        return [sys.executable, str(REPO / "evaluate.py"), "pretrained=boq_resnet50_16384", f"pretrained.path={weights}",
                "benchmark=[custom]", f"benchmark.custom.root={data}", "device=cpu", "cache=true",
                f"cache_dir={run / 'cache'}", f"paths.output_dir={run}", f"hydra.run.dir={run}", "progress=false",
                *args.vme_ours_args.split()]

    def theirs(t: int, run: Path) -> list[str]:
        return [args.vme_python or sys.executable, "main.py", "--method", "boq", "--backbone", "ResNet50",
                "--descriptors_dimension", "16384", "--database_folder", str(data / "database"),
                "--queries_folder", str(data / "queries"), "--device", "cpu", "--image_size", *size,
                "--save_descriptors", "--log_dir", str(run), *args.vme_their_args.split()]

    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    outputs: dict[str, tuple[str, Path]] = {}
    for round_ in range(args.vme_rounds):
        for t in threads:
            tools = [("vprlab", ours), ("vme", theirs)]
            if args.vme_before:  # vprlab with other overrides too (e.g. the old defaults), in the same rounds
                tools.append(("vprlab_before", lambda t, run: [*ours(t, run), *args.vme_before.split()]))
            if round_ % 2:
                tools.reverse()
            for name, command in tools:
                run = work / "runs" / f"{name}_t{t}_r{round_}"
                env = {**os.environ, "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t), "TORCH_HOME": str(torch_home),
                       "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
                       "VPRLAB_PROGRESS": "0", "WANDB_MODE": "disabled"}
                wall, cpu, out = _run_timed(command(t, run), vme if name == "vme" else REPO, env)
                rows.setdefault((name, t), []).append((wall, cpu))
                outputs.setdefault(name, (out, run))
                print(f"  round {round_ + 1}, {t} thread(s), {name:<7} wall {wall:7.1f} s   CPU {cpu:7.1f} s", flush=True)

    # Recalls and descriptors of the first run of each.
    their_out, their_run = outputs["vme"]
    recalls_vme = {f"R@{k}": float(v) for k, v in re.findall(r"R@(\d+): ([\d.]+)", their_out)}
    ours_json = json.loads(next((outputs["vprlab"][1]).rglob("results.json")).read_text())
    found = ours_json if isinstance(ours_json, list) else ours_json.get("rows", ours_json)
    row = found[0] if isinstance(found, list) else found
    recalls_ours = {k: round(float(v), 1) for k, v in row.items() if re.fullmatch(r"R@\d+", str(k))}
    db_vme = np.load(next(Path(their_run).rglob("database_descriptors.npy")))
    q_vme = np.load(next(Path(their_run).rglob("queries_descriptors.npy")))
    cache = outputs["vprlab"][1] / "cache"
    db_ours = np.load(next(cache.rglob("database.npy")))
    q_ours = np.load(next(cache.rglob("queries.npy")))
    diff = max(float(np.abs(db_vme - db_ours).max()), float(np.abs(q_vme - q_ours).max()))

    result = {"vme_recalls": recalls_vme, "vprlab_recalls": recalls_ours, "max_abs_descriptor_diff": diff,
              "recalls_equal": all(abs(recalls_ours.get(k, -1) - v) < 0.05 for k, v in recalls_vme.items()) and bool(recalls_vme)}
    print(f"\nrecalls: VPR-methods-evaluation {recalls_vme}; vprlab {recalls_ours}; "
          f"equal: {result['recalls_equal']}; max |descriptor difference| {diff:.2e}")
    print(f"{'threads':>8}{'VME wall s':>12}{'ours wall s':>12}{'wall ratio':>12}{'VME CPU s':>12}{'ours CPU s':>12}{'CPU ratio':>11}")
    if args.vme_before:
        for t in threads:
            before_wall, before_cpu = (statistics.median(r[i] for r in rows[("vprlab_before", t)]) for i in range(2))
            vme_wall, vme_cpu = (statistics.median(r[i] for r in rows[("vme", t)]) for i in range(2))
            result[f"threads_{t}_before"] = {"vprlab_wall_s": before_wall, "vprlab_cpu_s": before_cpu,
                                             "cpu_speedup": vme_cpu / before_cpu, "wall_speedup": vme_wall / before_wall}
            print(f"{t:>8}  with {args.vme_before!r}: wall {before_wall:.1f} s ({vme_wall / before_wall:.2f}x), "
                  f"CPU {before_cpu:.1f} s ({vme_cpu / before_cpu:.2f}x)")
    for t in threads:
        vme_wall, vme_cpu = (statistics.median(r[i] for r in rows[("vme", t)]) for i in range(2))
        our_wall, our_cpu = (statistics.median(r[i] for r in rows[("vprlab", t)]) for i in range(2))
        result[f"threads_{t}"] = {"vme_wall_s": vme_wall, "vprlab_wall_s": our_wall, "wall_speedup": vme_wall / our_wall,
                                  "vme_cpu_s": vme_cpu, "vprlab_cpu_s": our_cpu, "cpu_speedup": vme_cpu / our_cpu}
        print(f"{t:>8}{vme_wall:>12.1f}{our_wall:>12.1f}{vme_wall / our_wall:>11.2f}x{vme_cpu:>12.1f}{our_cpu:>12.1f}{vme_cpu / our_cpu:>10.2f}x")
    return result


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
    p.add_argument("--what", choices=["aggregator", "model", "input", "formats", "all"], default="all",
                   help="formats: model eval plain / channels_last / BatchNorm folded / both, interleaved")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for the eval measurement")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--decoders", default="pil,torchvision,device",
                   help="dataset.decoder values whose input pipeline is measured (comma-separated)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", help="also write the results as JSON here")
    vme = p.add_argument_group("whole command vs VPR-methods-evaluation (--vme)")
    vme.add_argument("--vme", help="a VPR-methods-evaluation checkout: compare evaluate.py with its main.py --method boq")
    vme.add_argument("--vme-python", help="python that runs its main.py (needs loguru, faiss, sklearn); default: this one")
    vme.add_argument("--vme-work", help="folder for the JPEGs, weights and runs (default: a new temporary folder)")
    vme.add_argument("--vme-db", type=int, default=300)
    vme.add_argument("--vme-queries", type=int, default=100)
    vme.add_argument("--vme-image-size", default="640x480", help="WxH of the JPEGs")
    vme.add_argument("--vme-eval-size", type=int, default=384, help="both resize to this square (BoQ-ResNet50: 384)")
    vme.add_argument("--vme-threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts")
    vme.add_argument("--vme-rounds", type=int, default=2)
    vme.add_argument("--vme-ours-args", default="", help="extra evaluate.py overrides, e.g. 'channels_last=false'")
    vme.add_argument("--vme-before", default="",
                     help="also run evaluate.py with these overrides, e.g. 'channels_last=false fold_batchnorm=false' (the old defaults)")
    vme.add_argument("--vme-their-args", default="", help="extra main.py arguments, e.g. '--batch_size 16'")
    args = p.parse_args(argv)
    if args.vme:
        results = compare_with_vme(args)
        print_results(results, args.out)
        return results
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
    if args.what == "formats":
        results.update(bench_eval_formats(args, device))
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
