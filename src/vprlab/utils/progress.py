from __future__ import annotations

import os
import sys
from typing import Iterable

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable, desc: str = "", total: int | None = None, initial: int = 0, enabled: bool = True) -> tqdm:
    """A tqdm bar; ``VPRLAB_PROGRESS=0`` turns bars off (CI logs), and they are thinned when not on a TTY."""
    disable = not enabled or os.environ.get("VPRLAB_PROGRESS", "1") == "0"
    return tqdm(
        iterable, desc=desc, total=total, initial=initial, disable=disable, dynamic_ncols=True, leave=False,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
