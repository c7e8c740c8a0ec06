"""Real-image comparison on Nordland (issue 14 item 7): BoQ, GeM and MixVPR trained on one stretch of the
railway, the epoch selected on a second (validation) stretch, and the test stretch evaluated once from the
selected checkpoint; plus a raw-pixel nearest-neighbour baseline whose size is chosen on validation too.
Three seeds each; mean +- std over seeds.

    python experiments/nordland_real_compare.py [--out outputs/nordland_real] [--seeds 1 2 3] [--epochs 5]

Steps (each skipped when its output is already there, so an interrupted run continues):
1. experiments/nordland_real_split.py -> data/nordland_real/{gsv,val,test} (if missing);
2. for each seed and aggregator: `python train.py experiment=nordland_real aggregator=... seed=S`
   into OUT/runs/<aggregator>_seed<S>/ (best.ckpt = best validation R@1);
3. `python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt benchmark=[nordland_real_test]` with
   results written into the same run folder (results.csv/.json: the test recall of the selected epoch);
4. the raw-pixel baseline: one run folder per candidate size (its validation and test recall);
5. `vprlab report collect` and `vprlab report seeds` over OUT/runs, and this script's own
   mean +- std table (summary.csv / summary.md) computed from the per-run results.

Methods: BoQ (boq_small, 16 queries), BoQ with 64 queries (the variant `--boq-study` picked on the
validation stretch), GeM, MixVPR. Runs on a 2-core CPU: 2 to 8 minutes per training run, about an hour
in all (measured 2026-11-30 on a shared CPU; docs/results/nordland_real/README.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# name -> overrides of train.py; every model is a ResNet18 (layer3 output, 256 channels, 2x4 map at 32x64).
AGGREGATORS: dict[str, list[str]] = {
    "boq": ["aggregator=boq_small"],  # 64 proj channels x row_dim 8 = 512-d, 16 queries, 2 layers
    "gem": ["aggregator=gem"],  # 256-d
    "mixvpr": ["aggregator=mixvpr", "aggregator.in_h=2", "aggregator.in_w=4", "aggregator.out_channels=128",
               "aggregator.out_rows=4"],  # 512-d
    # BoQ with the variant the validation study (--boq-study) picked: 64 queries instead of 16 (512-d).
    "boq_q64": ["aggregator=boq_small", "aggregator.num_queries=64"],
}
RAW_SIZES = [(8, 16), (16, 32), (32, 64)]
# Why BoQ trails: variants of its recipe, trained on seed 1 and scored on the validation stretch only
# (`--boq-study`; the test stretch is never evaluated for them).
BOQ_STUDY: dict[str, list[str]] = {
    "reference": [],
    "lr_3e-4": ["optimizer.lr=3e-4"],
    "queries_64": ["aggregator.num_queries=64"],
    "row_dim_32": ["aggregator.row_dim=32"],
    "epochs_8": ["trainer.max_epochs=8"],
}  # raw-pixel descriptor sizes (H, W) tried on validation


def _run(cmd: list[str], log: Path) -> None:
    # One thread per process: on a shared, busy CPU two threads mostly wait for each other.
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(REPO / "src"), "VPRLAB_PROGRESS": "0", "WANDB_MODE": "disabled"}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as f:
        result = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    print(f"  {time.perf_counter() - start:6.0f} s  {' '.join(cmd[1:])}", flush=True)
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}; see {log}")


def train_and_test(out: Path, name: str, seed: int, epochs: int, extra: list[str]) -> Path:
    run = out / "runs" / f"{name}_seed{seed}"
    best = run / "checkpoints" / "best.ckpt"
    common = [f"paths.data_dir={REPO / 'data'}", f"paths.log_dir={out / 'logs'}"]
    if not best.is_file() or not (run / "metrics.jsonl").is_file():
        _run([sys.executable, "train.py", "experiment=nordland_real", *AGGREGATORS[name], f"seed={seed}",
              f"trainer.max_epochs={epochs}", f"hydra.run.dir={run}", *common, *extra], run / "train.log")
    if not (run / "results.json").is_file():
        _run([sys.executable, "evaluate.py", f"ckpt_path={best}", "benchmark=[nordland_real_test]", f"results_dir={run}",
              f"hydra.run.dir={run / 'evaluate_test'}", "num_workers=0", "cache=false", *common], run / "evaluate_test.log")
    return run


# ------------------------------------------------------------------------------------ raw pixels


def raw_descriptors(paths: list[str], size: tuple[int, int]) -> np.ndarray:
    """Grayscale image resized (bilinear, antialiased) to ``size``, minus its mean, L2-normalised: the
    patch-normalised pixels SeqSLAM-style methods compare, as one descriptor per image."""
    rows = []
    for path in paths:
        with Image.open(path) as img:
            small = img.convert("L").resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
        x = np.asarray(small, dtype=np.float32).ravel()
        x -= x.mean()
        rows.append(x / max(float(np.linalg.norm(x)), 1e-6))
    return np.stack(rows)


def raw_pixel_runs(out: Path) -> None:
    """One run folder per raw-pixel size: results.csv/.json with validation and test recall, and a
    config.yaml that the reports read (aggregator 'rawpixels'); the size is chosen on validation."""
    from vprlab.data.benchmarks import load_benchmark
    from vprlab.evaluation.recall import compute_recalls
    from vprlab.evaluation.results import write_results
    from vprlab.evaluation.retrieval import search
    from vprlab.evaluation.settings import EvalSettings

    benches = {split: load_benchmark(format="gt_csv", root=REPO / "data" / "nordland_real" / split, name=f"nordland_real_{split}")
               for split in ("val", "test")}
    for size in RAW_SIZES:
        run = out / "raw" / f"rawpixels_{size[0]}x{size[1]}"
        if (run / "results.json").is_file():
            continue
        rows = []
        for bench in benches.values():
            start = time.perf_counter()
            db, q = raw_descriptors(bench.db_paths, size), raw_descriptors(bench.query_paths, size)
            seconds = time.perf_counter() - start
            _, predictions = search(db, q, 20, EvalSettings(progress=False))
            recalls = compute_recalls(predictions, bench.positives, ks=(1, 5, 10, 20), num_db=len(db)).as_dict()
            rows.append({"model": f"rawpixels_{size[0]}x{size[1]}", "checkpoint_hash": "none", "benchmark": bench.name,
                         "image_size": f"{size[0]}x{size[1]}", "descriptor_dim": int(db.shape[1]), **recalls,
                         "extract_img_per_s": (len(db) + len(q)) / seconds, "protocol": bench.protocol})
        run.mkdir(parents=True, exist_ok=True)
        config = {"aggregator": {"_target_": "rawpixels"}, "backbone": {"model_name": "none", "train_image_size": list(size)},
                  "seed": 0, "trainer": {"max_epochs": 0}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        write_results(rows, run)
        print(f"  raw pixels {size[0]}x{size[1]}: " + ", ".join(f"{r['benchmark']} R@1 {r['R@1']:.1f}" for r in rows), flush=True)


# ------------------------------------------------------------------------------------ summary


def _read(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def best_val_epoch(run: Path) -> tuple[int | None, float | None]:
    """(epoch, R@1) of the best validation R@1 in metrics.jsonl (the epoch best.ckpt holds)."""
    best = (None, None)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        value = record.get("nordland_real_val/R@1")
        if value is not None and (best[1] is None or value > best[1]):
            best = (record.get("epoch"), value)
    return best


def summarise(out: Path, names: list[str], seeds: list[int]) -> list[dict]:
    """Mean +- std over seeds of validation R@1 (selected epoch) and test R@1/5/10, from the per-run files."""
    per_run, summary = [], []
    for name in names:
        for seed in seeds:
            run = out / "runs" / f"{name}_seed{seed}"
            if not (run / "results.json").is_file():
                continue
            (test,) = [r for r in _read(run / "results.json") if r["benchmark"] == "nordland_real_test"]
            epoch, val = best_val_epoch(run)
            per_run.append({"method": name, "seed": seed, "selected_epoch": epoch, "val R@1": val,
                            **{f"test R@{k}": test[f"R@{k}"] for k in (1, 5, 10)}, "descriptor_dim": test["descriptor_dim"]})
    raw = {}
    for folder in sorted((out / "raw").glob("rawpixels_*")):
        rows = {r["benchmark"]: r for r in _read(folder / "results.json")}
        raw[folder.name] = rows
    if raw:  # the size is chosen on validation R@1
        chosen = max(raw, key=lambda k: raw[k]["nordland_real_val"]["R@1"])
        test, val = raw[chosen]["nordland_real_test"], raw[chosen]["nordland_real_val"]
        per_run.append({"method": f"raw pixels ({chosen.split('_')[1]}, chosen on val)", "seed": "-", "selected_epoch": "-",
                        "val R@1": val["R@1"], **{f"test R@{k}": test[f"R@{k}"] for k in (1, 5, 10)},
                        "descriptor_dim": test["descriptor_dim"]})
    for method in dict.fromkeys(r["method"] for r in per_run):
        runs = [r for r in per_run if r["method"] == method]
        row = {"method": method, "n": len(runs), "descriptor_dim": runs[0]["descriptor_dim"]}
        for key in ("val R@1", "test R@1", "test R@5", "test R@10"):
            values = [float(r[key]) for r in runs]
            row[key] = statistics.mean(values)
            row[f"{key} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(row)
    target = out / "summary"
    target.mkdir(parents=True, exist_ok=True)
    for rows, stem in ((per_run, "per_run"), (summary, "summary")):
        with (target / f"{stem}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    lines = ["| method | n | dim | val R@1 | test R@1 | test R@5 | test R@10 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        cells = [f"{r[k]:.1f} ± {r[k + ' std']:.1f}" for k in ("val R@1", "test R@1", "test R@5", "test R@10")]
        lines.append(f"| {r['method']} | {r['n']} | {r['descriptor_dim']} | " + " | ".join(cells) + " |")
    (target / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def boq_study(out: Path, epochs: int, seed: int = 1) -> None:
    """Train each BOQ_STUDY variant once (validation each epoch, no test) and tabulate its best val R@1."""
    rows = []
    for variant, overrides in BOQ_STUDY.items():
        run = out / "boq_study" / variant
        if variant == "reference" and (out / "runs" / f"boq_seed{seed}" / "metrics.jsonl").is_file():
            run = out / "runs" / f"boq_seed{seed}"  # the main comparison's run is the reference
        elif not (run / "metrics.jsonl").is_file() or not (run / "checkpoints" / "last.ckpt").is_file():
            _run([sys.executable, "train.py", "experiment=nordland_real", *AGGREGATORS["boq"], f"seed={seed}",
                  f"trainer.max_epochs={epochs}", *overrides, f"hydra.run.dir={run}", f"paths.data_dir={REPO / 'data'}",
                  f"paths.log_dir={out / 'logs'}"], run / "train.log")
        epoch, val = best_val_epoch(run)
        rows.append({"variant": variant, "overrides": " ".join(overrides) or "(the recipe)", "best epoch": epoch, "val R@1": val})
    lines = ["| variant | overrides | best epoch | val R@1 |", "|---|---|---:|---:|"]
    lines += [f"| {r['variant']} | {r['overrides']} | {r['best epoch']} | {r['val R@1']:.1f} |" for r in rows]
    (out / "boq_study" / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def layout_check(out: Path, seed: int = 1) -> None:
    """Does a model use where things are in the 2x4 feature map? Each seed-``seed`` checkpoint scored
    on the validation stretch as trained, and with the feature-map positions shuffled by one fixed
    permutation (the same for database and queries). An orderless aggregator (GeM, BoQ: attention
    without position encodings) gives the same recall; one that reads the layout (MixVPR's
    per-position mixing and flattening) changes. Validation only."""
    import torch
    from omegaconf import OmegaConf

    from vprlab.commands.evaluate import load_model_for_eval
    from vprlab.data.benchmarks import load_benchmark
    from vprlab.evaluation.protocol import evaluate_model
    from vprlab.evaluation.settings import EvalSettings

    bench = load_benchmark(format="gt_csv", root=REPO / "data" / "nordland_real" / "val", name="nordland_real_val")
    torch.set_num_threads(1)
    rows = []
    for name in AGGREGATORS:
        ckpt = out / "runs" / f"{name}_seed{seed}" / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            continue
        cfg = OmegaConf.create({"pretrained": None, "ckpt_path": str(ckpt), "weights_path": None, "allow_unsafe_pickle": False})
        model = load_model_for_eval(cfg)[0].eval()
        plain = evaluate_model(model, [bench], EvalSettings(batch_size=128, progress=False))[bench.name]["R@1"]
        generator = torch.Generator().manual_seed(0)

        def shuffle(module, args, kwargs, state={}):  # noqa: B006 - one permutation per model, drawn on first use
            x = args[0]
            b, c, h, w = x.shape
            if "perm" not in state:
                state["perm"] = torch.randperm(h * w, generator=generator)
            return (x.flatten(2)[:, :, state["perm"]].reshape(b, c, h, w), *args[1:]), kwargs

        handle = model.aggregator.register_forward_pre_hook(shuffle, with_kwargs=True)
        shuffled = evaluate_model(model, [bench], EvalSettings(batch_size=128, progress=False))[bench.name]["R@1"]
        handle.remove()
        rows.append((name, plain, shuffled))
    lines = ["| method (seed %d best.ckpt) | val R@1 | val R@1, feature-map positions shuffled |" % seed, "|---|---:|---:|"]
    lines += [f"| {n} | {a:.1f} | {b:.1f} |" for n, a, b in rows]
    (out / "layout_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "nordland_real")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(AGGREGATORS), choices=list(AGGREGATORS))
    parser.add_argument("--train-override", nargs="*", default=[], help="extra train.py overrides for every run")
    parser.add_argument("--no-report", action="store_true", help="skip the vprlab report step")
    parser.add_argument("--boq-study", action="store_true", help="only the BoQ variants on the validation stretch (seed 1)")
    parser.add_argument("--layout-check", action="store_true", help="only the shuffled-feature-map check on validation (seed 1)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.layout_check:
        layout_check(out)
        return
    if args.boq_study:
        boq_study(out, args.epochs)
        return
    if not (REPO / "data" / "nordland_real" / "test" / "gt.csv").is_file():
        subprocess.run([sys.executable, str(REPO / "experiments" / "nordland_real_split.py")], check=True)
    raw_pixel_runs(out)
    for seed in args.seeds:  # seed-major: a stopped run still has whole seeds of every method
        for name in args.methods:
            train_and_test(out, name, seed, args.epochs, args.train_override)
    summarise(out, args.methods, args.seeds)
    if not args.no_report:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        # BoQ with 16 and with 64 queries are two settings: name the key that tells them apart.
        for kind, folder, extra in (("collect", out / "runs", []), ("seeds", out / "runs", ["--by", "aggregator", "aggregator.num_queries"]),
                                    ("collect", out / "raw", [])):
            subprocess.run([sys.executable, "-m", "vprlab", "report", kind, str(folder), "--out", str(out / "report" / f"{kind}_{folder.name}"),
                            *extra], cwd=REPO, env=env, check=False)


if __name__ == "__main__":
    main()
