"""DFEI plots: pruning ROC curves, chain categories, and a reconstructed decay tree next to the true one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnnreco.tasks.dfei.metrics import CATEGORIES, DFEIMetrics, roc_curve
from gnnreco.tasks.dfei.reco import InvalidLCAMatrix, lca_to_adjacency, reconstruct_decay

__all__ = ["make_plots", "draw_forest"]


def draw_forest(ax, parent: np.ndarray, leaves: np.ndarray, labels: list[str], title: str) -> None:
    """Draw the trees of a forest that contain ``leaves`` (leaf ids), roots at the top."""
    parent = np.asarray(parent)
    keep = set(int(i) for i in leaves)
    frontier = list(keep)
    while frontier:  # add ancestors
        p = int(parent[frontier.pop()])
        if p >= 0 and p not in keep:
            keep.add(p)
            frontier.append(p)
    children: dict[int, list[int]] = {}
    for c in sorted(keep):
        p = int(parent[c])
        if p >= 0:
            children.setdefault(p, []).append(c)
    roots = [k for k in sorted(keep) if parent[k] < 0]
    pos: dict[int, tuple[float, float]] = {}
    cursor = [0.0]

    def place(node: int, depth: int) -> float:
        kids = children.get(node, [])
        if not kids:
            x = cursor[0]
            cursor[0] += 1.0
        else:
            x = float(np.mean([place(k, depth + 1) for k in kids]))
        pos[node] = (x, -depth)
        return x

    for r in roots:
        place(r, 0)
        cursor[0] += 0.5
    for c, (x, y) in pos.items():
        p = int(parent[c])
        if p >= 0 and p in pos:
            ax.plot([x, pos[p][0]], [y, pos[p][1]], color="0.5", lw=1, zorder=1)
    n_leaves = len(labels)
    for c, (x, y) in pos.items():
        leaf = c < n_leaves
        ax.scatter([x], [y], s=60 if leaf else 90, color="tab:blue" if leaf else "tab:orange", zorder=2)
        ax.annotate(labels[c] if leaf else "", (x, y), textcoords="offset points", xytext=(0, -12),
                    ha="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


_NAMES = {11: "e", 13: "μ", 211: "π", 321: "K", 2212: "p"}


def make_plots(metrics: DFEIMetrics, examples: list[dict], out_dir: str | Path) -> list[Path]:
    """Write ROC, category and tree-comparison PNGs; returns their paths."""
    from gnnreco.utils.plotting import plt, savefig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, sc, lab in (("node pruning", metrics.node_scores, metrics.node_labels),
                          ("edge pruning", metrics.edge_scores, metrics.edge_labels)):
        if sc and np.concatenate(lab).any():
            f, t, _ = roc_curve(np.concatenate(sc), np.concatenate(lab))
            ax.plot(f, t, label=name)
    ax.set_xlabel("background efficiency")
    ax.set_ylabel("signal efficiency")
    ax.set_xscale("log")
    ax.legend()
    paths.append(savefig(fig, out / "dfei_roc.png"))
    s = metrics.summary() if metrics.events else {}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(range(len(CATEGORIES)), [s.get(f"chain_{c}", 0.0) for c in CATEGORIES])
    ax.set_xticks(range(len(CATEGORIES)), [c.replace("_", "\n") for c in CATEGORIES], fontsize=8)
    ax.set_ylabel("fraction of true b chains")
    paths.append(savefig(fig, out / "dfei_chain_categories.png"))
    for k, ev in enumerate(examples[:2]):
        cl = ev["cluster"]
        chains = [c for c in np.unique(cl[cl >= 0]) if (cl == c).sum() >= 2]
        if not chains:
            continue
        s_ids = np.flatnonzero(cl == chains[0])
        try:
            tparent = lca_to_adjacency(ev["true_lca"])
        except InvalidLCAMatrix:
            tparent = reconstruct_decay(ev["true_lca"])
        pid = ev.get("pid", np.zeros(ev["n"], np.int64))
        labels = [_NAMES.get(abs(int(p)), "?") + ("+" if p > 0 else "-") + f"\n{i}" for i, p in enumerate(pid)]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
        draw_forest(axes[0], tparent, s_ids, labels, "true decay tree")
        draw_forest(axes[1], ev["parent"], s_ids, labels, "reconstructed")
        paths.append(savefig(fig, out / f"dfei_tree_{k}.png"))
    return paths
