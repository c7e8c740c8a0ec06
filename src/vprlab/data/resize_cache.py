"""A resized copy of a GSV-Cities tree, for faster data loading.

The copy has the same layout (Dataframes/ copied, Images/<city>/<same names>.jpg) at the training
size, so training only swaps `dataset.root`:

    vprlab resize-cache --src /data/gsv-cities --dst /data/gsv-cities-320 --size 320 320

Decoding a 320x320 JPEG costs a fraction of a 640x480 one and the train transform's resize
becomes a no-op, so the input pipeline needs fewer workers per GPU. Images are resized like the
train transform does (bicubic, antialiased) and re-encoded at ``--quality``; existing outputs that
are newer than their source are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from vprlab.utils.errors import ConfigError, MissingFileError
from vprlab.utils.images import as_hw
from vprlab.utils.progress import progress_bar


def _resize_one(job: tuple[str, str, tuple[int, int], int]) -> bool:
    src, dst, (h, w), quality = job
    dst_path = Path(dst)
    if dst_path.exists() and dst_path.stat().st_mtime >= Path(src).stat().st_mtime:
        return False
    with Image.open(src) as img:
        out = img.convert("RGB").resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    tmp = dst_path.with_name(f".{dst_path.name}.tmp")
    out.save(tmp, format="JPEG", quality=quality)
    tmp.replace(dst_path)  # atomic: a killed run never leaves a truncated image behind
    return True


def resize_tree(src: str | Path, dst: str | Path, size: int | tuple[int, int], quality: int = 95, workers: int = 4) -> int:
    """Write the resized copy of ``src`` into ``dst``; returns how many images were (re)written."""
    src, dst = Path(src), Path(dst)
    if not (src / "Dataframes").is_dir() or not (src / "Images").is_dir():
        raise MissingFileError(f"'{src}' is not a GSV-Cities tree: it needs Dataframes/ and Images/")
    if src.resolve() == dst.resolve():
        raise ConfigError("--dst must differ from --src: the cache never overwrites the original images")
    size = as_hw(size, "size")
    shutil.copytree(src / "Dataframes", dst / "Dataframes", dirs_exist_ok=True)
    jobs = []
    for image in sorted((src / "Images").glob("*/*.jpg")):
        if image.name.startswith(".") or image.parent.name.startswith("."):  # macOS ._x.jpg, hidden folders
            continue
        out = dst / "Images" / image.parent.name / image.name
        out.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(image), str(out), size, quality))
    written = 0
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for done in progress_bar(pool.map(_resize_one, jobs, chunksize=64), desc="resize", total=len(jobs), unit="img"):
            written += int(done)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vprlab resize-cache", description="\n\n".join(__doc__.split("\n\n")[:3]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="GSV-Cities root (Dataframes/, Images/)")
    p.add_argument("--dst", required=True, help="where the resized copy goes")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), required=True, help="the training size")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the resized images (default: 95)")
    p.add_argument("--workers", type=int, default=4, help="resizing processes (default: 4)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    written = resize_tree(args.src, args.dst, tuple(args.size), args.quality, args.workers)
    print(f"{written} images written to {args.dst} in {time.perf_counter() - start:.1f}s; train with dataset.root={args.dst}")
    return 0  # the exit status (not the count: `vprlab` exits with what main returns)


if __name__ == "__main__":
    sys.exit(main())
