"""A stand-in for a published model's file: random weights written in the release's own layout
and container, for trying the loading, evaluation and comparison commands without the real file
(offline machines, CI, demos). The numbers such a model gives mean nothing.

    python experiments/random_release.py cosplace_resnet18_512 /tmp/releases
    vprlab compare --models cosplace_resnet18_512 ... --weights cosplace_resnet18_512=/tmp/releases/ResNet18_512_cosplace.pth

The model is built from the zoo (seeded random initialisation), mapped back to the release's key
names by the family's export function (the inverse of the mapping loading uses) and saved as the
release does (:func:`vprlab.pretrained.standins.write_random_release`); NetVLAD's MATLAB file
is not written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vprlab.pretrained.standins import write_random_release
from vprlab.utils.errors import ConfigError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="published names (vprlab models list)")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            path = write_random_release(name, args.out_dir, args.seed)
        except ConfigError as err:
            raise SystemExit(str(err)) from err
        print(f"{name}={path}")


if __name__ == "__main__":
    main()
