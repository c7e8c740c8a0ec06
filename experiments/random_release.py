"""A stand-in for a published model's file: random weights written in the release's own layout
and container, for trying the loading, evaluation and comparison commands without the real file
(offline machines, CI, demos). The numbers such a model gives mean nothing.

    python experiments/random_release.py cosplace_resnet18_512 /tmp/releases
    vprlab compare --models cosplace_resnet18_512 ... --weights cosplace_resnet18_512=/tmp/releases/ResNet18_512_cosplace.pth

The model is built from the zoo (seeded random initialisation), mapped back to the release's key
names by the family's export function (the inverse of the mapping loading uses) and saved as the
release does: ``torch.save`` of a bare state dict, or safetensors (MegaLoc). NetVLAD's MATLAB file
is not written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vprlab.pretrained.catalog import published_model
from vprlab.pretrained.registry import resolve_callable
from vprlab.utils.io import atomic_torch_save


def write_random_release(name: str, out_dir: Path, seed: int = 0) -> Path:
    spec = published_model(name)
    if spec.export is None:
        raise SystemExit(f"{spec.name}: no export mapping for its layout ({spec.container} file); cannot write a stand-in")
    torch.manual_seed(seed)
    state = {k: v.detach().clone().contiguous() for k, v in spec.build_model().state_dict().items()}
    release = resolve_callable(spec.export)(state, spec)
    path = Path(out_dir) / spec.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.container == "safetensors":
        from safetensors.torch import save_file

        save_file(release, str(path))
        return path
    return atomic_torch_save(release, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="published names (vprlab models list)")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.names:
        path = write_random_release(name, args.out_dir, args.seed)
        print(f"{name}={path}")


if __name__ == "__main__":
    main()
