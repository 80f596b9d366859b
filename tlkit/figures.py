"""Small drawing helpers shared by the interpreters and the augmentation preview.

Everything here uses matplotlib's object API (``Figure`` + Agg canvas), never pyplot's global state,
so that the demo's worker threads can draw at the same time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tlkit.errors import TlkitError


def new_figure(width: float, height: float):
    """A pyplot-free figure of ``width x height`` inches with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, *, dpi: int) -> Path:
    """Write ``figure`` to ``path`` (PNG unless the suffix names another format), creating folders.

    Exactly ``path`` is written: matplotlib would append ".png" to a name without a suffix.
    """
    path = Path(path)
    suffix = path.suffix[1:].lower() or "png"
    formats = figure.canvas.get_supported_filetypes()
    if suffix not in formats:
        raise TlkitError(f"cannot write {str(path)!r}: unknown picture format {suffix!r}; "
                         f"use a .png file (or one of {', '.join(sorted(formats))})")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format=suffix)
    return path


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """``(rows, columns)`` of a near-square grid holding ``count`` tiles."""
    columns = int(columns or math.ceil(math.sqrt(max(count, 1))))
    return math.ceil(max(count, 1) / columns), columns


def image_grid(figure, tiles, titles=None, *, columns: int | None = None, cmap=None,
               normalise_each: bool = False, fontsize: float = 7):
    """Draw ``tiles`` (each ``(H, W)`` or ``(H, W, 3)``) into ``figure`` as a grid; returns the axes.

    ``normalise_each`` stretches every 2-D tile to its own min..max, as feature maps are drawn.
    """
    rows, columns = grid_shape(len(tiles), columns)
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(tiles):
            ax.set_axis_off()
            continue
        _frame(ax)
        tile = np.asarray(tiles[index])
        if tile.ndim == 2:
            lo, hi = (float(tile.min()), float(tile.max())) if normalise_each else (None, None)
            if normalise_each and hi <= lo:
                hi = lo + 1.0  # a dead channel: draw it flat instead of dividing by zero
            ax.imshow(tile, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        else:
            ax.imshow(np.clip(tile, 0.0, 1.0), interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize=fontsize, pad=2)
    return axes


def _frame(ax):
    """No ticks, a thin grey frame: a white or black tile must still read as a tile."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.6")


def overlay(figure, ax, image: np.ndarray, heat: np.ndarray, *, signed: bool, alpha: float = 0.55,
            cmap: str | None = None, label: str = "attribution", fade: bool = True):
    """Draw ``heat`` ``(H, W)`` over ``image`` ``(H, W, 3)`` on ``ax`` with a colour bar.

    Signed maps use a diverging colour map centred on zero (red: for the class, blue: against it);
    the colour limits are the 99th percentile of the magnitude so that one hot pixel cannot wash
    out the rest. With ``fade`` the heat map's opacity grows with its magnitude (up to ``alpha``),
    so that the image stays visible where the attribution is near zero.
    """
    ax.imshow(np.clip(image, 0.0, 1.0), interpolation="bilinear")
    heat = np.asarray(heat, dtype=np.float32)
    magnitude = float(np.percentile(np.abs(heat), 99)) or float(np.abs(heat).max()) or 1.0
    opacity = alpha * np.clip(np.abs(heat) / magnitude, 0.0, 1.0) ** 0.5 if fade else alpha
    if signed:
        shown = ax.imshow(heat, cmap=cmap or "RdBu_r", vmin=-magnitude, vmax=magnitude, alpha=opacity,
                          interpolation="nearest")
    else:
        shown = ax.imshow(heat, cmap=cmap or "inferno", vmin=0.0, vmax=magnitude, alpha=opacity,
                          interpolation="nearest")
    ax.set_axis_off()
    bar = figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.solids.set_alpha(1.0)  # the bar shows the colour scale, not the blend
    return shown
