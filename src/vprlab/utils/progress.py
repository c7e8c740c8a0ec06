from __future__ import annotations

import os
import sys
from typing import Iterable

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable | None = None, desc: str = "", total: int | None = None, initial: int = 0,
    enabled: bool = True, unit: str = "it",
) -> tqdm:
    """The one progress bar of vprlab (tqdm). ``VPRLAB_PROGRESS=0`` turns all bars off (CI logs);
    off a TTY they refresh rarely so log files stay readable."""
    disable = not enabled or os.environ.get("VPRLAB_PROGRESS", "1") == "0"
    return tqdm(
        iterable, desc=desc or None, total=total, initial=initial, disable=disable, dynamic_ncols=True,
        leave=False, unit=unit, mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
