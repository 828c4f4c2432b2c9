"""PNG evaluation plots of the tracking task: edge scores, ROC, track efficiency vs pT/η, fake rate vs η."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gnnreco.tasks.tracking.metrics import roc_auc, roc_curve
from gnnreco.utils.plotting import binned_ratio, plt, savefig

__all__ = ["make_plots", "plot_scores", "plot_roc", "plot_efficiency", "plot_fake_rate"]


def plot_scores(scores: np.ndarray, y: np.ndarray, path: Path, edge_cut: float | None = None) -> Path:
    """Edge-score distributions of true and fake edges (log y)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 51)
    ax.hist(scores[y], bins=bins, histtype="step", label="true edges", density=True)
    ax.hist(scores[~y], bins=bins, histtype="step", label="fake edges", density=True)
    if edge_cut is not None:
        ax.axvline(edge_cut, color="k", ls="--", lw=0.8, label=f"cut {edge_cut:g}")
    ax.set_yscale("log")
    ax.set_xlabel("edge score")
    ax.set_ylabel("density")
    ax.legend()
    return savefig(fig, path)


def plot_roc(scores: np.ndarray, y: np.ndarray, path: Path) -> Path:
    """ROC curve of the edge classifier with its AUC."""
    fpr, tpr = roc_curve(scores, y, n_points=400)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc(scores, y):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return savefig(fig, path)


def plot_efficiency(values: np.ndarray, passed: np.ndarray, bins: Sequence[float], xlabel: str, path: Path,
                    ylabel: str = "track efficiency (double majority)", log_x: bool = False) -> Path:
    """A binned ratio (efficiency or fake rate) with binomial errors."""
    c, r, e = binned_ratio(values, passed, np.asarray(bins, float))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(c, r, yerr=e, marker="o", ls="none", ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(np.asarray(bins, float))
    ax.grid(alpha=0.3)
    return savefig(fig, path)


def plot_fake_rate(eta: np.ndarray, matched: np.ndarray, path: Path) -> Path:
    """Fake rate (1 − matched) of track candidates vs the η of their majority particle."""
    ok = np.isfinite(eta)
    return plot_efficiency(eta[ok], ~matched[ok], np.linspace(-4, 4, 17), "η (majority particle)", path,
                           ylabel="fake rate (double majority)")


def make_plots(cache: Sequence[dict[str, Any]], out_dir: Path, edge_cut: float = 0.5) -> list[Path]:
    """All plots from the per-event test cache of :class:`gnnreco.tasks.tracking.module.TrackingModule`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = np.concatenate([c["scores"] for c in cache])
    y = np.concatenate([c["y"] for c in cache])
    paths = []
    if scores.size:
        paths.append(plot_scores(scores, y, out_dir / "tracking_edge_scores.png", edge_cut))
        if y.any() and (~y).any():
            paths.append(plot_roc(scores, y, out_dir / "tracking_roc.png"))
    den = np.concatenate([c["particle_den"] for c in cache])
    reco = np.concatenate([c["particle_reco"] for c in cache])
    pt = np.concatenate([c["particle_pt"] for c in cache])
    eta = np.concatenate([c["particle_eta"] for c in cache])
    if den.any():
        pt_bins = np.array([1, 1.5, 2, 3, 5, 10, 20, 100.0])
        paths.append(plot_efficiency(pt[den], reco[den], pt_bins, "pT [GeV]", out_dir / "tracking_eff_vs_pt.png",
                                     log_x=True))
        paths.append(plot_efficiency(eta[den], reco[den], np.linspace(-4, 4, 17), "η",
                                     out_dir / "tracking_eff_vs_eta.png"))
    t_eta = np.concatenate([c["track_eta"] for c in cache])
    matched = np.concatenate([c["track_matched"] for c in cache])
    if matched.size:
        paths.append(plot_fake_rate(t_eta, matched, out_dir / "tracking_fake_rate_vs_eta.png"))
    return paths
