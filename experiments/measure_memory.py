"""Peak memory and speed of one DINOv2-BoQ training step: plain vs gradient caching vs gradient
caching + activation checkpointing (and checkpointing alone).

    python experiments/measure_memory.py                                   # CPU, 32 x 4 at 224
    python experiments/measure_memory.py --places 8 --images 4 --size 224  # smaller, for a busy CPU
    python experiments/measure_memory.py --device cuda --places 160 --images 4 --size 280 --bf16

Every mode runs in its own process (a fresh peak: CUDA max allocated, or on the CPU the peak resident
set size minus the resident size once the model and optimizer are built), in interleaved rounds, so
a busy machine slows all modes alike; a mode that runs out of memory prints "OOM". Speed: images
per second of the median timed step (on a CPU: per second of process CPU time, which a busy machine
does not inflate; use --threads 1 there) (forward, MultiSimilarity miner + loss, backward, AdamW step),
random weights (nothing is downloaded).

``--estimate`` also counts, in this process, the bytes autograd keeps for the backward pass per
image (at --size, with --bf16 autocast) for each mode, and prints the GPU memory a step of the
requested batch needs: weights + gradients + AdamW state + kept activations (grad cache: one chunk's, plus
the frozen blocks' output tokens of the whole batch) + the input batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
from omegaconf import OmegaConf

from vprlab.engine.grad_cache import grad_cache_backward
from vprlab.losses import multi_similarity
from vprlab.models.vpr_model import build_model

MODES = {  # name: (grad-cache chunk or None, activation checkpointing)
    "plain": (False, False),
    "checkpointing": (False, True),
    "grad_cache": (True, False),
    "grad_cache+checkpointing": (True, True),
}


def make_model(args, checkpointing: bool, device: torch.device):
    backbone = OmegaConf.create({
        "_target_": "vprlab.models.backbones.dinov2.DinoV2Backbone", "model_name": args.model, "pretrained": False,
        "num_trainable_blocks": args.trainable_blocks, "train_image_size": [args.size] * 2, "eval_image_size": None,
        "grad_checkpointing": checkpointing,
    })
    aggregator = OmegaConf.create({"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": None,
                                   "num_queries": 64, "num_layers": 2, "row_dim": 32})
    return build_model(backbone, aggregator).to(device).train()


def autocast(args, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def run_mode(args) -> dict:
    """One mode in this process: warm-up steps, then timed steps; peak memory of the whole run."""
    device = torch.device(args.device)
    chunked, checkpointing = MODES[args.mode]
    torch.manual_seed(0)
    model = make_model(args, checkpointing, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = multi_similarity()
    batch = args.places * args.images
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, args.size, args.size, generator=generator).to(device)
    labels = torch.arange(args.places).repeat_interleave(args.images).to(device)
    base = rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    try:
        for i in range(args.warmup + args.steps):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            if chunked:
                grad_cache_backward(model, images, labels, loss_fn, args.chunk, lambda: autocast(args, device))
            else:
                with autocast(args, device):
                    descriptors = model(images)
                loss, _ = loss_fn(descriptors, labels)
                loss.backward()
                del descriptors, loss
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= args.warmup:
                # On a CPU, process CPU seconds: a busy machine (other processes) does not inflate them.
                times.append(time.perf_counter() - tick if device.type == "cuda" else time.process_time() - cpu_tick)
    except torch.OutOfMemoryError:
        return {"mode": args.mode, "oom": True}
    if device.type == "cuda":
        peak, total = torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20
    else:
        total = peak_rss_mb()
        peak = total - base
    step_s = statistics.median(times)
    return {"mode": args.mode, "oom": False, "step_s": step_s, "img_per_s": batch / step_s,
            "peak_mb": peak, "process_peak_mb": total, "base_mb": base}


def saved_activation_bytes(args, checkpointing: bool, images: int) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``images`` images (weights excluded)."""
    device = torch.device("cpu")
    model = make_model(args, checkpointing, device)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.randn(images, 3, args.size, args.size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(args, device):
        out = model(x)
    del out
    return sum(storages.values())


def estimate(args) -> None:
    """GPU memory of one step of the requested batch, from the activation bytes counted on a few images."""
    model = make_model(args, False, torch.device("cpu"))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = model.backbone.out_channels
    del model
    n = 2
    per_image = {ckpt: saved_activation_bytes(args, ckpt, n) / n for ckpt in (False, True)}
    batch = args.places * args.images
    weights_gb = (params * 4 + trainable * 4 * 3) / 2**30  # fp32 weights, gradients, AdamW exp_avg + exp_avg_sq
    print(f"\nestimate for {args.places} x {args.images} at {args.size} ({'bf16 autocast' if args.bf16 else 'fp32'}): "
          f"{params / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trained) -> weights + grads + AdamW {weights_gb:.2f} GB")
    rows = []
    for mode, (chunked, ckpt) in MODES.items():
        kept = per_image[ckpt] * (args.chunk if chunked else batch)
        if chunked:  # the frozen blocks' output tokens of the whole batch (fp32), kept between the two passes
            kept += batch * ((args.size // 14) ** 2 + 1) * width * 4
        # The inputs of the whole batch stay on the device; a chunked step also keeps B descriptors and their grads.
        inputs = batch * 3 * args.size**2 * 4
        rows.append((mode, kept / 2**30, (kept + inputs) / 2**30 + weights_gb))
    print(f"{'mode':<26}{'kept activations GB':>22}{'step total GB (approx.)':>26}")
    for mode, kept, total in rows:
        print(f"{mode:<26}{kept:>22.2f}{total:>26.2f}")
    print(f"(activations per image: {per_image[False] / 2**20:.1f} MB, with checkpointing {per_image[True] / 2**20:.1f} MB;"
          f" grad-cache chunk {args.chunk} images; transient buffers of the largest layer come on top)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--places", type=int, default=32)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (the GPU recipe)")
    parser.add_argument("--chunk", type=int, default=32, help="images per grad-cache chunk")
    parser.add_argument("--model", default="vit_base_patch14_dinov2")
    parser.add_argument("--trainable-blocks", type=int, default=2)
    parser.add_argument("--modes", default="plain,grad_cache,grad_cache+checkpointing",
                        help=f"comma-separated, from {list(MODES)}")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all modes")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--estimate", action="store_true", help="also print the GPU memory estimate (see above)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode in a child process
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown --modes {unknown}; choose from {list(MODES)}")
    print(f"DINOv2-BoQ ({args.model}, last {args.trainable_blocks} blocks trained), {args.places} x {args.images} "
          f"at {args.size}, {'bf16' if args.bf16 else 'fp32'}, {args.device}, grad-cache chunk {args.chunk}; "
          f"{args.rounds} interleaved rounds x ({args.warmup} warm-up + {args.steps} timed steps)", flush=True)
    results: dict[str, list[dict]] = {m: [] for m in modes}
    child = [sys.executable, __file__, *sys.argv[1:]]
    for round_ in range(args.rounds):
        for mode in modes:
            proc = subprocess.run([*child, "--mode", mode], capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                oom = any("out of memory" in line.lower() or "killed" in line.lower() for line in tail) or proc.returncode == -9
                result = {"mode": mode, "oom": oom, "error": " | ".join(tail)}
            else:
                result = json.loads(lines[-1])
            results[mode].append(result)
            shown = "OOM" if result.get("oom") else (f"error: {result['error']}" if "error" in result else
                     f"{result['img_per_s']:.2f} img/s, peak {result['peak_mb']:.0f} MB")
            print(f"  round {round_ + 1} {mode:<26} {shown}", flush=True)

    if args.rounds < 1:  # --rounds 0 --estimate: the estimate alone
        if args.estimate:
            estimate(args)
        return
    plain = results.get("plain", [])
    plain_speed = statistics.median([r["img_per_s"] for r in plain]) if plain and not any(r.get("oom") or "error" in r for r in plain) else None
    what = "peak CUDA allocated" if args.device.startswith("cuda") else "peak RSS above the built model"
    print(f"\n{'mode':<26}{'img/s':>10}{'vs plain':>10}{what:>32}")
    for mode, rows in results.items():
        if any(r.get("oom") for r in rows):
            print(f"{mode:<26}{'OOM':>10}")
            continue
        if any("error" in r for r in rows):
            print(f"{mode:<26}{'error':>10}  {rows[0]['error']}")
            continue
        speed = statistics.median([r["img_per_s"] for r in rows])
        peak = max(r["peak_mb"] for r in rows)
        ratio = f"{speed / plain_speed:.2f}x" if plain_speed else "-"
        print(f"{mode:<26}{speed:>10.2f}{ratio:>10}{peak:>29.0f} MB")
    if args.estimate:
        estimate(args)


if __name__ == "__main__":
    main()
