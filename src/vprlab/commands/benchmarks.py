"""`vprlab benchmarks`: every benchmark config with its format, published counts, root (and the
environment variable that sets it) and whether that root exists here."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from vprlab.commands.cli import repo_conf_dir
from vprlab.data.benchmark_readers import READERS

_ENV = re.compile(r"oc\.env:([A-Z0-9_]+)")


def benchmark_table(data_dir: str | Path) -> list[dict[str, str]]:
    conf = repo_conf_dir()
    rows = []
    for path in sorted((conf / "benchmark").glob("*.yaml")):
        text = path.read_text()
        raw = OmegaConf.load(path)
        for name, spec in raw.items():
            cfg = OmegaConf.merge({"paths": {"data_dir": str(data_dir)}, "strict_counts": False}, {"b": spec})
            try:
                root = str(cfg.b.root)
            except Exception:  # noqa: BLE001 - an interpolation this listing cannot resolve
                root = str(OmegaConf.to_container(spec)["root"])
            env = _ENV.search(text)
            fmt = spec.get("format")
            if fmt is None:  # a config that names its reader directly
                reader = str(spec.get("_target_", "")).rsplit(".", 1)[-1]
                fmt = next((key for key, fn in READERS.items() if fn.__name__ == reader), "?")
            rows.append({
                "name": str(name), "format": str(fmt),
                "db": str(spec.get("expected_num_db") or "-"), "queries": str(spec.get("expected_num_queries") or "-"),
                "root": root, "env": env.group(1) if env else "-", "present": "yes" if Path(root).exists() else "no",
            })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vprlab benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("VPRLAB_DATA_DIR", "data"),
                        help="paths.data_dir used to resolve roots (default: $VPRLAB_DATA_DIR or data)")
    args = parser.parse_args(list(argv or []))
    rows = benchmark_table(args.data_dir)
    columns = ["name", "format", "db", "queries", "present", "env", "root"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    for row in [{c: c for c in columns}, *rows]:
        print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    return 0
