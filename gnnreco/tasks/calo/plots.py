"""PNG plots of calorimeter-clustering results (efficiency, rates, energy response, PID confusion,
energy budget)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnnreco.sim.calo import PID_CLASSES
from gnnreco.tasks.calo.metrics import CaloMetricsAccumulator
from gnnreco.utils.plotting import savefig

__all__ = ["plot_all", "plot_energy_budget", "ENERGY_EDGES", "ETA_EDGES"]

ENERGY_EDGES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
ETA_EDGES = (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)


def _centres(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[1:] + edges[:-1])


def plot_all(acc: CaloMetricsAccumulator, out_dir: str | Path, *, energy_edges=ENERGY_EDGES,
             eta_edges=ETA_EDGES) -> list[Path]:
    """Write ``efficiency.png``, ``energy_response.png``, ``pid_confusion.png`` and, when the events carry
    an energy budget, ``energy_budget.png``; returns their paths."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written: list[Path] = []
    if not acc.events:
        return written
    # efficiency, merge and split rates vs energy and eta
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, var, edges, label in ((axes[0], "energy", energy_edges, "true energy [GeV]"),
                                  (axes[1], "eta", eta_edges, "true η")):
        eff = acc.efficiency_vs(var, edges)
        c = _centres(eff["edges"])
        for name, style in (("efficiency", "o-"), ("merged", "s--"), ("split", "^:")):
            ax.plot(c, eff[name], style, label=name)
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.05)
        if var == "energy":
            ax.set_xscale("log")
        ax.legend()
    written.append(savefig(fig, out_dir / "efficiency.png"))

    # energy response and resolution vs energy and eta, network vs truth-assignment hit sum
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    for col, (var, edges, label) in enumerate((("energy", energy_edges, "true energy [GeV]"),
                                               ("eta", eta_edges, "true η"))):
        r = acc.response_vs(var, edges)
        c = _centres(np.asarray(edges, float))
        for name, style in (("network", "o-"), ("truth_sum", "s--")):
            axes[0, col].plot(c, r[name]["median"], style, label=name)
            axes[1, col].plot(c, r[name]["resolution"], style, label=name)
        axes[0, col].set_ylabel("median E_pred / E_true")
        axes[1, col].set_ylabel("IQR / (1.349 median)")
        axes[1, col].set_xlabel(label)
        if var == "energy":
            axes[1, col].set_xscale("log")
        axes[0, col].legend()
    written.append(savefig(fig, out_dir / "energy_response.png"))

    # PID confusion (row-normalised)
    conf = acc.pid_confusion().astype(float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    names = list(PID_CLASSES)[: conf.shape[0]]
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax)
    written.append(savefig(fig, out_dir / "pid_confusion.png"))
    if all(ev.budget is not None for ev in acc.events):
        written.append(plot_energy_budget(acc.energy_budget(), out_dir / "energy_budget.png"))
    return written


def plot_energy_budget(budget: dict[str, dict[str, float]], path: str | Path) -> Path:
    """Stacked bars of where the matched showers' hit energy went, per class (left), and the
    resolution ratio to the truth-assignment hit sum as reconstructed and with each loss undone
    (right), from :meth:`CaloMetricsAccumulator.energy_budget`."""
    import matplotlib.pyplot as plt

    groups = [g for g in budget if budget[g]["n"] > 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for key, label in (("lost_matched", "to another shower"), ("lost_unmatched", "to a fragment / fake"),
                       ("unassigned", "unassigned"), ("received", "received (other showers, noise)")):
        v = np.array([budget[g][key] for g in groups])
        if key == "received":
            axes[0].bar(x + 0.3, v, 0.25, label=label, color="grey")
        else:
            axes[0].bar(x - 0.1, v, 0.4, bottom=bottom, label=label)
            bottom += v
    axes[0].set_xticks(x, groups, rotation=20)
    axes[0].set_ylabel("mean fraction of the shower's hit energy")
    axes[0].legend(fontsize=8)
    for i, (key, label) in enumerate((("ratio_reco", "as reconstructed"), ("ratio_plus_fragments", "+ fragments back"),
                                      ("ratio_plus_lost", "+ all lost back"), ("ratio_minus_received", "− received"))):
        axes[1].bar(x + (i - 1.5) * 0.2, [budget[g][key] for g in groups], 0.2, label=label)
    axes[1].axhline(1.0, color="k", lw=0.8)
    top = max([budget[g][k] for g in groups for k in ("ratio_reco", "ratio_plus_fragments", "ratio_plus_lost",
                                                      "ratio_minus_received") if np.isfinite(budget[g][k])] + [1.0])
    axes[1].set_ylim(0.9, top + 0.1)
    axes[1].set_xticks(x, groups, rotation=20)
    axes[1].set_ylabel("resolution / truth-assignment hit sum")
    axes[1].legend(fontsize=8, ncol=2, loc="upper left")
    return savefig(fig, Path(path))
