"""A run that fails says so in its folder: ``error.txt``.

train.py and evaluate.py run inside :func:`record_failure`; when the run raises, the error (its kind
and message) is written to ``<run folder>/error.txt`` before it propagates, so ``vprlab report`` can
list the failed job of a sweep with its error instead of dropping it. A run that starts again in the
same folder (``ckpt_path=auto``) removes the old record first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from vprlab.utils.errors import find_user_error
from vprlab.utils.io import atomic_write_text

log = logging.getLogger(__name__)

ERROR_FILE = "error.txt"


def describe_error(error: BaseException) -> str:
    """``configuration error: <message>`` for a user error, ``<ExceptionType>: <message>`` otherwise."""
    user_error = find_user_error(error)
    if user_error is not None:
        return f"{user_error.kind}: {user_error}"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    return f"{type(error).__name__}: {error}".rstrip(": ")


def write_run_error(folder: str | Path, error: BaseException) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / ERROR_FILE, describe_error(error).rstrip() + "\n")


def read_run_error(folder: str | Path) -> str | None:
    """The error a failed run recorded (its text, stripped), or None."""
    path = Path(folder) / ERROR_FILE
    try:
        return path.read_text(errors="replace").strip() or "failed (no message)"
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def record_failure(run_folder: Callable[[], str | Path | None]) -> Iterator[None]:
    """Around a run: an exception (not a clean ``SystemExit``) is written to ``<run folder>/error.txt``,
    then re-raised. ``run_folder`` is called to find the folder (None or an error: nothing is recorded,
    e.g. a config composed outside a Hydra run)."""

    def folder() -> Path | None:
        try:
            value = run_folder()
        except Exception:  # noqa: BLE001 - ${hydra:runtime.output_dir} outside a Hydra run
            return None
        return Path(str(value)) if value else None

    start = folder()
    if start is not None and (start / ERROR_FILE).is_file():
        (start / ERROR_FILE).unlink()  # an earlier attempt in this folder; this one starts clean
    try:
        yield
    except BaseException as error:
        if isinstance(error, SystemExit) and error.code in (0, None):
            raise
        where = start or folder()
        if where is not None:
            try:
                write_run_error(where, error)
            except OSError as write_error:  # the error itself matters more than its record
                log.warning("could not record the error in %s: %s", where / ERROR_FILE, write_error)
        raise
