"""The `vprlab` command: the tools that are not training or evaluation runs.

    vprlab report <kind> RUNS [--out DIR]   tables and plots from run folders (collect, sweep, methods, paper, seeds)
    vprlab models list|download|export      released models: what there is, fetch one, export a checkpoint
    vprlab compare --models M.. --benchmarks B..  released models and checkpoints in one table, published numbers beside
    vprlab leaderboard [--data-dir DIR]     every published model on disk x every benchmark here: one ranked table
    vprlab benchmarks [--data-dir DIR]      every benchmark config: format, published counts, root, present or not
    vprlab data list|download|format|verify every dataset a config names: where from, get it, format it, verify it
    vprlab synth [--root DIR]               generate the built-in synthetic data (GSV-Cities layout + benchmark)
    vprlab resize-cache SRC DST --size N    a resized copy of GSV-Cities for faster data loading

Training and evaluation stay `python train.py ...` and `python evaluate.py ...` (Hydra apps).
Each subcommand lives with its code; this module only dispatches, and is imported by nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vprlab.utils.errors import exit_on_user_error

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name -> (module, help line); the module's main(argv) runs the subcommand.
    "report": ("vprlab.reports.cli", "tables and plots from run folders"),
    "models": ("vprlab.pretrained.cli", "released models: list, download, export"),
    "compare": ("vprlab.commands.compare", "models x benchmarks: one table with the published numbers"),
    "leaderboard": ("vprlab.commands.leaderboard", "every published model on disk x every benchmark here, ranked"),
    "benchmarks": ("vprlab.commands.benchmarks", "benchmark configs, their counts and whether their data is here"),
    "data": ("vprlab.commands.data", "datasets: list, download, format, verify"),
    "synth": ("vprlab.data.synthetic", "generate the built-in synthetic data"),
    "resize-cache": ("vprlab.data.resize_cache", "a resized copy of GSV-Cities for faster loading"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: vprlab <command> [args]  (vprlab <command> --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_line}" for name, (_, help_line) in SUBCOMMANDS.items()]
    lines += ["", "training and evaluation: python train.py ... / python evaluate.py ... (see README.md)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"vprlab: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from importlib import import_module

    run: Callable[[list[str]], Any] = import_module(SUBCOMMANDS[name][0]).main
    with exit_on_user_error(f"vprlab {name}"):  # a user mistake: its message on stderr, SystemExit(2)
        result = run(rest)
    return exit_status(result)


def exit_status(result: Any) -> int:
    """The exit status of a subcommand's ``main(argv)`` result: 0 success, 1 failure, 2 user error.
    None or a value that is not a status (synth returns the paths it wrote) is a success; an int is a
    status only when it is one of those three (a count returned by mistake must not become the status)."""
    if isinstance(result, int) and not isinstance(result, bool) and result in (0, 1, 2):
        return result
    return 0


def repo_conf_dir() -> Path:
    """The conf/ folder of the checkout vprlab runs from (configs are not installed as package data)."""
    conf = Path(__file__).resolve().parents[3] / "conf"
    if not (conf / "train.yaml").is_file():
        raise FileNotFoundError(f"no conf/ folder next to the vprlab sources ({conf}); run vprlab from its checkout")
    return conf


if __name__ == "__main__":
    sys.exit(main())
