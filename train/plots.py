"""ROC curve, confusion-matrix and reliability PNGs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xraylab.labels import CLASSES

__all__ = ["plot_roc", "plot_confusion", "plot_reliability"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.set(xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)",
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(cm: dict[str, int], path: Path, title: str) -> Path:
    plt = _pyplot()
    grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    ax.imshow(grid, cmap="Blues")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > grid.max() / 2 else "black",
                fontsize=14)
    ax.set_xticks([0, 1], list(CLASSES))
    ax.set_yticks([0, 1], list(CLASSES))
    ax.set(xlabel="Predicted", ylabel="Actual", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_reliability(bins: list[dict[str, Any]], ece: float, path: Path, title: str) -> Path:
    """The reliability diagram of ``classification_report``'s calibration bins: observed pneumonia rate against
    mean score per bin (dot size: how many studies), the diagonal being perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    if bins:
        counts = np.array([b["count"] for b in bins], np.float64)
        ax.plot([b["mean_score"] for b in bins], [b["pneumonia_rate"] for b in bins], "-", color="C0", lw=1)
        ax.scatter([b["mean_score"] for b in bins], [b["pneumonia_rate"] for b in bins],
                   s=20 + 180 * counts / counts.max(), color="C0", zorder=3, label=f"model (ECE = {ece:.3f})")
    ax.set(xlabel="Mean calibrated score in bin", ylabel="Observed pneumonia rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
