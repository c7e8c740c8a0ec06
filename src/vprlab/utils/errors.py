"""User mistakes are messages, not tracebacks.

A configuration value that cannot work, a data folder that is missing or malformed, a weights
file that does not fit: vprlab raises one of the :class:`UserError` classes below with a
message that says what is wrong, where (the key, the file and line) and what to do. The entry
points (``train.py``, ``evaluate.py``, ``vprlab ...``) print that message to stderr (a paragraph
wrapped in the source is joined into one line; a list of ``- `` items keeps one line per item) and
exit with status 2; ``VPRLAB_DEBUG=1`` shows the full traceback instead.

Exit statuses of every entry point: 0 success, 2 a user error (also Hydra's own errors about the
command line: an unknown key, group or option), 1 a failure (a bug, a crash).

Each class also derives from the builtin that code catching errors expects (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so ``except ValueError`` keeps working.
Anything else (a bug) still ends with its traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

DEBUG_ENV = "VPRLAB_DEBUG"
EXIT_USER_ERROR = 2
# Whether Hydra has composed the command line and started the run (vprlab.utils.hydra_run.MarkRunStarted, a Hydra callback of
# train.yaml / evaluate.yaml) or the task itself has begun (exit_on_user_error): read by run_hydra_app to
# tell Hydra's command-line errors from failures.
_task_started = False


def mark_task_started() -> None:
    global _task_started
    _task_started = True


class UserError(Exception):
    """A mistake the user can fix: in the configuration, the data or a file given to vprlab."""

    kind = "error"


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (the message names the key)."""

    kind = "configuration error"


class DataError(UserError, ValueError):
    """A data or weights file whose contents do not fit (the message names the file, and the line)."""

    kind = "data error"


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the configuration points to that does not exist."""

    kind = "missing file"


class UnreadableFileError(UserError, RuntimeError):
    """A file that exists but cannot be read (truncated, damaged, not the expected format)."""

    kind = "unreadable file"


class DownloadError(UserError, RuntimeError):
    """Weights that could not be downloaded (typically: no network); the message says where to put them."""

    kind = "download failed"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def enable_debug_tracebacks() -> None:
    """With ``VPRLAB_DEBUG=1``, also ask Hydra for the whole traceback (it shortens it otherwise).
    Called by train.py and evaluate.py before Hydra starts."""
    if debug_enabled():
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def _is_hydra_command_line_error(error: BaseException) -> bool:
    """An error Hydra raises while composing the command line (unknown key, group or option, syntax)."""
    try:
        from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException
    except ImportError:  # pragma: no cover - hydra is a dependency
        return False
    return isinstance(error, (ConfigCompositionException, OverrideParseException, SearchPathException))


def run_hydra_app(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function from its script's ``if __name__ == "__main__":`` block.

    Hydra reports a mistake on the command line (``trainer.max_epoch=3``, ``aggregator=gemm``, a syntax
    error) with its own message, before the run starts, and exits with status 1, the status of a
    failure. Here such an exit, one before the run began (:class:`~vprlab.utils.hydra_run.MarkRunStarted` and
    :func:`exit_on_user_error` mark the start), becomes the user error it is: status 2, Hydra's message kept. With ``VPRLAB_DEBUG=1`` Hydra raises
    instead (HYDRA_FULL_ERROR); its composition errors then show their traceback and also exit 2."""
    enable_debug_tracebacks()
    try:
        main()
    except SystemExit as done:
        if done.code == 1 and not _task_started:
            raise SystemExit(EXIT_USER_ERROR) from None
        raise
    except Exception as error:  # noqa: BLE001 - only Hydra's command-line errors change their status
        if _task_started or not _is_hydra_command_line_error(error):
            raise
        traceback.print_exc()
        raise SystemExit(EXIT_USER_ERROR) from None


def find_user_error(error: BaseException) -> UserError | None:
    """``error`` itself or the UserError it wraps (Hydra's instantiate re-raises constructor errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


_BULLET = re.compile(r"^(\s*)([-*\u2022])\s+")


def message_lines(message: str) -> list[str]:
    """The lines a message is printed as. A paragraph wrapped in the source (a line break followed by
    more text) is joined into one line, for the terminal to wrap; a list item (a line starting with
    ``-``, ``*`` or a bullet) starts a line of its own, continued by the lines indented deeper than
    its marker; the first line less indented after a list starts a new line; blank lines are kept."""
    lines: list[str] = []
    item_indent: int | None = None  # the indent of the marker of the list item being continued
    for raw in message.splitlines():
        text = " ".join(raw.split())
        indent = len(raw) - len(raw.lstrip())
        bullet = _BULLET.match(raw)
        if not text:
            if lines and lines[-1]:
                lines.append("")
            item_indent = None
        elif bullet:
            lines.append(f"  {bullet.group(2)} {' '.join(raw[bullet.end():].split())}")
            item_indent = len(bullet.group(1))
        elif lines and lines[-1] and (item_indent is None or indent > item_indent):
            lines[-1] += " " + text  # a wrapped line of the paragraph or list item above
        else:
            lines.append(text)
            item_indent = None
    while lines and not lines[-1]:
        lines.pop()
    return lines


def format_user_error(prog: str, error: UserError) -> str:
    """``<prog>: <kind>: <message>`` (the message's paragraphs and list items each on a line of their
    own: :func:`message_lines`), then how to see the traceback."""
    message = "\n".join(message_lines(str(error)))
    return f"{prog}: {error.kind}: {message}\n({DEBUG_ENV}=1 shows the full traceback)"


@contextlib.contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Around an entry point: a :class:`UserError` (also wrapped in another exception) is printed to
    stderr as one paragraph and the process exits with status 2; with ``VPRLAB_DEBUG=1`` it propagates
    with its traceback. Other exceptions propagate untouched."""
    mark_task_started()
    try:
        yield
    except Exception as error:  # noqa: BLE001 - only user errors are caught; the rest is re-raised
        user_error = find_user_error(error)
        if user_error is None or debug_enabled():
            raise
        sys.stdout.flush()
        print(format_user_error(prog, user_error), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
