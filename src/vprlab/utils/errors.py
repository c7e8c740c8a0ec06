"""User mistakes are messages, not tracebacks.

A configuration value that cannot work, a data folder that is missing or malformed, a weights
file that does not fit: vprlab raises one of the :class:`UserError` classes below with a
message that says what is wrong, where (the key, the file and line) and what to do. The entry
points (``train.py``, ``evaluate.py``, ``vprlab ...``) print that message to stderr as one
paragraph and exit with status 2; ``VPRLAB_DEBUG=1`` shows the full traceback instead.

Each class also derives from the builtin that code catching errors expects (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so ``except ValueError`` keeps working.
Anything else (a bug) still ends with its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

DEBUG_ENV = "VPRLAB_DEBUG"
EXIT_USER_ERROR = 2


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


def format_user_error(prog: str, error: UserError) -> str:
    """One paragraph: ``<prog>: <kind>: <message>``, then how to see the traceback."""
    message = " ".join(str(error).split())  # one paragraph (the terminal wraps it), however the message was wrapped
    return f"{prog}: {error.kind}: {message}\n({DEBUG_ENV}=1 shows the full traceback)"


@contextlib.contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Around an entry point: a :class:`UserError` (also wrapped in another exception) is printed to
    stderr as one paragraph and the process exits with status 2; with ``VPRLAB_DEBUG=1`` it propagates
    with its traceback. Other exceptions propagate untouched."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - only user errors are caught; the rest is re-raised
        user_error = find_user_error(error)
        if user_error is None or debug_enabled():
            raise
        sys.stdout.flush()
        print(format_user_error(prog, user_error), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
