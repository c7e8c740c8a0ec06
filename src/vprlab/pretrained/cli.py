"""``vprlab models``: list the published models, download one, export a trained checkpoint in the release layout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from vprlab.pretrained.catalog import PUBLISHED_MODELS
from vprlab.pretrained.download import extra_files, release_file
from vprlab.pretrained.export import checkpoint_published_name, export_published, export_release
from vprlab.pretrained.families.boq import hub_backbone_name
from vprlab.pretrained.sidecar import sidecar_path
from vprlab.utils.errors import EXIT_USER_ERROR, UserError


def _preprocessing_label(prep) -> str:
    crop = f", crop to x{prep.crop_multiple_of}" if prep.crop_multiple_of else ""
    if prep.size is None:
        label = f"round to x{prep.multiple_of} bilinear+aa" if prep.multiple_of else "no resize"
        return label + crop
    else:
        where = {"pil": "PIL", "tensor": "tensor", "normalized": "tensor-after-norm"}[prep.stage]
        label = f"{where} {prep.interpolation}" + ("+aa" if prep.antialias and prep.stage != "pil" else "")
    return label + (f", x{prep.multiple_of}" if prep.multiple_of else "") + crop


def model_rows() -> list[dict[str, str]]:
    """One row per published model: name, method, backbone, dim, eval size, preprocessing, local, source."""
    rows = []
    for spec in PUBLISHED_MODELS.values():
        prep = spec.preprocessing
        rows.append({
            "name": spec.name, "method": spec.method, "backbone": spec.backbone.replace(" ", "-"),
            "dim": str(spec.descriptor_dim), "eval size": "native" if prep.size is None else "x".join(map(str, prep.size)),
            "local": "yes" if all(f.local_path().is_file() for f in spec.files()) else "no",
            "preprocessing": _preprocessing_label(prep),
            # a model of several files (AnyLoc: vocabulary + DINOv2 weights) lists every URL
            "source": " + ".join(f.url or "Google Drive (vprlab models download NAME says where)" for f in spec.files()),
        })
    return rows


def print_model_list() -> None:
    """One line per published model, and whether its file is already in the torch hub cache."""
    rows = model_rows()
    header = list(rows[0])
    table = [header, *[[row[h] for h in header] for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    folders = ", ".join(sorted({f"{f.cache_dir}/" for spec in PUBLISHED_MODELS.values() for f in spec.files()}))
    print(f"local files live in {Path(torch.hub.get_dir())} ({folders}); "
          "`vprlab models download NAME` fetches a model's files (Google Drive files: it says where to get them)")


def _fine_tuned_from(ckpt: str, allow_unsafe_pickle: bool) -> str | None:
    """The non-BoQ published model a checkpoint was fine-tuned from (None: BoQ export as before)."""
    try:
        name = checkpoint_published_name(ckpt, allow_unsafe_pickle)
    except Exception:  # noqa: BLE001 - not a checkpoint: the BoQ export path reports the problem
        return None
    return name if name and not name.startswith("boq_") else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vprlab models", description="Published models: list, download, export.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every published model: method, backbone, descriptor size, eval preprocessing, local file, URL")
    export = commands.add_parser("export", help="write a trained checkpoint in its release layout (BoQ, or the published model it was fine-tuned from)")
    export.add_argument("ckpt", help="a vprlab checkpoint (.ckpt) or a state dict file")
    export.add_argument("out", help="the .pth file to write")
    export.add_argument("--name", default=None, help="the published model whose layout to write (default: BoQ, or "
                        "the pretrained.name the checkpoint was fine-tuned from)")
    export.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="read a trusted file that needs the full unpickler (it can run code stored in the file)")
    download = commands.add_parser("download", help="fetch a published model's file into the torch hub cache")
    download.add_argument("name", help="a name of `vprlab models list`")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print_model_list()
        elif args.command == "export" and (args.name or _fine_tuned_from(args.ckpt, args.allow_unsafe_pickle)):
            out, spec = export_published(args.ckpt, args.out, args.name, allow_unsafe_pickle=args.allow_unsafe_pickle)
            print(f"wrote {out}: {spec.method} {spec.backbone} {spec.descriptor_dim}-d in the layout of {spec.file_name}")
            print(f"wrote {sidecar_path(out)}: the published model it belongs to, its eval preprocessing and the training config")
            print(f"load it with vprlab.load_pretrained({str(out)!r}) (or {spec.name!r}, weights=...), "
                  f"vprlab compare --models {out}, or evaluate.py pretrained={spec.name} pretrained.path={out}")
        elif args.command == "export":
            out, architecture = export_release(args.ckpt, args.out, allow_unsafe_pickle=args.allow_unsafe_pickle)
            print(f"wrote {out}: {architecture.describe()}")
            print(f"wrote {sidecar_path(out)}: eval image size, transform and training config (read by load_pretrained)")
            print(f"load it with vprlab.load_pretrained({str(out)!r}) or torch.hub.load(<vprlab repo>, 'get_trained_boq', "
                  f"backbone_name={hub_backbone_name(architecture)!r}, output_dim={architecture.descriptor_dim}, weights={str(out)!r})")
        else:
            print(release_file(args.name))
            for path in extra_files(args.name):  # the further files of a model of several (AnyLoc: DINOv2)
                print(path)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # unknown name, no network, Google Drive file
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR if isinstance(err, UserError) else 1  # a mistake to fix: 2; a failure: 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
