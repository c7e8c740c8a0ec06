"""Write conf/pretrained/<name>.yaml for every published model of the registry
(``python experiments/pretrained_configs.py``; tests/pretrained/test_published_configs.py checks them)."""

from __future__ import annotations

from pathlib import Path

from vprlab.pretrained.catalog import PUBLISHED_MODELS, config_yaml
from vprlab.utils.io import atomic_write_text

CONF = Path(__file__).resolve().parent.parent / "conf" / "pretrained"


def main() -> None:
    for spec in PUBLISHED_MODELS.values():
        atomic_write_text(CONF / f"{spec.name}.yaml", config_yaml(spec))
    stale = sorted(p.name for p in CONF.glob("*.yaml") if p.stem not in PUBLISHED_MODELS)
    print(f"wrote {len(PUBLISHED_MODELS)} configs in {CONF}" + (f"; not in the registry: {stale}" if stale else ""))


if __name__ == "__main__":
    main()
