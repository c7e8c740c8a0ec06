"""Where the time of a ResNet50-BoQ training step goes on a GPU, and which exact options speed it up.

    python experiments/gpu_train_step.py --device cuda --batch-size 256 --out step.json

One process, the same model and inputs for every variant (bf16 autocast, channels_last, 320x320,
P x 4 batches, MultiSimilarity miner + loss as the trainer computes them). Variants:
- ``base``: AdamW (for-each implementation), eager model: what the trainer runs today;
- ``fused``: AdamW(fused=True): one kernel for the whole optimizer step;
- ``compile``: torch.compile of the model for the training forward (and backward), fused AdamW;
- ``compile_cudagraphs``: the same with mode="max-autotune-no-cudagraphs" is not tried (minutes
  of autotuning); instead ``reduce-overhead`` (CUDA graphs) when --cudagraphs is given.
For ``base`` it also times the parts on their own: forward, loss (miner included), backward,
optimizer step, so the bound is visible. Every number is the median of --iters timed steps after
--warmup steps; img/s counts the images of one step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from measure_speed import (
    timed as median_time,  # experiments/ is the script's folder, on sys.path
)

from vprlab.losses import multi_similarity
from vprlab.models.vpr_model import build_model
from vprlab.utils.io import atomic_write_text


def make_model(device: torch.device, trainable_blocks: int) -> torch.nn.Module:
    backbone = dict(_target_="vprlab.models.backbones.resnet.ResNetBackbone", model_name="resnet50",
                    pretrained=False, num_trainable_blocks=trainable_blocks)
    aggregator = {"_target_": "vprlab.models.aggregators.boq.BoQ", "proj_channels": 512, "num_queries": 64,
                  "num_layers": 2, "row_dim": 32}
    model = build_model(backbone, aggregator).to(device).to(memory_format=torch.channels_last)
    return model.train()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256, help="images per step (P places x 4)")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--trainable-blocks", type=int, default=2, help="BoQ's training script trains layer2 + layer3")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=["base", "fused", "compile"])
    p.add_argument("--cudagraphs", action="store_true", help="also try torch.compile(mode='reduce-overhead')")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    k = 4
    labels = torch.arange(args.batch_size // k, device=device).repeat_interleave(k)
    x = torch.randn(labels.numel(), 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = multi_similarity()
    n = labels.numel()
    results: dict = {"batch": n, "image_size": args.image_size, "trainable_blocks": args.trainable_blocks,
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    variants = list(args.variants) + (["compile_cudagraphs"] if args.cudagraphs else [])
    for variant in variants:
        model = make_model(device, args.trainable_blocks)
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5, fused=variant != "base" and device.type == "cuda")
        forward = model
        if variant == "compile":
            forward = torch.compile(model)
        elif variant == "compile_cudagraphs":
            forward = torch.compile(model, mode="reduce-overhead")

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                desc = forward(x)
            loss, _ = loss_fn(desc, labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        try:
            seconds = median_time(step, device, args.warmup, args.iters)
        except Exception as err:  # a variant that fails (compile on this build...) is reported, not fatal
            results[variant] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"{variant}: failed: {results[variant]['error']}", flush=True)
            continue
        entry = {"train_step_img_s": n / seconds, "step_s": seconds, "total_s_incl_warmup": time.perf_counter() - start}
        if device.type == "cuda":
            entry["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        if variant == "base":  # the parts on their own
            with torch.autocast(device.type, dtype=torch.bfloat16):
                t_fwd = median_time(lambda: model(x), device, 1, args.iters)
                desc = model(x).detach().float().requires_grad_()
            t_loss = median_time(lambda: loss_fn(desc, labels), device, 1, args.iters)

            def fwd_bwd() -> None:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    out = model(x)
                out.float().sum().backward()

            t_fwd_bwd = median_time(fwd_bwd, device, 1, args.iters)
            t_opt = median_time(opt.step, device, 1, args.iters)
            opt.zero_grad(set_to_none=True)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                t_eval = median_time(lambda: model(x), device, 1, args.iters)
            entry.update(forward_s=t_fwd, loss_s=t_loss, forward_backward_s=t_fwd_bwd, optimizer_s=t_opt,
                         no_grad_forward_img_s=n / t_eval)
        results[variant] = entry
        print(f"{variant}: " + ", ".join(f"{key} {value:.4g}" for key, value in entry.items()), flush=True)
        model = opt = forward = None  # free the variant before the next one
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = results.get("base", {}).get("train_step_img_s")
    for variant in variants:
        value = results.get(variant, {}).get("train_step_img_s")
        if base and value:
            print(f"{variant}: {value:,.0f} img/s ({value / base:.2f}x base)")
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=1))  # makes the folder if missing
    return results


if __name__ == "__main__":
    main()
