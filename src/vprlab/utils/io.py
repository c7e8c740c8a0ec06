"""Atomic file writes: a reader never sees a half-written checkpoint or results file.

Everything is written to a temporary file in the destination folder and then
renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a
crash or SIGKILL at any moment leaves either the old file or the new one. The new file gets
the mode ``open()`` would give it (0666 less the umask: 0644 by default), not mkstemp's 0600.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable


def _current_umask() -> int:
    """The process umask, read without changing it where the OS tells (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mkstemp_honouring_umask(path: Path) -> tuple[int, str]:
    """``tempfile.mkstemp`` next to ``path``, with the mode a plain ``open(path, "w")`` would give
    (0666 less the umask, 0644 by default) instead of mkstemp's private 0600: the temporary file is
    renamed into place, so its mode is the final file's mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, 0o666 & ~_current_umask())
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    return fd, tmp


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp_honouring_umask(path)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return _atomic_write(path, lambda f: torch.save(obj, f), "wb")


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """``np.save`` through a temporary file (no pickles: plain numeric arrays only)."""
    import numpy as np

    return _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), "wb")


def atomic_save_ragged_npy(path: str | os.PathLike, rows: Any) -> Path:
    """Integer rows of different lengths as an object array of int64 arrays, the layout of the released
    GSV-Cities ground-truth lists, through a temporary file. numpy writes such an array as a pickle;
    :func:`load_npy` reads it back without running pickled code (numpy arrays only)."""
    import numpy as np

    ragged = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        ragged[i] = np.asarray(row, dtype=np.int64)
    return _atomic_write(path, lambda f: np.save(f, ragged, allow_pickle=ragged.dtype == object), "wb")


class NpyRowWriter:
    """Writes a 2-D ``.npy`` row block by row block through a memory-mapped temporary file and
    renames it into place when complete, so an array larger than RAM can be written and a
    crash never leaves a partial file under ``path``.

        with NpyRowWriter(path, num_rows, dtype) as writer:
            for block in blocks:
                writer.write(block)          # the width is taken from the first block
        array = writer.result                # the finished file, memory-mapped read-only
    """

    def __init__(self, path: str | os.PathLike, num_rows: int, dtype: Any) -> None:
        self.path = Path(path)
        self.num_rows, self.dtype = int(num_rows), dtype
        self.rows_written = 0
        self.result = None
        self._tmp: Path | None = None
        self._array = None

    def write(self, block: Any) -> None:
        import numpy as np

        block = np.asarray(block)
        if self._array is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _mkstemp_honouring_umask(self.path)
            os.close(fd)
            self._tmp = Path(tmp)
            self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=self.dtype, shape=(self.num_rows, block.shape[1]))
        end = self.rows_written + block.shape[0]
        if end > self.num_rows:
            raise ValueError(f"{self.path}: {end} rows written, more than the {self.num_rows} announced")
        self._array[self.rows_written : end] = block
        self.rows_written = end

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import numpy as np

        array, self._array = self._array, None
        if exc_type is None and self.rows_written != self.num_rows:
            exc_type = ValueError
            error = ValueError(f"{self.path}: {self.rows_written} rows written of the {self.num_rows} announced")
        else:
            error = None
        if array is not None:
            array.flush()
            del array
        if exc_type is not None or self._tmp is None:
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            if error is not None:
                raise error
            return
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        self.result = np.load(self.path, mmap_mode="r", allow_pickle=False)


def print_results(results: dict[str, Any], out: str | os.PathLike | None = None) -> None:
    """Print ``results`` as an aligned key/value table (floats to 4 significant digits) and,
    with ``out``, also write them there as JSON (atomically). What the benchmark scripts print."""
    width = max(map(len, results), default=0)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if out:
        atomic_write_json(out, results)


# numpy's own array types: what pickled object arrays of arrays (ragged ground-truth lists) need.
_NUMPY_ARRAY_GLOBALS = frozenset({
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")})


class _NumpyArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain Python values and refuses every other global,
    so a file cannot name a function (``os.system``...) to be called while it loads."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_ARRAY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array type")


def load_npy(path: str | os.PathLike, what: str = "array") -> Any:
    """``np.load`` of a ``.npy`` file that never runs code stored in it: plain arrays load as usual;
    object arrays (a pickle after the header, e.g. ragged ground-truth lists) go through an unpickler
    that accepts numpy's array types only. ``what`` names the file in errors."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise ValueError(f"{what} {path} is not a readable .npy file ({err})") from err
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        try:
            array = _NumpyArraysOnly(f).load()
        except Exception as err:  # noqa: BLE001 - refused global, truncated or foreign pickle: same answer
            raise ValueError(
                f"{what} {path} holds pickled objects that are not numpy arrays ({type(err).__name__}: {err}); "
                "vprlab does not unpickle those, since loading them could run code. Re-save it with numpy "
                "arrays only (np.save of an object array of integer arrays, or a 2-D integer array)"
            ) from err
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{what} {path} holds a {type(array).__name__}, not a numpy array")
    return array
