"""Training input pipeline, places/s per core: vprlab's training input against the ORIGINAL BoQ input.

    python experiments/measure_input.py --root /tmp/gsv640 --places 64 --rounds 5
    python experiments/measure_input.py --root /tmp/gsv640 --only original   # one path, for farm-bench
    python experiments/measure_input.py --root /tmp/gsv640 --mode train --steps 6

``--mode pipeline`` (default): one process, one thread (``OMP_NUM_THREADS=1``,
``torch.set_num_threads(1)``), the same files for every path. ``--root`` is a GSV-Cities-layout
folder; it is generated when missing (``vprlab synth`` street scenes, 640x480 JPEGs at quality 90,
about 60 KB each, as GSV-Cities' images are). Each round times every path once over the same
``--places`` places (K images each, batches of ``--batch-places`` places), in turn, starting with a
different path each round; places/s are reported per path and, per round, as the ratio to the
original's places/s of the same round (min / median / max over rounds). Both wall time and the
process's CPU time are measured: other processes on the machine slow the wall clock, the CPU
time per place much less.

Paths (``--paths``, comma-separated):

- ``original``: the original BoQ training input, reimplemented here from its facts
  (Bag-of-Queries ``src/dataloaders/gsv_cities.py`` and ``datamodule.py``): per image
  ``torchvision.io.decode_image(path, mode=RGB)``, then torchvision v2 ``Resize((S, S),
  interpolation=3)`` (bicubic; v2 antialiases by default), ``RandAugment(num_ops=3, magnitude=15,
  interpolation=2)``, ``ToDtype(float32, scale=True)``, ``Normalize(ImageNet)``; a place is the
  stack of its K images and the DataLoader's default collate stacks the places. Its per-place
  pandas lookups (``df.loc``, ``sample``, ``iterrows``) are left out, which favours the original.
- ``vprlab``: vprlab's training input with the default settings: ``build_train_loader`` on
  the dataset config's defaults (``decoder=torchvision``), iterated with ``num_workers=0``: the
  dataset items and the collate, exactly what a DataLoader worker computes. Batches are uint8;
  the trainer converts and normalises them on the training device (not counted here; the
  ``vprlab+normalize`` path adds that step on the CPU).
- ``pil`` / ``device``: the same with ``dataset.decoder=pil`` / ``device`` (on a CPU machine
  ``device`` decodes in this process: for completeness, not a GPU figure).
- ``cache``: ``vprlab`` on the resized copy of the folder (``vprlab resize-cache`` to the train
  size, written next to ``--root`` when missing): the documented setting for GSV-Cities recipes.
- ``previous``: the pipeline vprlab used before (PIL decode, torchvision v1 PIL ``Resize`` bicubic,
  v1 ``RandAugment`` on the PIL image, ``ToTensor``, ``Normalize``), for reference.

``--mode train``: ``train.py`` end to end on the folder (ResNet50-BoQ by default, a few steps on
the CPU, data loaded in the loop) against the model-only step (the same model, optimizer and loss
on one batch already in memory), both as img/s, the share of the end-to-end time that is not the
model step, and the loader's own time per batch (the same batches, iterated alone) as a share of
an end-to-end step. The two runs happen one after the other: on a busy machine their difference
is mostly the machine, the loader's share is the input pipeline's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PATHS = ("original", "vprlab", "vprlab+normalize", "pil", "device", "previous", "cache")


# ----------------------------------------------------------------------------- data
def ensure_data(root: Path, places: int, images_per_place: int, size: tuple[int, int]) -> Path:
    """``root`` as a GSV-Cities tree; generated (two cities of synthetic street scenes) when missing."""
    if (root / "Dataframes").is_dir():
        return root
    from vprlab.data.synthetic import SyntheticConfig, generate_synthetic

    paths = generate_synthetic(root.parent / (root.name + "_synth"), SyntheticConfig(
        num_train_places=places, images_per_place=images_per_place, num_cities=2, num_bench_places=1,
        image_size=size))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists() or root.is_symlink():
        root.unlink()
    root.symlink_to(paths.gsv_root)
    return root


def resized_copy(root: Path, size: int, out: Path | None = None) -> Path:
    """``vprlab resize-cache`` of ``root`` at ``size`` x ``size`` into ``out`` (default: next to it), written once."""
    from vprlab.data.resize_cache import resize_tree

    out = out or root.parent / f"{root.name}_{size}"
    if not (out / "Dataframes").is_dir():
        resize_tree(root, out, size, workers=1)
    return out


def dataset_config(root: Path, image_size: int, batch_places: int, k: int, **extra) -> dict:
    """The dataset config a user gets (conf/dataset/gsv_cities.yaml's defaults) on ``root``, in process."""
    return {"_target_": "vprlab.data.gsv_cities.GSVCitiesDataset", "root": str(root), "cities": None,
            "img_per_place": k, "min_img_per_place": k, "image_size": [image_size, image_size],
            "places_per_batch": batch_places, "num_workers": 0, "persistent_workers": False, **extra}


# ----------------------------------------------------------------------------- the paths
def original_pipeline(image_size: int):
    """The original BoQ input (see the module docstring): a function place -> [K, 3, S, S] float."""
    import torchvision
    import torchvision.transforms.v2 as T

    transform = T.Compose([
        T.Resize((image_size, image_size), interpolation=3),
        T.RandAugment(num_ops=3, magnitude=15, interpolation=2),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=MEAN, std=STD),
    ])

    def place(paths: list[str]) -> torch.Tensor:
        return torch.stack([transform(torchvision.io.decode_image(p, mode=torchvision.io.ImageReadMode.RGB)) for p in paths])

    return place


def previous_pipeline(image_size: int):
    """vprlab's training input before this change: PIL and torchvision v1 transforms."""
    import torchvision.transforms as T
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    transform = T.Compose([
        T.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC, antialias=True),
        T.RandAugment(num_ops=3, magnitude=15, interpolation=InterpolationMode.BILINEAR),
        T.ToTensor(), T.Normalize(mean=MEAN, std=STD),
    ])

    def place(paths: list[str]) -> torch.Tensor:
        out = []
        for p in paths:
            with Image.open(p) as img:
                out.append(transform(img.convert("RGB")))
        return torch.stack(out)

    return place


def make_runner(name: str, args, places: list[int]):
    """A function that computes every batch of ``places`` along path ``name`` and returns the images seen."""
    from torch.utils.data import default_collate

    from vprlab.data.loaders import build_train_loader

    cfg_extra = {"pil": {"decoder": "pil"}, "device": {"decoder": "device"}}.get(name, {})
    root = resized_copy(args.root, args.image_size, args.cache_root) if name == "cache" else args.root
    loader, sampler, dataset = build_train_loader(
        dataset_config(root, args.image_size, args.batch_places, args.k, **cfg_extra), mean=MEAN, std=STD, seed=0)
    sampler.set_epoch(0)
    keys = [key for key in sampler][: len(places)]  # the places, each with its draw seed
    batches = [keys[i:i + args.batch_places] for i in range(0, len(keys) - args.batch_places + 1, args.batch_places)]

    if name in ("original", "previous"):
        pipeline = (original_pipeline if name == "original" else previous_pipeline)(args.image_size)
        # The same K images vprlab draws for each place (GSV-Cities places have about K images anyway).
        files = {key: [dataset.place_image_paths(key[0])[i] for i in _draw(dataset, key)] for key in keys}

        def run() -> int:
            seen = 0
            for batch in batches:
                images = default_collate([pipeline(files[key]) for key in batch])  # [P, K, 3, S, S]
                seen += images.shape[0] * images.shape[1]
            return seen
        return run

    collate = loader.collate_fn
    normalize = loader.normalize if name in ("vprlab+normalize", "device") else None

    def run() -> int:
        seen = 0
        for batch in batches:
            images, _ = collate([dataset[key] for key in batch])
            images = images.to("cpu")  # decoder=device: decodes and transforms here
            if normalize is not None:
                images = normalize(images)
            seen += images.shape[0]
        return seen
    return run


def _draw(dataset, key, with_seed: bool = False):
    """Which of a place's images vprlab draws for ``key`` (the dataset's own rule), and the seed of
    its transforms."""
    import numpy as np

    rng = np.random.default_rng([dataset.seed, key[0], key[1]])
    order = rng.permutation(len(dataset.place_image_paths(key[0])))[: dataset.img_per_place].tolist()
    return (order, int(rng.integers(0, 2**63 - 1))) if with_seed else order


def same_images(args, places: int = 4) -> float:
    """Largest difference (normalised units) between vprlab's default training images and the
    original pipeline's on the same files and the same RandAugment seed: 0 means the same numbers."""
    from vprlab.data.loaders import build_train_loader

    loader, sampler, dataset = build_train_loader(
        dataset_config(args.root, args.image_size, args.batch_places, args.k), mean=MEAN, std=STD, seed=0)
    sampler.set_epoch(0)
    original = original_pipeline(args.image_size)
    worst = 0.0
    for key in list(sampler)[:places]:
        ours = loader.normalize(dataset[key][0])
        order, seed = _draw(dataset, key, with_seed=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the dataset seeds RandAugment once per place, as here
            theirs = original([dataset.place_image_paths(key[0])[i] for i in order])
        worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def bench_pipeline(args) -> dict:
    torch.set_num_threads(1)
    names = [n for n in args.paths.split(",") if n]
    unknown = sorted(set(names) - set(PATHS))
    if unknown:
        raise SystemExit(f"--paths: unknown {unknown}; choose from {list(PATHS)}")
    places = list(range(args.places))
    runners = {name: make_runner(name, args, places) for name in names}
    for run in runners.values():  # warm-up: first decodes, first allocations, file cache
        run()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            seen = runners[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append(seen / args.k / (t1 - t0))
            cpu[name].append(seen / args.k / (c1 - c0))
    result = {"places": args.places, "k": args.k, "image_size": args.image_size, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "max_abs_diff_vs_original": same_images(args), "paths": {}}
    for name in names:
        entry = {"places_per_s": _spread(wall[name]), "places_per_cpu_s": _spread(cpu[name])}
        if "original" in names and name != "original":
            entry["ratio_wall"] = _spread([a / b for a, b in zip(wall[name], wall["original"])])
            entry["ratio_cpu"] = _spread([a / b for a, b in zip(cpu[name], cpu["original"])])
        result["paths"][name] = entry
    return result


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def print_pipeline(result: dict) -> None:
    print(f"{result['places']} places x {result['k']} images of 640x480 -> {result['image_size']}x{result['image_size']}, "
          f"{result['rounds']} interleaved rounds, {result['threads']} thread")
    print(f"vprlab's default training images vs the original's on the same files and seeds: largest difference "
          f"{result['max_abs_diff_vs_original']:.3g} (normalised units; 0 = the same numbers)")
    print(f"{'path':18s} {'places/s (wall) min/med/max':>30s} {'places/CPU-s med':>17s} {'ratio (wall) min/med/max':>26s} {'ratio (CPU) med':>16s}")
    for name, e in result["paths"].items():
        w, c = e["places_per_s"], e["places_per_cpu_s"]
        ratio = e.get("ratio_wall")
        ratio_text = f"{ratio['min']:.2f}/{ratio['median']:.2f}/{ratio['max']:.2f}x" if ratio else "1 (baseline)"
        ratio_cpu = f"{e['ratio_cpu']['median']:.2f}x" if ratio else ""
        print(f"{name:18s} {w['min']:9.1f}/{w['median']:7.1f}/{w['max']:7.1f}      {c['median']:12.1f}     "
              f"{ratio_text:>22s} {ratio_cpu:>14s}")


# ----------------------------------------------------------------------------- train.py end to end
def subset_tree(root: Path, places: int, out: Path) -> Path:
    """A GSV-Cities tree of the first ``places`` places of ``root``'s first city (images linked, not copied),
    so that one epoch of train.py is exactly the steps to time."""
    import pandas as pd

    csv = sorted((root / "Dataframes").glob("*.csv"))[0]
    df = pd.read_csv(csv)
    keep = sorted(df["place_id"].unique())[:places]
    if len(keep) < places:
        raise SystemExit(f"{csv} has {len(keep)} places, fewer than the {places} that --mode train needs")
    (out / "Dataframes").mkdir(parents=True, exist_ok=True)
    df[df["place_id"].isin(keep)].to_csv(out / "Dataframes" / csv.name, index=False)
    (out / "Images").symlink_to((root / "Images").resolve())
    return out


def bench_train(args) -> dict:
    """train.py on the folder (a subprocess, data loaded in the loop) vs the model-only step in process."""
    steps = args.warmup_steps + args.steps
    tmp_data = tempfile.TemporaryDirectory()
    data = subset_tree(args.root, steps * args.batch_places, Path(tmp_data.name) / "gsv")
    overrides = [f"backbone={args.backbone}", "backbone.pretrained=false", "aggregator=boq", "dataset=gsv_cities",
                 f"dataset.root={data}", "dataset.cities=null", f"dataset.places_per_batch={args.batch_places}",
                 f"dataset.img_per_place={args.k}", f"dataset.min_img_per_place={args.k}",
                 f"dataset.image_size=[{args.image_size},{args.image_size}]", f"dataset.num_workers={args.num_workers}",
                 "dataset.persistent_workers=false", "benchmark=[]", "logger=none", "trainer.max_epochs=1",
                 "trainer.log_every_n_steps=1", "trainer.eval_before_training=false", f"trainer.device={args.device}",
                 f"trainer.precision={args.precision}"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"paths.output_dir={out}"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        whole = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"train.py failed:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["train/img_per_s"] for r in rows if "train/img_per_s" in r][args.warmup_steps:steps]
    model_rates, loader_seconds = model_only_step(args, overrides)
    tmp_data.cleanup()
    e2e, model = statistics.median(rates), statistics.median(model_rates)
    images = args.batch_places * args.k
    return {"end_to_end_img_s": e2e, "model_only_img_s": model, "train_py_seconds": whole,
            "not_model_share": max(0.0, 1 - e2e / model), "steps": len(rates), "overrides": overrides,
            "loader_seconds_per_batch": loader_seconds, "loader_share": loader_seconds / (images / e2e)}


def model_only_step(args, overrides: list[str]) -> tuple[list[float], float]:
    """img/s of the training step alone (one batch kept in memory, the same model, loss and optimizer),
    and the seconds the loader takes for one batch (median over the run's batches, this process)."""
    import math

    from hydra import compose, initialize_config_dir

    from vprlab.data.loaders import build_train_loader
    from vprlab.engine.optim import make_optimizer
    from vprlab.losses import build_loss
    from vprlab.models.vpr_model import build_model
    from vprlab.utils.device import Precision

    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    device = torch.device(args.device)
    precision = Precision.from_config(cfg.trainer.precision, device)
    model = build_model(cfg.backbone, cfg.aggregator).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader, sampler, _ = build_train_loader(cfg.dataset, mean=model.backbone.mean, std=model.backbone.std, seed=1)
    sampler.set_epoch(0)
    loader_times, start = [], time.perf_counter()
    for images, labels in loader:
        loader_times.append(time.perf_counter() - start)
        start = time.perf_counter()
    images, labels = loader.normalize(images.to(device)), labels.to(device)
    if cfg.trainer.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, cfg.get("miner")).to(device)
    optimizer = make_optimizer(cfg.optimizer, model)
    model.train()
    rates = []
    for step in range(args.warmup_steps + args.steps):
        t0 = time.perf_counter()
        with precision.autocast():
            descriptors = model(images)
        loss, _ = loss_fn(descriptors, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup_steps:
            rates.append(images.shape[0] / (time.perf_counter() - t0))
    return rates, statistics.median(loader_times)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["pipeline", "train"], default="pipeline")
    p.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "vprlab_gsv640",
                   help="GSV-Cities-layout folder (generated when missing)")
    p.add_argument("--generate-places", type=int, default=128, help="places written when --root is generated")
    p.add_argument("--generate-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--cache-root", type=Path, help="where the resized copy goes (default: <root>_<image-size> next to --root)")
    p.add_argument("--places", type=int, default=64, help="places timed per path per round")
    p.add_argument("--batch-places", type=int, default=16, help="places per batch (P)")
    p.add_argument("-k", type=int, default=4, help="images per place (K)")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--paths", default="original,vprlab,vprlab+normalize,pil,device,previous,cache")
    p.add_argument("--only", choices=PATHS, help="time one path (one round, no warm-up): for farm-bench")
    p.add_argument("--json", type=Path, help="also write the results here")
    # --mode train
    p.add_argument("--backbone", default="resnet50", help="--mode train: ResNet50-BoQ at --image-size by default")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities")
    args.root = ensure_data(args.root, args.generate_places, args.k, tuple(args.generate_size))

    if args.only:
        torch.set_num_threads(1)
        run = make_runner(args.only, args, list(range(args.places)))
        start = time.perf_counter()
        seen = run()
        result = {"path": args.only, "places_per_s": seen / args.k / (time.perf_counter() - start)}
        print(json.dumps(result))
    elif args.mode == "pipeline":
        result = bench_pipeline(args)
        print_pipeline(result)
    else:
        result = bench_train(args)
        print(f"train.py end to end: {result['end_to_end_img_s']:.2f} img/s; model-only step: "
              f"{result['model_only_img_s']:.2f} img/s; not the model step: {100 * result['not_model_share']:.1f}% "
              f"(median of {result['steps']} steps); the loader alone: {result['loader_seconds_per_batch']:.3f} s per batch, "
              f"{100 * result['loader_share']:.1f}% of an end-to-end step")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
