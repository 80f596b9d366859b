"""Pictures a person would rather look at than read: learning curves and confusion matrices.

Uses matplotlib's object API (no pyplot global state), so it is safe in the threaded demo server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def learning_curves(epochs: list[dict], *, title: str = "") -> Figure:
    """Train/validation loss and accuracy per epoch, as in the lecture's overfitting plots."""
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    x = [e["epoch"] for e in epochs]

    def series(key):
        return [e.get(key) if e.get(key) is not None else np.nan for e in epochs]

    for ax, metric, label in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy")):
        for stage, style in (("train", "o-"), ("val", "s--")):
            values = series(f"{stage}_{metric}")
            if not all(np.isnan(v) for v in values):
                ax.plot(x, values, style, label=f"{stage}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.set_ylim(0, 1.02)
    if x:
        for ax in (loss_ax, acc_ax):
            ax.set_xticks(x if len(x) <= 20 else x[:: max(1, len(x) // 10)])
    fig.suptitle(title or "Learning curves")
    fig.tight_layout()
    return fig


def confusion_matrix_figure(matrix, class_names, *, title: str = "Confusion matrix") -> Figure:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > threshold else "black", fontsize=8)
    accuracy = np.trace(matrix) / matrix.sum() if matrix.sum() else 0.0
    ax.set_title(f"{title} (accuracy {accuracy:.1%})")
    fig.tight_layout()
    return fig


def save_learning_curves(epochs, path, *, title: str = "") -> Path:
    return _save(learning_curves(epochs, title=title), path)


def save_confusion_matrix(matrix, class_names, path, *, title: str = "Confusion matrix") -> Path:
    return _save(confusion_matrix_figure(matrix, class_names, title=title), path)
