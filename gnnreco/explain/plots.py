"""Plots of LRP explanations (matplotlib, saved as PNG).

* :func:`feature_relevance_bar` — relevance per input feature, summed over nodes;
* :func:`event_display` — hits/elements in x–y or η–φ coloured by their relevance, with the edges
  that carried relevance drawn with a width ∝ |R|;
* :func:`rmap` — xai4hep's "R-map": |R| per feature of the explained node and its most relevant
  neighbours (a heat map, rows sorted by relevance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gnnreco.explain.api import Explanation

__all__ = ["feature_relevance_bar", "event_display", "rmap", "top_neighbours"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # noqa: BLE001 - a backend already in use is fine
            pass
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: str | Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().double().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=float)


def feature_relevance_bar(relevance: Explanation | Tensor | Sequence[Explanation], feature_names: Sequence[str] | None = None,
                          labels: Sequence[str] | None = None, absolute: bool = False, normalise: bool = True,
                          ax=None, path: str | Path | None = None, title: str | None = None):
    """Bar chart of the relevance of each input feature, summed over nodes.

    Args:
        relevance: an explanation, a relevance tensor ``[N, F]`` / ``[F]``, or several explanations
            (one group of bars each, e.g. true vs fake edges; each is averaged over its items).
        feature_names: names of the F features.
        labels: legend label per explanation group.
        absolute: sum :math:`|R|` instead of signed :math:`R`.
        normalise: divide each group by its total :math:`\\sum |R|`.
        path: write a PNG there.
    """
    plt = _plt()
    groups = relevance if isinstance(relevance, (list, tuple)) else [relevance]
    rows = []
    for g in groups:
        if isinstance(g, (list, tuple)):
            r = np.mean([_feature_vector(e, absolute) for e in g], axis=0)
        else:
            r = _feature_vector(g, absolute)
        if normalise:
            r = r / max(np.abs(r).sum(), 1e-30)
        rows.append(r)
    F = rows[0].shape[0]
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(F)]
    if len(names) != F:
        raise ValueError(f"feature_relevance_bar: {len(names)} feature_names for {F} features")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * F + 2), 3.2))
    else:
        fig = ax.figure
    width = 0.8 / len(rows)
    xs = np.arange(F)
    for i, r in enumerate(rows):
        ax.bar(xs + (i - (len(rows) - 1) / 2) * width, r, width,
               label=None if labels is None else labels[i])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(xs, names, rotation=45, ha="right")
    ax.set_ylabel(("|R|" if absolute else "R") + (" (fraction)" if normalise else ""))
    if labels is not None:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, path)


def _feature_vector(e: Explanation | Tensor, absolute: bool) -> np.ndarray:
    r = e.node_relevance if isinstance(e, Explanation) else e
    r = _np(r)
    if absolute:
        r = np.abs(r)
    return r.reshape(-1, r.shape[-1]).sum(0) if r.ndim > 1 else r


def event_display(pos: Tensor | np.ndarray, expl: Explanation | Tensor, coords: str = "xy",
                  edge_index: Tensor | None = None, edge_relevance: Tensor | None = None, max_edges: int = 300,
                  ax=None, path: str | Path | None = None, title: str | None = None, size: float = 18.0):
    """Relevance-weighted event display.

    Args:
        pos: node positions ``[N, 2]`` (x, y) or ``[N, 3]`` (x, y, z; converted to η–φ with
            ``coords="etaphi"``).
        expl: an explanation (node relevance summed over features) or a relevance ``[N]``.
        coords: ``xy`` or ``etaphi``.
        edge_index, edge_relevance: edges to draw (default: the explanation's input edges and their
            relevance, or its recorded graph); the ``max_edges`` most relevant are drawn.
        path: write a PNG there.
    """
    plt = _plt()
    p = _np(pos)
    if coords == "etaphi":
        if p.shape[1] == 3:
            r = np.hypot(p[:, 0], p[:, 1])
            eta = np.arcsinh(p[:, 2] / np.maximum(r, 1e-9))
            phi = np.arctan2(p[:, 1], p[:, 0])
            p = np.stack([eta, phi], 1)
        xlabel, ylabel = "η", "φ"
    elif coords == "xy":
        p = p[:, :2]
        xlabel, ylabel = "x [mm]", "y [mm]"
    else:
        raise ValueError(f"event_display: coords must be 'xy' or 'etaphi', got {coords!r}")
    rel = _np(expl.neighbour_relevance if isinstance(expl, Explanation) else expl)
    if isinstance(expl, Explanation) and edge_index is None:
        if expl.edge_index is not None:
            edge_index, edge_relevance = expl.edge_index, expl.edge_relevance()
        elif expl.messages:
            edge_index, edge_relevance = expl.graph_edges()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
    else:
        fig = ax.figure
    vmax = max(np.abs(rel).max(), 1e-30)
    if edge_index is not None and edge_relevance is not None:
        ei, er = _np(edge_index).astype(int), np.abs(_np(edge_relevance))
        if er.size:
            order = np.argsort(-er)[:max_edges]
            emax = max(er[order].max(), 1e-30)
            for k in order[::-1]:
                a, b = ei[0, k], ei[1, k]
                ax.plot(p[[a, b], 0], p[[a, b], 1], color="0.3", lw=0.3 + 2.5 * er[k] / emax,
                        alpha=0.15 + 0.7 * er[k] / emax, zorder=1)
    sc = ax.scatter(p[:, 0], p[:, 1], c=rel, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                    s=size * (0.3 + 2.0 * np.abs(rel) / vmax), edgecolors="k", linewidths=0.2, zorder=2)
    if isinstance(expl, Explanation) and expl.target_nodes is not None:
        t = _np(expl.target_nodes).astype(int).reshape(-1)
        t = t[t < p.shape[0]]
        ax.scatter(p[t, 0], p[t, 1], marker="*", s=140, facecolors="none", edgecolors="gold", linewidths=1.5,
                   zorder=3, label="explained")
        ax.legend(frameon=False, loc="upper right")
    fig.colorbar(sc, ax=ax, label="relevance R")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, path)


def top_neighbours(expl: Explanation, node: int | None = None, k: int = 8) -> Tensor:
    """The explained node followed by the ``k`` other nodes with the largest :math:`\\sum_f |R_{j,f}|`."""
    r = expl.node_relevance.abs().sum(-1)
    t = int(expl.target_nodes.reshape(-1)[0]) if node is None else int(node)
    r = r.clone()
    r[t] = -1.0
    order = torch.argsort(r, descending=True)[:k]
    order = order[r[order] > 0]
    return torch.cat([torch.tensor([t]), order])


def rmap(expl: Explanation, node: int | None = None, k: int = 8, feature_names: Sequence[str] | None = None,
         ax=None, path: str | Path | None = None, title: str | None = None):
    """xai4hep R-map: |R| per feature of the explained node (top row) and its ``k`` most relevant
    neighbours, normalised to the largest entry."""
    plt = _plt()
    rows = top_neighbours(expl, node, k)
    m = _np(expl.node_relevance.abs()[rows])
    m = m / max(m.max(), 1e-30)
    F = m.shape[1]
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(F)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * F + 2), 0.35 * len(rows) + 1.6))
    else:
        fig = ax.figure
    im = ax.imshow(m, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(F), names, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), ["self" if i == 0 else f"n{int(j)}" for i, j in enumerate(rows)])
    fig.colorbar(im, ax=ax, label="|R| / max")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, path)
