"""Split the real Nordland frames (../shared/data/real/nordland_64x32_seqslam: summer database,
winter queries, 3576 frames 10 s apart, 64x32 px) into three disjoint stretches of the railway:

    frames [0, train_end)                    train: GSV-Cities layout, one place per frame with its
                                             summer and its winter image (conf/dataset/nordland_real.yaml)
    frames [train_end + gap, val_end)        validation benchmark (gt_csv; model selection only)
    frames [val_end + gap, 3576)             test benchmark (gt_csv; reported, never used to choose anything)

``gap`` frames are left out between the stretches so no place is shared. Near-black tunnel frames
(mean intensity below ``--dark`` in either season) are left out of the training places only; the
validation and test benchmarks keep every frame, as the original benchmark does.

    python experiments/nordland_real_split.py [--src ../shared/data/real/nordland_64x32_seqslam] [--out data/nordland_real]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CITY = "NordlandTrain"
SEASONS = {"database": (2012, 7), "queries": (2012, 2)}  # summer database, winter queries (year, month)


def _frames(src: Path) -> list[str]:
    with (src / "gt.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    files = [Path(r["db_file"]).name for r in rows]
    if [Path(r["query_file"]).name for r in rows] != files:
        raise ValueError(f"{src / 'gt.csv'}: queries and database are expected to be the same frames in the same order")
    return files


def _mean(path: Path) -> float:
    with Image.open(path) as img:
        return float(np.asarray(img.convert("L"), dtype=np.float32).mean())


def write_benchmark(src: Path, out: Path, files: list[str]) -> None:
    """A gt_csv benchmark: the summer frames as database, the winter frames as queries, frame i <-> i."""
    if out.exists():
        shutil.rmtree(out)
    for folder in ("database", "queries"):
        (out / folder).mkdir(parents=True)
        for name in files:
            shutil.copyfile(src / folder / name, out / folder / name)
    with (out / "gt.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["query_index", "query_file", "db_index", "db_file"])
        for i, name in enumerate(files):
            writer.writerow([i, f"queries/{name}", i, f"database/{name}"])


def write_training_places(src: Path, out: Path, files: list[str], dark: float) -> int:
    """GSV-Cities layout: Dataframes/NordlandTrain.csv and Images/NordlandTrain/<name>.jpg, one place
    per frame with two images (summer, winter). Returns the number of places written."""
    if out.exists():
        shutil.rmtree(out)
    images = out / "Images" / CITY
    images.mkdir(parents=True)
    (out / "Dataframes").mkdir()
    rows = []
    place_id = 0
    for index, name in enumerate(files):
        if min(_mean(src / "database" / name), _mean(src / "queries" / name)) < dark:
            continue  # a tunnel: nothing to learn from a black frame
        lat, lon = 63.0 + index * 1e-4, 10.0 + index * 1e-4  # placeholders: the trainer uses place ids only
        for folder, (year, month) in SEASONS.items():
            panoid = f"f{Path(name).stem.split('-')[-1]}{folder[0]}"
            file_name = f"{CITY}_{place_id:07d}_{year:04d}_{month:02d}_000_{lat}_{lon}_{panoid}.jpg"
            with Image.open(src / folder / name) as img:
                img.convert("RGB").save(images / file_name, quality=95)
            rows.append([place_id, year, month, 0, CITY, lat, lon, panoid])
        place_id += 1
    with (out / "Dataframes" / f"{CITY}.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"])
        writer.writerows(rows)
    return place_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "real" / "nordland_64x32_seqslam")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "nordland_real")
    parser.add_argument("--train-end", type=int, default=1600, help="frames [0, train_end) train")
    parser.add_argument("--val-end", type=int, default=2500, help="frames [train_end+gap, val_end) validate")
    parser.add_argument("--gap", type=int, default=50, help="frames left out between the stretches")
    parser.add_argument("--dark", type=float, default=15.0, help="training frames darker than this (mean 0-255) are left out")
    args = parser.parse_args(argv)
    if not (args.src / "gt.csv").is_file():
        parser.error(f"--src {args.src}: no gt.csv there (the Nordland frames folder of ../shared/data/real)")
    files = _frames(args.src)
    train = files[: args.train_end]
    val = files[args.train_end + args.gap: args.val_end]
    test = files[args.val_end + args.gap:]
    if not (train and val and test):
        raise SystemExit(f"empty split: {len(train)} train, {len(val)} val, {len(test)} test frames of {len(files)}")
    places = write_training_places(args.src, args.out / "gsv", train, args.dark)
    write_benchmark(args.src, args.out / "val", val)
    write_benchmark(args.src, args.out / "test", test)
    print(f"{args.out}: train {places} places ({len(train)} frames, tunnels dropped), "
          f"val {len(val)} frames ({val[0]}..{val[-1]}), test {len(test)} frames ({test[0]}..{test[-1]})")


if __name__ == "__main__":
    main()
