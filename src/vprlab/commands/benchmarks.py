"""`vprlab benchmarks`: every benchmark config with its format, published counts, root (and the
environment variable that sets it) and whether its data is here and complete: the lists are read
and the counts compared with the published ones (``--no-check``: only whether the root exists).
The ``verified`` column says whether `vprlab data verify` passed and the files are still those it
recorded (``verified``), it never ran (``unverified``) or files changed since (``changed: ...``)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from vprlab.commands.cli import repo_conf_dir
from vprlab.data.benchmark_readers import READERS
from vprlab.utils.errors import MissingFileError

_ENV = re.compile(r"oc\.env:([A-Z0-9_]+)")


def benchmark_env(name: str) -> str | None:
    """The environment variable that sets the root of benchmark config ``name`` (None if it has none)."""
    path = repo_conf_dir() / "benchmark" / f"{name}.yaml"
    found = _ENV.search(path.read_text()) if path.is_file() else None
    return found.group(1) if found else None


def benchmark_hint(name: str, node) -> str:
    """Where benchmark ``name`` is looked for and how to point at it, for messages about missing data."""
    try:
        root = str(node.get("root"))
    except Exception:  # noqa: BLE001 - an unresolvable interpolation
        root = "?"
    env = benchmark_env(name)
    where = f"root {root}; set {env}=<folder> or benchmark.{name}.root=<folder>" if env else f"root {root}; set benchmark.{name}.root=<folder>"
    source = node.get("source") if hasattr(node, "get") else None
    return where + (f"; data: {source}" if source else "")


def data_status(cfg) -> str:
    """``complete`` (reads, published counts), ``incomplete: ...`` (reads, other counts) or ``unreadable: ...``."""
    import warnings

    from vprlab.data.benchmark import BenchmarkCountWarning
    from vprlab.utils.instantiate import build

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BenchmarkCountWarning)
            bench = build(cfg)
    except Exception as error:  # noqa: BLE001 - the listing reports any failure as a status
        error = error.__cause__ or error
        return f"unreadable: {type(error).__name__}: {str(error).split(';')[0]}"
    if any(issubclass(w.category, BenchmarkCountWarning) for w in caught):
        return f"incomplete: {bench.num_db} db / {bench.num_queries} queries"
    return "complete"


def default_data_dir() -> str:
    """paths.data_dir as the configs resolve it: $VPRLAB_DATA_DIR, else $VPRLAB_ROOT/data (VPRLAB_ROOT defaults to .)."""
    return os.environ.get("VPRLAB_DATA_DIR") or str(Path(os.environ.get("VPRLAB_ROOT", ".")) / "data")


def config_node(group: str, name: str, data_dir: str | Path):
    """(the node of config ``<group>/<name>.yaml`` with ``paths`` filled in, its raw spec): a benchmark
    file's single entry, or a dataset file itself; interpolations resolve on access."""
    conf = repo_conf_dir()
    path = conf / group / f"{name}.yaml"
    if not path.is_file():
        raise MissingFileError(f"no config {group}/{name}.yaml in {conf}")
    raw = OmegaConf.load(path)
    spec = raw[name] if group == "benchmark" and name in raw else raw
    paths = {"data_dir": str(data_dir), "root_dir": os.environ.get("VPRLAB_ROOT", str(conf.parent))}
    return OmegaConf.merge({"paths": paths, "strict_counts": False}, {"b": spec}).b, spec


def shared_dir() -> Path:
    """The shared reference data the ``real_*`` configs read, as they resolve it: $VPRLAB_SHARED_DIR, else
    <root_dir>/../shared (root_dir: $VPRLAB_ROOT, else the checkout)."""
    root_dir = os.environ.get("VPRLAB_ROOT", str(repo_conf_dir().parent))
    return Path(os.environ.get("VPRLAB_SHARED_DIR") or Path(root_dir) / ".." / "shared")


def manifest_of(root: str | Path, data_dir: str | Path) -> Path:
    """Where `vprlab data verify` keeps the manifest of ``root``: in it, except for the shared reference data
    and read-only roots (vprlab never writes into them), whose manifests live in ``<data_dir>/.vprlab-manifests``."""
    from vprlab.data.verify import manifest_path, manifest_store

    return manifest_path(root, manifest_store(root, data_dir, [shared_dir()]))


def config_root(group: str, name: str, data_dir: str | Path) -> str:
    """The root folder config ``<group>/<name>`` reads (env variables and paths.data_dir resolved)."""
    node, spec = config_node(group, name, data_dir)
    try:
        return str(node.root)
    except Exception:  # noqa: BLE001 - an interpolation this listing cannot resolve
        return str(OmegaConf.to_container(spec)["root"])


def benchmark_table(data_dir: str | Path, check: bool = True) -> list[dict[str, str]]:
    from vprlab.data.verify import verification_status

    conf = repo_conf_dir()
    rows = []
    for path in sorted((conf / "benchmark").glob("*.yaml")):
        text = path.read_text()
        name = path.stem
        node, spec = config_node("benchmark", name, data_dir)
        root = config_root("benchmark", name, data_dir)
        env = _ENV.search(text)
        fmt = spec.get("format")
        if fmt is None:  # a config that names its reader directly
            reader = str(spec.get("_target_", "")).rsplit(".", 1)[-1]
            fmt = next((key for key, fn in READERS.items() if fn.__name__ == reader), "?")
        present = Path(root).exists()
        status = "missing"
        if present:
            status = data_status(node) if check else "present"
        rows.append({
            "name": str(name), "format": str(fmt),
            "db": str(spec.get("expected_num_db") or "-"), "queries": str(spec.get("expected_num_queries") or "-"),
            "root": root, "env": env.group(1) if env else "-", "present": "yes" if present else "no", "status": status,
            "verified": verification_status(root, name, manifest_of(root, data_dir)) if present else "-",
        })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vprlab benchmarks", description=" ".join(__doc__.split()))
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="paths.data_dir used to resolve roots (default: $VPRLAB_DATA_DIR, else $VPRLAB_ROOT/data or data)")
    parser.add_argument("--no-check", action="store_true", help="only look for the roots; do not read the lists")
    args = parser.parse_args(list(argv or []))
    rows = benchmark_table(args.data_dir, check=not args.no_check)
    columns = ["name", "format", "db", "queries", "status", "verified", "env", "root"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    for row in [{c: c for c in columns}, *rows]:
        print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    return 0
