"""`vprlab data`: every training set, validation set and benchmark a config names, and how to get it.

    vprlab data list                        every set: how it is obtained, size, terms, present / verified
    vprlab data download NAME [--from-file F]   raw data into <data_dir>/raw/NAME (or --raw DIR)
    vprlab data format NAME [--from RAW] [--to DIR]   raw data -> the layout the config reads, then verify
    vprlab data verify NAME [--update]      counts, ground truth, every image decodes; writes the manifest

NAME is a catalog name (`vprlab data list`) or a config name (``svox_night``). From nothing to a
verified benchmark: ``vprlab data download NAME`` (or put the raw files in place) and
``vprlab data format NAME --from <raw>``. The catalog is :mod:`vprlab.data.sources`; see docs/data.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from vprlab.commands.benchmarks import config_node, config_root, default_data_dir, manifest_of
from vprlab.data.download import FolderExistsError, download_source, file_digest, staging_folder
from vprlab.data.sources import SOURCES, DataSource, get_source
from vprlab.data.verify import VerifyReport, verification_status, verify_benchmark, verify_training_set
from vprlab.utils.errors import ConfigError, DataError, MissingFileError


def _split(config: str) -> tuple[str, str]:
    group, name = config.split("/", 1)
    return group, name


def _root(config: str, data_dir: str) -> str:
    return config_root(*_split(config), data_dir)


def raw_dir_of(source: DataSource, data_dir: str, raw: str | None = None) -> Path:
    return Path(raw) if raw else Path(data_dir) / "raw" / source.name


# ----------------------------------------------------------------------------------------- list


def data_rows(data_dir: str) -> list[dict[str, str]]:
    """One row per config the catalog covers: catalog entry, config, how obtained, root, presence, verification."""
    rows = []
    for source in SOURCES:
        for config in source.configs:
            if not (Path(_conf_dir()) / f"{config}.yaml").is_file():
                continue  # a config of a branch not merged here
            root = _root(config, data_dir)
            present = Path(root).exists()
            rows.append({
                "dataset": source.name, "config": config, "role": _role(source, config), "how": source.method,
                "size": source.size, "present": "yes" if present else "no",
                "verified": verification_status(root, _split(config)[1], manifest_of(root, data_dir)) if present else "-",
                "root": root,
            })
    return rows


def _role(source: DataSource, config: str) -> str:
    group, name = _split(config)
    if group == "dataset":
        return "training"
    return "validation" if source.role == "validation" or name.endswith("_val") else "benchmark"


def _conf_dir() -> Path:
    from vprlab.commands.cli import repo_conf_dir

    return repo_conf_dir()


def _table(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    return "\n".join("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() for row in [{c: c for c in columns}, *rows])


def _list(args: argparse.Namespace) -> int:
    rows = data_rows(args.data_dir)
    print(_table(rows, ["dataset", "config", "role", "how", "size", "present", "verified", "root"]))
    print()
    for source in SOURCES:
        print(f"{source.name}: {source.title}")
        print(f"  how: {source.method}; source: {source.source}")
        print(f"  terms: {source.terms}")
        if source.request:
            print(f"  on request / by hand: {source.request}")
    print(f"\npaths.data_dir = {args.data_dir}; raw downloads go to {Path(args.data_dir) / 'raw'}/<dataset>")
    return 0


# ----------------------------------------------------------------------------------------- download


def _download(args: argparse.Namespace) -> int:
    source = get_source(args.name)
    raw = raw_dir_of(source, args.data_dir, args.raw)
    target = download_source(source, raw, from_file=Path(args.from_file) if args.from_file else None,
                             progress=not args.no_progress)
    print(f"{source.name}: raw data in {target}")
    if source.request:  # only part of it is public: say what else to put where
        print(f"the rest comes on request or by hand: {source.request.replace('<raw>', str(target))}")
    elif source.formatter:
        print(f"next: vprlab data format {source.name} --from {target}")
    return 0


# ----------------------------------------------------------------------------------------- format


def _formatters() -> dict:
    try:
        from vprlab.data import formatters
    except ImportError as err:
        raise MissingFileError(f"the data formatters (vprlab.data.formatters) are not available here ({err})") from err
    return formatters.FORMATTERS


def _format_target(name: str, source: DataSource) -> tuple[str, str]:
    """(formatter name, the config whose root is the default --to)."""
    formatter = name if name in _formatters() else source.formatter
    if formatter is None:
        raise ConfigError(f"{source.name} has nothing to format ({source.method}: {source.source})")
    configs = [c for c in source.configs if _split(c)[1] == formatter] or list(source.configs)
    return formatter, configs[0]


def _merge_into(staging: Path, out: Path) -> list[str]:
    """Move the files of ``staging`` into the existing ``out``; refuses (before moving anything) when a file
    would replace one with other contents. Returns the files moved."""
    clashes, moves = [], []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = path.relative_to(staging)
        dest = out / rel
        if dest.exists():
            if dest.stat().st_size != path.stat().st_size or file_digest(dest) != file_digest(path):
                clashes.append(str(rel))
            continue
        moves.append((path, dest))
    if clashes:
        raise FolderExistsError(
            f"{out} already holds {len(clashes)} file(s) the formatter would replace with other contents, e.g. "
            f"{clashes[0]}; vprlab never overwrites complete data. Move {out} away to format again (the new output "
            f"is in {staging})"
        )
    for path, dest in moves:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    shutil.rmtree(staging)
    return [str(dest) for _, dest in moves]


def _format(args: argparse.Namespace) -> int:
    source = get_source(args.name)
    formatter_name, config = _format_target(args.name, source)
    fn = _formatters()[formatter_name]
    raw = Path(args.raw_from).expanduser() if args.raw_from else raw_dir_of(source, args.data_dir)
    if not raw.is_dir():
        raise MissingFileError(
            f"--from {raw} is not a folder; put the raw data there (`vprlab data download {source.name}`)"
            + ("" if args.raw_from else " or name the raw folder with --from")
        )
    out = Path(args.to) if args.to else Path(_root(config, args.data_dir))
    staging = staging_folder(out, "formatting")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run: never taken for data
    staging.parent.mkdir(parents=True, exist_ok=True)
    print(f"formatting {raw} with {formatter_name} -> {out}", flush=True)
    try:
        fn(raw, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not staging.is_dir() or not any(staging.iterdir()):
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"the {formatter_name} formatter wrote nothing from {raw}; check that {raw} holds the raw data "
                        f"of {source.name} (`vprlab data list` says what it should hold)")
    if out.exists():
        _merge_into(staging, out)
    else:
        os.replace(staging, out)
    print(f"{source.name}: formatted into {out}")
    if args.no_verify or args.to:
        print(f"next: vprlab data verify {source.name}")
        return 0
    return _verify_configs(source, [c for c in source.configs if _root(c, args.data_dir) == str(out)], args)


# ----------------------------------------------------------------------------------------- verify


def verify_config(config: str, data_dir: str, *, update: bool = False, progress: bool = True) -> VerifyReport:
    group, name = _split(config)
    node, _ = config_node(group, name, data_dir)
    manifest = manifest_of(str(node.root), data_dir)
    if group == "benchmark":
        return verify_benchmark(name, OmegaConf.to_container(node, resolve=True), update=update, progress=progress,
                                manifest=manifest)
    cities = node.get("cities")
    return verify_training_set(name, str(node.root), list(cities) if cities else None, update=update, progress=progress,
                               manifest=manifest)


def _verify_configs(source: DataSource, configs: Sequence[str], args: argparse.Namespace) -> int:
    if not configs:
        raise MissingFileError(f"{source.name}: no config of {list(source.configs)} reads a folder that is here")
    for config in configs:
        report = verify_config(config, args.data_dir, update=getattr(args, "update", False), progress=not args.no_progress)
        counts = (f"{report.num_db} database images, {report.num_queries} queries" if report.num_db is not None
                  else f"{report.num_images} images")
        where = f"manifest {report.manifest}" if report.manifest else f"no manifest written ({report.root} is read-only)"
        if report.manifest and not report.manifest.is_relative_to(report.root):
            where += " (kept outside the root: vprlab never writes into the shared reference data or a read-only folder)"
        print(f"{config}: verified ({counts}, every image decodes); {where}")
        if report.changes:
            print(f"  recorded the new state: {report.changes.describe()}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    source = get_source(args.name)
    if args.name in source.configs or any(_split(c)[1] == args.name for c in source.configs):
        configs = [c for c in source.configs if args.name in (c, _split(c)[1])]
    else:
        configs = [c for c in source.configs if (_conf_dir() / f"{c}.yaml").is_file() and Path(_root(c, args.data_dir)).exists()]
    return _verify_configs(source, configs, args)


# ----------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=default_data_dir(),
                        help="paths.data_dir the config roots resolve from (default: $VPRLAB_DATA_DIR, else $VPRLAB_ROOT/data or data)")
    common.add_argument("--no-progress", action="store_true", help="no progress display")
    parser = argparse.ArgumentParser(prog="vprlab data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", parents=[common], help="every set: how it is obtained, size, terms, present / verified")
    download = sub.add_parser("download", parents=[common], help="raw data into <data_dir>/raw/NAME")
    download.add_argument("name")
    download.add_argument("--raw", default=None, help="folder to create for the raw data (default: <data_dir>/raw/NAME)")
    download.add_argument("--from-file", default=None, help="an archive you downloaded yourself (checked and unpacked)")
    fmt = sub.add_parser("format", parents=[common], help="raw data -> the layout the config reads, then verify")
    fmt.add_argument("name")
    fmt.add_argument("--from", dest="raw_from", metavar="RAW", default=None,
                     help="the raw data folder (default: <data_dir>/raw/NAME, where `download` puts it)")
    fmt.add_argument("--to", default=None, help="output folder (default: the root the config reads)")
    fmt.add_argument("--no-verify", action="store_true", help="do not verify after formatting")
    verify = sub.add_parser("verify", parents=[common], help="counts, ground truth, every image decodes; writes the manifest")
    verify.add_argument("name")
    verify.add_argument("--update", action="store_true", help="accept files changed since the manifest: verify and record them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv or []))
    return {"list": _list, "download": _download, "format": _format, "verify": _verify}[args.action](args)


__all__ = ["data_rows", "main", "raw_dir_of", "verify_config"]
