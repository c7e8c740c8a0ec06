"""Where a vprlab training step's time goes: data wait, forward, loss + miner, backward, optimizer.

    python experiments/profile_train_step.py --data DIR/gsv [--steps 4 --threads 1 --precision 32 --channels-last]

Builds the model, loader, loss and optimizer the way ``engine/trainer.py`` does, from train.yaml
with the same overrides as ``measure_train_step.py`` (ResNet50-BoQ 16384-d, random weights,
8 places x 4 images at 160x160), runs the loop body phase by phase with a wall clock around each
phase (on the CPU every op is synchronous, so the clocks are exact), drops the first step, and
prints the mean time per phase; ``--ops`` adds torch.profiler's top operators of the last step.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from vprlab.data.loaders import build_train_loader
from vprlab.engine.optim import make_optimizer
from vprlab.losses import build_loss
from vprlab.models.cpu_kernels import onednn_linears
from vprlab.models.vpr_model import build_model
from vprlab.utils.device import Precision

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="GSV-Cities-layout folder with a SynthCity0 city")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--ops", action="store_true", help="torch.profiler table of the last step")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: no such folder (a GSV-Cities-layout folder with a SynthCity0 city)")
    torch.set_num_threads(args.threads)
    overrides = ["backbone=resnet50", "backbone.pretrained=false", "aggregator=boq", "dataset=synthetic",
                 f"dataset.root={args.data}", "dataset.cities=[SynthCity0]", "dataset.places_per_batch=8",
                 "dataset.img_per_place=4", f"dataset.image_size=[{args.size},{args.size}]",
                 f"dataset.num_workers={args.num_workers}", "dataset.persistent_workers=false", "benchmark=[]",
                 "logger=none"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    device = torch.device("cpu")
    precision = Precision.from_config(args.precision, device)
    model = build_model(cfg.backbone, cfg.aggregator)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader, sampler, _ = build_train_loader(cfg.dataset, mean=model.backbone.mean, std=model.backbone.std, seed=1)
    loss_fn = build_loss(cfg.loss, cfg.get("miner"))
    optimizer = make_optimizer(cfg.optimizer, model)
    sampler.set_epoch(0)
    model.train()
    times: dict[str, list[float]] = defaultdict(list)
    it = iter(loader)
    with onednn_linears(model, enabled=True):
        for step in range(args.steps):
            prof = None
            if args.ops and step == args.steps - 1:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
            t0 = time.perf_counter()
            images, labels = next(it)
            images = loader.normalize(images)  # uint8 from the loader; the trainer normalises on the device
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            t1 = time.perf_counter()
            with precision.autocast():
                features = model.backbone(images)
                t2 = time.perf_counter()
                descriptors = model._descriptor(features)  # what model(images) does after the backbone
            t3 = time.perf_counter()
            loss, _ = loss_fn(descriptors, labels)
            t4 = time.perf_counter()
            loss.backward()
            t5 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
            bool(torch.isfinite(loss))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t6 = time.perf_counter()
            if prof is not None:
                prof.__exit__(None, None, None)
            if step == 0:
                continue
            for name, a, b in [("data wait", t0, t1), ("forward backbone", t1, t2), ("forward BoQ", t2, t3),
                               ("loss + miner", t3, t4), ("backward", t4, t5), ("clip norm + optimizer", t5, t6)]:
                times[name].append(b - a)
    total = sum(sum(v) / len(v) for v in times.values())
    print(f"vprlab training step, ResNet50-BoQ {args.size}x{args.size}, 8x4, {args.threads} thread(s), "
          f"precision {args.precision}{', channels_last' if args.channels_last else ''}, mean of {args.steps - 1} steps")
    print("| phase | ms | share |\n|---|---:|---:|")
    for name, v in times.items():
        mean = sum(v) / len(v)
        print(f"| {name} | {1000 * mean:.0f} | {100 * mean / total:.0f}% |")
    print(f"| step | {1000 * total:.0f} | {32 / total:.2f} img/s |")
    if prof is not None:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
