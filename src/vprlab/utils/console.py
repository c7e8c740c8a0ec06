"""The one way vprlab makes a rich Console, so tables follow one rule.

On a terminal rich fits a table to the window. Anywhere else (stdout redirected to a file, a pipe,
SLURM output, CI) rich would assume 80 columns and cut cells with "…"; there the console is given
``FILE_WIDTH`` columns instead, so a table is printed at its natural width and never truncated
(rich draws a table only as wide as its content; the width is an upper bound, not padding).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from rich.console import Console

# Wider than any table vprlab prints; only an upper bound (lines are not padded to it).
FILE_WIDTH = 1000


def _is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def make_console(file: IO[str] | None = None, **kwargs: Any) -> Console:
    """A rich Console writing to ``file`` (default: stdout at the time of each print).

    Off a terminal, and unless ``width`` is given, it is ``FILE_WIDTH`` columns wide so that no cell
    is cut. Other keyword arguments go to ``rich.console.Console``.
    """
    if "width" not in kwargs and not _is_terminal(file if file is not None else sys.stdout):
        kwargs["width"] = FILE_WIDTH
    return Console(file=file, **kwargs)
