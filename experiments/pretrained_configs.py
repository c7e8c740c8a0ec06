"""Write conf/pretrained/<name>.yaml for every published model of the registry: run
`python experiments/pretrained_configs.py` (no arguments) after adding a model to the registry;
tests/pretrained/test_pretrained_configs.py checks that the files match it."""

from __future__ import annotations

import argparse
from pathlib import Path

from vprlab.pretrained.catalog import PUBLISHED_MODELS, config_yaml
from vprlab.utils.io import atomic_write_text

CONF = Path(__file__).resolve().parent.parent / "conf" / "pretrained"


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    for spec in PUBLISHED_MODELS.values():
        atomic_write_text(CONF / f"{spec.name}.yaml", config_yaml(spec))
    stale = sorted(p.name for p in CONF.glob("*.yaml") if p.stem not in PUBLISHED_MODELS)
    print(f"wrote {len(PUBLISHED_MODELS)} configs in {CONF}" + (f"; not in the registry: {stale}" if stale else ""))


if __name__ == "__main__":
    main()
