"""``vprlab models``: list the released models, download one, export a trained checkpoint in the release layout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from vprlab.pretrained.load import (
    _hub_backbone_name,
    export_release,
    release_file,
    sidecar_path,
)
from vprlab.pretrained.registry import RELEASED_MODELS


def print_model_list() -> None:
    """One line per released model, and whether its file is already in the torch hub cache."""
    rows = []
    for spec in RELEASED_MODELS.values():
        cached = Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name
        size = "x".join(str(v) for v in spec.architecture.eval_image_size)
        rows.append((spec.name, "BoQ", spec.architecture.backbone, str(spec.descriptor_dim), size,
                     "yes" if cached.is_file() else "no", spec.url))
    header = ("name", "method", "backbone", "dim", "eval size", "local", "source")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"local files live in {Path(torch.hub.get_dir()) / 'checkpoints'} (`vprlab models download NAME`)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vprlab models", description="Released models: list, download, export.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every released model: backbone, descriptor size, eval size, URL, local file")
    export = commands.add_parser("export", help="write a trained BoQ checkpoint in the release layout")
    export.add_argument("ckpt", help="a vprlab checkpoint (.ckpt) or a state dict file")
    export.add_argument("out", help="the .pth file to write")
    export.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="read a trusted file that needs the full unpickler (it can run code stored in the file)")
    download = commands.add_parser("download", help="fetch a released checkpoint into the torch hub cache")
    download.add_argument("name", choices=sorted(RELEASED_MODELS))
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print_model_list()
        elif args.command == "export":
            out, architecture = export_release(args.ckpt, args.out, allow_unsafe_pickle=args.allow_unsafe_pickle)
            print(f"wrote {out}: {architecture.describe()}")
            print(f"wrote {sidecar_path(out)}: eval image size, transform and training config (read by load_pretrained)")
            print(f"load it with vprlab.load_pretrained({str(out)!r}) or torch.hub.load(<vprlab repo>, 'get_trained_boq', "
                  f"backbone_name={_hub_backbone_name(architecture)!r}, output_dim={architecture.descriptor_dim}, weights={str(out)!r})")
        else:
            print(release_file(args.name))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
