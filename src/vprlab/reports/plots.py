"""What every report figure shares: the file-only matplotlib backend, the atomic PNG writer, log-axis
ticks whose labels never overlap, and a legend sized to stay inside the figure."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vprlab.utils.io import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only; no display on clusters and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """``fig`` as a PNG at ``path`` (written atomically, folders made), then closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _tick_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def readable_log_ticks(ax: Any, ticks: Sequence[float], renderer: Any) -> list[float]:
    """Label the log x axis at ``ticks`` only (no minor labels), dropping a tick whose label would touch the
    one before it; returns the ticks kept."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    low, high = ax.get_xlim()
    ticks = sorted({float(t) for t in ticks if low <= t <= high})
    ax.set_xticks(ticks, [_tick_text(t) for t in ticks])
    ax.figure.canvas.draw()  # tick labels are placed when drawn
    kept, last = [], None
    for tick, label in zip(ticks, ax.get_xticklabels()):
        box = label.get_window_extent(renderer)
        if last is None or box.x0 > last.x1 + 3:
            kept.append(tick)
            last = box
    ax.set_xticks(kept, [_tick_text(t) for t in kept])
    return kept


def nice_ticks(low: float, high: float) -> list[float]:
    """1-2-5 values between ``low`` and ``high`` (a log axis' candidates)."""
    out, decade = [], 10.0 ** math.floor(math.log10(low))
    while decade <= high:
        out += [m * decade for m in (1, 2, 5) if low <= m * decade <= high]
        decade *= 10
    return out


def fit_legend(fig: Any, handles: list, renderer: Any, fontsize: int = 8) -> Any:
    """A legend under the axes that lies inside the figure: as many columns (at most 4) as fit its
    width, labels wrapped when one column is still too wide; the figure grows to hold its height."""
    import textwrap

    width = fig.bbox.width * 0.96
    labels = [h.get_label() for h in handles]
    for ncol in range(min(4, len(handles)), 0, -1):
        legend = fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=fontsize, frameon=False)
        fig.canvas.draw()
        box = legend.get_window_extent(renderer)
        if box.width <= width:
            break
        legend.remove()
    else:  # one column is too wide: wrap the labels to the figure's width
        chars = max(12, int(max(len(x) for x in labels) * width / box.width) - 2)
        for handle, label in zip(handles, labels):
            handle.set_label("\n".join(textwrap.wrap(label, chars, break_long_words=True, break_on_hyphens=False)))
        legend = fig.legend(handles=handles, loc="lower center", ncol=1, fontsize=fontsize, frameon=False)
        fig.canvas.draw()
        box = legend.get_window_extent(renderer)
    needed = box.height / fig.dpi + 0.15  # inches under the axes for the legend
    w, h = fig.get_size_inches()
    if needed > 0.4 * h:  # keep the axes readable: a taller figure instead of squeezed plots
        fig.set_size_inches(w, h + needed - 0.4 * h)
    return legend, needed / fig.get_size_inches()[1]
