"""Training img/s of vprlab's train.py against the ORIGINAL BoQ training code (PyTorch Lightning).

    python experiments/measure_train_step.py --boq-repo /path/to/Bag-of-Queries \\
        --boq-python /path/to/venv-with-lightning/bin/python [--steps 6 --warmup 2 --rounds 2 --precision 32,bf16]

Both sides train ResNet50-BoQ (16384-d, layer4 cropped, layer2 + layer3 trained: the original
script's ``unfreeze_n_blocks=2``) from random weights on the same synthetic GSV-Cities folder
(640x480 JPEGs, written once by ``vprlab synth``), P places x K images per batch at SIZE x SIZE,
RandAugment(3, 15), MultiSimilarity miner + loss, AdamW, with the same number of loader worker
processes and compute threads. Each run is its own subprocess; the runs of the two sides alternate
(round 1: vprlab, original; round 2: ...), for every thread count and precision.

Steady-state img/s: the first ``--warmup`` steps of each run are dropped (loader worker start, first
allocations, oneDNN primitive creation); img/s = images of the next ``--steps`` steps / their wall
time. vprlab: from ``train/img_per_s`` logged every step in metrics.jsonl (the time from the end of
the previous step's logging to the end of this step: data wait, forward, loss, backward, optimizer).
Original: the wall time between Lightning's ``on_train_batch_end`` of step ``warmup`` and of the
last step (everything in Lightning's loop). The data folder has exactly (warmup + steps) batches,
so vprlab's one epoch and the original's ``max_steps`` stop at the same step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(root: Path, places: int, images: int) -> Path:
    """A GSV-Cities-layout folder with exactly ``places`` places of ``images`` 640x480 JPEGs."""
    out = root / f"synth_gsv_{places}x{images}"
    if not (out / "gsv" / "Dataframes").exists():
        subprocess.run([sys.executable, "-m", "vprlab", "synth", "--root", str(out), "--num-train-places", str(places),
                        "--images-per-place", str(images), "--num-cities", "1", "--num-bench-places", "2",
                        "--image-size", "480", "640"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return out / "gsv"


def run_vprlab(args, data: Path, threads: int, precision: str, extra: list[str], workdir: Path) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [sys.executable, str(ROOT / "train.py"), "backbone=resnet50", "backbone.pretrained=false", "aggregator=boq",
           "dataset=synthetic", f"dataset.root={data}", "dataset.cities=[SynthCity0]",
           f"dataset.places_per_batch={args.places}", f"dataset.img_per_place={args.images}",
           f"dataset.image_size=[{args.size},{args.size}]", f"dataset.num_workers={args.num_workers}",
           "dataset.persistent_workers=false", "benchmark=[]", "logger=none", "trainer.max_epochs=1",
           f"trainer.precision={precision}", "trainer.log_every_n_steps=1", "trainer.device=cpu",
           f"paths.output_dir={run_dir}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["train/img_per_s"] for r in rows if "train/img_per_s" in r]
    if len(rates) != args.warmup + args.steps:
        raise RuntimeError(f"vprlab logged {len(rates)} steps, expected {args.warmup + args.steps} ({run_dir})")
    measured = rates[args.warmup:]
    batch = args.places * args.images
    return batch * len(measured) / sum(batch / r for r in measured)


def run_original(args, data: Path, threads: int, precision: str) -> float:
    cmd = [args.boq_python, str(ROOT / "experiments" / "boq_original_train_steps.py"), "--boq-repo", args.boq_repo,
           "--data", str(data), "--steps", str(args.warmup + args.steps), "--places", str(args.places),
           "--images", str(args.images), "--size", str(args.size), "--num-workers", str(args.num_workers),
           "--threads", str(threads), "--precision", precision]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    ends = result["ends"]
    if len(ends) != args.warmup + args.steps:
        raise RuntimeError(f"the original ran {len(ends)} steps, expected {args.warmup + args.steps}")
    return result["images_per_step"] * args.steps / (ends[-1] - ends[args.warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boq-repo", required=True, help="checkout of github.com/amaralibey/Bag-of-Queries")
    parser.add_argument("--boq-python", required=True, help="python with lightning, pytorch-metric-learning, faiss, rich, pandas")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of each run (>= 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="32", help="comma list of 32, bf16")
    parser.add_argument("--threads", default="1,all", help="comma list; all = os.cpu_count()")
    parser.add_argument("--places", type=int, default=8)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--num-workers", type=int, default=1, help="loader worker processes, both sides")
    parser.add_argument("--nchw", action="store_true", help="also run vprlab with trainer.channels_last=false (the old default)")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "vprlab_bench_train"))
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if not Path(args.boq_repo).is_dir():
        parser.error(f"--boq-repo {args.boq_repo}: no such folder (a checkout of github.com/amaralibey/Bag-of-Queries)")
    if not Path(args.boq_python).is_file():
        parser.error(f"--boq-python {args.boq_python}: no such file")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step includes the loader's start)")

    workdir = Path(args.data_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = make_data(workdir, args.places * (args.warmup + args.steps), args.images)
    threads_list = [os.cpu_count() if t == "all" else int(t) for t in args.threads.split(",")]
    variants = {"vprlab": []}
    if args.nchw:
        variants["vprlab NCHW"] = ["trainer.channels_last=false"]
    results = []
    for precision in args.precision.split(","):
        for threads in threads_list:
            rates: dict[str, list[float]] = {name: [] for name in [*variants, "original"]}
            for rnd in range(args.rounds):
                for name, extra in variants.items():
                    rates[name].append(run_vprlab(args, data, threads, precision, extra, workdir))
                    print(f"  {precision} {threads} thr round {rnd + 1}: {name} {rates[name][-1]:.2f} img/s", flush=True)
                rates["original"].append(run_original(args, data, threads, precision))
                print(f"  {precision} {threads} thr round {rnd + 1}: original {rates['original'][-1]:.2f} img/s", flush=True)
            median = {name: statistics.median(v) for name, v in rates.items()}
            results.append({"precision": precision, "threads": threads, "img_per_s": median, "rounds": rates,
                            "ratio": {name: median[name] / median["original"] for name in variants}})

    shape = f"ResNet50-BoQ 16384-d, {args.size}x{args.size}, {args.places} places x {args.images} images"
    print(f"\n{shape}, {args.steps} measured steps after {args.warmup} warm-up, median of {args.rounds} rounds, "
          f"{args.num_workers} loader worker(s)")
    names = [*variants, "original"]
    print("| precision | threads | " + " | ".join(f"{n} img/s" for n in names) + " | " +
          " | ".join(f"{n} / original" for n in variants) + " |")
    print("|---|---:|" + "---:|" * (len(names) + len(variants)))
    for r in results:
        print(f"| {r['precision']} | {r['threads']} | " + " | ".join(f"{r['img_per_s'][n]:.2f}" for n in names) + " | " +
              " | ".join(f"{r['ratio'][n]:.2f}x" for n in variants) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"shape": shape, "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
