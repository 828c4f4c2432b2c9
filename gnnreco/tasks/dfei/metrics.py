"""DFEI metrics: per true b chain, per event, pruning ROC curves.

**Per true b chain** (a b hadron with at least two reconstructed descendants; its particle set
:math:`S`), against the reconstructed cluster :math:`R` (tree of the predicted forest, built with
:func:`~gnnreco.tasks.dfei.reco.reconstruct_decay`, that holds most of :math:`S`):

* *perfect hierarchy*: :math:`R = S` and the LCA values of the reconstructed tree equal the truth;
* *wrong hierarchy*: :math:`R = S`, different LCA values;
* *none isolated*: :math:`S \\subset R`, with extra particles;
* *part reco*: at least 20% of :math:`S` in :math:`R`, not all;
* *not found*: below 20%.

**Per event:** perfect event reconstruction (the LCA matrix of the reconstructed forest equals the
truth over all particles), ``perfectLCA`` (the raw arg-max matrix equals the truth), signal-particle
efficiency (selected signal / true signal, where *selected* means kept by node pruning), background
retention (selected background / background) and rejection power :math:`1 -` retention.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gnnreco.tasks.dfei.reco import forest_clusters, lca_from_parents, reconstruct_decay

__all__ = ["CATEGORIES", "predicted_lca", "chain_categories", "evaluate_event", "roc_curve", "auc", "tune_lca_bias",
           "DFEIMetrics"]

CATEGORIES = ("perfect", "wrong_hierarchy", "none_isolated", "part_reco", "not_found")


def predicted_lca(n: int, pair_index: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Symmetric arg-max LCA matrix from per-pair class probabilities (both directions averaged).

    Args:
        n: particles in the event.
        pair_index: ``[2, E]`` local node ids.
        probs: ``[E, C]`` class probabilities.
    """
    out = np.zeros((n, n), dtype=np.int64)
    if pair_index.shape[1] == 0:
        return out
    i = np.minimum(pair_index[0], pair_index[1])
    j = np.maximum(pair_index[0], pair_index[1])
    key = i.astype(np.int64) * n + j
    uk, inv = np.unique(key, return_inverse=True)
    acc = np.zeros((len(uk), probs.shape[1]), dtype=np.float64)
    np.add.at(acc, inv, probs)
    cls = acc.argmax(1)
    pos = cls > 0
    a, b = uk[pos] // n, uk[pos] % n
    out[a, b] = cls[pos]
    out[b, a] = cls[pos]
    return out


def chain_categories(cluster: np.ndarray, true_lca: np.ndarray, parent: np.ndarray,
                     reco_lca: np.ndarray | None = None) -> list[str]:
    """Category of every true b chain with >= 2 particles (order of increasing chain id)."""
    n = len(cluster)
    roots = forest_clusters(parent, n)
    size = np.bincount(roots, minlength=len(parent))
    if reco_lca is None:
        reco_lca = lca_from_parents(parent, n, cap=3)
    out = []
    for c in np.unique(cluster[cluster >= 0]):
        s = np.flatnonzero(cluster == c)
        if len(s) < 2:
            continue
        r_s = roots[s]
        good = size[r_s] >= 2
        if not good.any():
            out.append("not_found")
            continue
        best = Counter(r_s[good].tolist()).most_common(1)[0][0]
        r = np.flatnonzero(roots == best)
        overlap = np.isin(s, r).sum()
        if overlap == len(s) and len(r) == len(s):
            same = np.array_equal(reco_lca[np.ix_(s, s)], true_lca[np.ix_(s, s)])
            out.append("perfect" if same else "wrong_hierarchy")
        elif overlap == len(s):
            out.append("none_isolated")
        elif overlap >= 0.2 * len(s):
            out.append("part_reco")
        else:
            out.append("not_found")
    return out


def evaluate_event(node_score: np.ndarray, y_node: np.ndarray, cluster: np.ndarray, true_lca: np.ndarray,
                   pair_index: np.ndarray, lca_probs: np.ndarray, node_cut: float) -> dict:
    """All per-event quantities of one event (local node ids)."""
    n = len(y_node)
    pred = predicted_lca(n, pair_index, lca_probs)
    parent = reconstruct_decay(pred)
    reco = lca_from_parents(parent, n, cap=3)
    cats = chain_categories(cluster, true_lca, parent, reco)
    sel = node_score > node_cut
    sig = y_node > 0
    return {
        "categories": cats,
        "perfect_event": bool(np.array_equal(reco, true_lca)),
        "perfect_lca": bool(np.array_equal(pred, true_lca)),
        "n_sig": int(sig.sum()), "n_sig_sel": int((sel & sig).sum()),
        "n_bkg": int((~sig).sum()), "n_bkg_sel": int((sel & ~sig).sum()),
        "parent": parent, "pred_lca": pred,
    }


def roc_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), thresholds decreasing."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label).astype(bool)
    o = np.argsort(-score, kind="stable")
    s, lab = score[o], label[o]
    tps = np.cumsum(lab)
    fps = np.cumsum(~lab)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tpr = np.r_[0.0, tps[last] / max(lab.sum(), 1)]
    fpr = np.r_[0.0, fps[last] / max((~lab).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve (trapezoids)."""
    return float(np.trapezoid(tpr, fpr)) if len(fpr) > 1 else float("nan")


@dataclass
class DFEIMetrics:
    """Accumulates per-event results and summarises them."""

    node_cut: float = 0.5
    events: list[dict] = field(default_factory=list)
    node_scores: list[np.ndarray] = field(default_factory=list)
    node_labels: list[np.ndarray] = field(default_factory=list)
    edge_scores: list[np.ndarray] = field(default_factory=list)
    edge_labels: list[np.ndarray] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    n_pos_pairs: int = 0

    def add(self, rec: dict, mode_id: int = -1) -> None:
        self.events.append({k: v for k, v in rec.items() if k not in ("parent", "pred_lca")})
        self.modes.append(int(mode_id))

    def summary(self, modes: Sequence[int] | None = None) -> dict[str, float]:
        ev = [e for e, m in zip(self.events, self.modes) if modes is None or m in modes]
        cats = Counter(c for e in ev for c in e["categories"])
        n_chains = sum(cats.values())
        out = {f"chain_{c}": cats.get(c, 0) / n_chains if n_chains else float("nan") for c in CATEGORIES}
        out["n_chains"] = float(n_chains)
        out["n_events"] = float(len(ev))
        n_sig = sum(e["n_sig"] for e in ev)
        n_bkg = sum(e["n_bkg"] for e in ev)
        out["signal_efficiency"] = sum(e["n_sig_sel"] for e in ev) / n_sig if n_sig else float("nan")
        out["background_retention"] = sum(e["n_bkg_sel"] for e in ev) / n_bkg if n_bkg else float("nan")
        out["background_rejection"] = 1.0 - out["background_retention"]
        out["perfect_event"] = float(np.mean([e["perfect_event"] for e in ev])) if ev else float("nan")
        out["perfect_lca"] = float(np.mean([e["perfect_lca"] for e in ev])) if ev else float("nan")
        if self.node_scores:
            f, t, _ = roc_curve(np.concatenate(self.node_scores), np.concatenate(self.node_labels))
            out["node_auc"] = auc(f, t)
        if self.edge_scores:
            f, t, _ = roc_curve(np.concatenate(self.edge_scores), np.concatenate(self.edge_labels))
            out["edge_auc"] = auc(f, t)
        return out


def tune_lca_bias(events: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                  grid: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], dict[str, float]]:
    r"""Choose the LCA logit shift :math:`b` that maximises the perfect-hierarchy fraction.

    The class of a pair becomes :math:`\arg\max_c (\log p_c + b_c)`, a prior shift of the classifier;
    like a pruning cut it is a working point, to be chosen on validation events (never the test sample).

    Args:
        events: ``(n, pair_index [2, E], log_probs [E, 4], cluster [n], true_lca [n, n])`` per event,
            with the LCA network run *without* a bias.
        grid: candidate shifts, four values each (``b_0`` is usually 0).

    Returns:
        the best shift and its chain-category fractions (ties: the first in ``grid``).
    """
    best: tuple[tuple[float, ...], dict[str, float]] | None = None
    for b in grid:
        bias = np.asarray(b, dtype=np.float64)
        if bias.shape != (4,):
            raise ValueError(f"tune_lca_bias: every grid entry needs 4 values, got {list(b)}")
        cats: Counter = Counter()
        for n, pi, lp, cl, tl in events:
            cats.update(chain_categories(cl, tl, reconstruct_decay(predicted_lca(n, pi, np.exp(lp + bias)))))
        tot = sum(cats.values())
        frac = {c: cats.get(c, 0) / tot if tot else float("nan") for c in CATEGORIES}
        if best is None or frac["perfect"] > best[1]["perfect"]:
            best = (tuple(float(v) for v in b), frac)
    if best is None:
        raise ValueError("tune_lca_bias: empty grid")
    return best
