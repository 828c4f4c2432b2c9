"""Plot helpers shared by every task (matplotlib, Agg backend, PNG output)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_loss_curves", "savefig", "binned_ratio"]


def savefig(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_loss_curves(metrics_csv: str | Path, path: str | Path) -> Path | None:
    """Train/validation loss per epoch from a Lightning ``CSVLogger`` ``metrics.csv``."""
    import pandas as pd

    df = pd.read_csv(metrics_csv)
    cols = [c for c in ("train/loss_epoch", "val/loss") if c in df.columns]
    if not cols or "epoch" not in df.columns:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c in cols:
        d = df[["epoch", c]].dropna().groupby("epoch").last()
        if len(d):
            ax.plot(d.index, d[c], marker="o", label=c.replace("_epoch", ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return savefig(fig, path)


def binned_ratio(values: np.ndarray, passed: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of ``passed`` per bin of ``values`` with binomial errors (efficiency-style curves).

    Returns bin centres, ratio (NaN in empty bins) and its standard error.
    """
    values = np.asarray(values, dtype=float)
    passed = np.asarray(passed, dtype=bool)
    total, _ = np.histogram(values, bins=bins)
    good, _ = np.histogram(values[passed], bins=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = good / total
        err = np.sqrt(ratio * (1 - ratio) / total)
    centres = 0.5 * (bins[1:] + bins[:-1])
    return centres, np.where(total > 0, ratio, np.nan), np.where(total > 0, err, np.nan)
