"""Edge and track metrics of GNN tracking (pure NumPy/pandas).

**Edges.** At a score cut :math:`c`, with selected edges :math:`S = \\{e : s_e > c\\}`:
efficiency :math:`|S \\cap T| / |T|` over the target true edges :math:`T`, purity
:math:`|S \\cap Y| / |S|` over all true edges :math:`Y`, and the ROC AUC of the scores.

**Tracks.** For a track candidate :math:`t` (≥ ``min_hits`` hits) and a particle :math:`p`, with
:math:`n_{tp}` shared hits, :math:`n_t` hits in the track and :math:`n_p` hits of the particle,

.. math::
    \\mathrm{purity}_{tp} = n_{tp} / n_t, \\qquad \\mathrm{eff}_{tp} = n_{tp} / n_p .

The majority particle of a track maximises :math:`n_{tp}` (ties: smaller particle id). With the
matching fraction :math:`f` (0.5, strict ">"), the definitions (reference §2.1) are

=================  ============================================  =========================================
definition         a track is *matched* (to its majority p) if   a particle is *reconstructed* if
=================  ============================================  =========================================
``double_majority`` purity > f and eff > f                        some matched track has it as majority
``two_way``        same as ``double_majority`` (acorn's name)     same
``atlas``          purity > f                                     some matched track has it as majority
``one_way``        purity > f                                     some track holds > f of its hits
``perfect``        the track holds all hits of p, purity > 0.99   some matched track has it as majority
``lhc``            purity > 0.75                                  some matched track has it as majority
=================  ============================================  =========================================

Efficiency = reconstructed / denominator particles (the targets with ≥ ``min_hits`` hits);
fake rate = 1 − matched / tracks; duplicate rate = (matched tracks − distinct matched particles) /
matched tracks. Noise (particle id 0) is never a match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "roc_auc",
    "roc_curve",
    "edge_metrics",
    "match_tracks",
    "track_metrics",
    "trackml_score",
    "construction_efficiency",
    "DEFINITIONS",
]

DEFINITIONS = ("double_majority", "two_way", "atlas", "one_way", "perfect", "lhc")


def _np(a: Any, dtype=None) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def roc_auc(scores: Any, y: Any) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties); NaN if one class is empty."""
    s = _np(scores, np.float64).reshape(-1)
    t = _np(y).reshape(-1).astype(bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Any, y: Any, n_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates on ``n_points`` score thresholds in [0, 1]."""
    s = _np(scores, np.float64).reshape(-1)
    t = _np(y).reshape(-1).astype(bool)
    thr = np.linspace(0, 1, n_points)
    pos = np.sort(s[t])
    neg = np.sort(s[~t])
    tpr = 1 - np.searchsorted(pos, thr, side="right") / max(pos.size, 1)
    fpr = 1 - np.searchsorted(neg, thr, side="right") / max(neg.size, 1)
    return fpr, tpr


def edge_metrics(scores: Any, y: Any, target: Any = None, weight: Any = None, cut: float = 0.5,
                 auc: bool = True) -> dict[str, float]:
    """Edge efficiency, purity and AUC at a score cut.

    Args:
        scores: :math:`s_e` in [0, 1].
        y: truth labels.
        target: mask of the target true edges for the efficiency (default: all true edges).
        weight: per-edge weights; when given, ``masked_purity`` ignores the edges with weight 0
            (true non-target edges, acorn's "masked purity").
        cut: score cut :math:`c`.
        auc: also compute the ROC AUC: target edges against fakes (true non-target edges, which the
            declarative weighting masks in training, are left out when ``target`` is given).

    Returns:
        ``efficiency``, ``purity``, ``masked_purity`` (if weights), ``auc``, ``n_edges``.
    """
    s = _np(scores, np.float64).reshape(-1)
    t = _np(y).reshape(-1).astype(bool)
    tgt = t if target is None else _np(target).reshape(-1).astype(bool)
    sel = s > cut
    out = {
        "efficiency": float((sel & tgt).sum() / tgt.sum()) if tgt.any() else float("nan"),
        "purity": float((sel & t).sum() / sel.sum()) if sel.any() else float("nan"),
        "n_edges": float(s.size),
    }
    if weight is not None:
        w = _np(weight, np.float64).reshape(-1)
        m = sel & (w != 0)
        out["masked_purity"] = float((m & t).sum() / m.sum()) if m.any() else float("nan")
    if auc:
        keep = tgt | ~t
        out["auc"] = roc_auc(s[keep], tgt[keep])
    return out


def construction_efficiency(edge_index: Any, hit_pid: Any, hit_coords: Any, target_hits: Any) -> float:
    """Fraction of the target particles' consecutive-hit (modulewise) truth edges present in a graph.

    Consecutive means adjacent when a particle's hits are sorted by :math:`R = r^2 + z^2`; hits on
    the same layer radius are both linked (the graph may connect either order).
    """
    ei = _np(edge_index, np.int64).reshape(2, -1)
    pid = _np(hit_pid, np.int64)
    c = _np(hit_coords, np.float64)
    tgt = _np(target_hits).astype(bool)
    idx = np.nonzero(tgt & (pid != 0))[0]
    if idx.size < 2:
        return float("nan")
    R = c[idx, 0] ** 2 + c[idx, 2] ** 2
    order = np.lexsort((R, pid[idx]))
    h = idx[order]
    same = pid[h[1:]] == pid[h[:-1]]
    a, b = h[:-1][same], h[1:][same]
    if a.size == 0:
        return float("nan")
    n = max(int(pid.size), 1)
    key_truth = np.minimum(a, b) * n + np.maximum(a, b)
    key_graph = np.minimum(ei[0], ei[1]) * n + np.maximum(ei[0], ei[1])
    return float(np.isin(key_truth, key_graph).mean())


def match_tracks(labels: Any, hit_pid: Any) -> pd.DataFrame:
    """Per track: size, majority particle, shared hits (the ``n_t``, :math:`p^*`, :math:`n_{tp^*}` above).

    Returns:
        DataFrame ``track, n_hits, major_pid, n_shared`` (one row per label ≥ 0).
    """
    lab = _np(labels, np.int64).reshape(-1)
    pid = _np(hit_pid, np.int64).reshape(-1)
    if lab.size != pid.size:
        raise ValueError(f"labels ({lab.size}) and hit_pid ({pid.size}) must have one entry per hit")
    v = lab >= 0
    if not v.any():
        return pd.DataFrame({"track": np.zeros(0, np.int64), "n_hits": np.zeros(0, np.int64),
                             "major_pid": np.zeros(0, np.int64), "n_shared": np.zeros(0, np.int64)})
    df = pd.DataFrame({"track": lab[v], "pid": pid[v]})
    cnt = df.groupby(["track", "pid"], sort=True).size().rename("n").reset_index()
    n_hits = cnt.groupby("track")["n"].transform("sum")
    cnt["n_hits"] = n_hits
    cnt = cnt.sort_values(["track", "n", "pid"], ascending=[True, False, True], kind="stable")
    major = cnt.drop_duplicates("track", keep="first")
    return pd.DataFrame({"track": major["track"].to_numpy(), "n_hits": major["n_hits"].to_numpy(),
                         "major_pid": major["pid"].to_numpy(), "n_shared": major["n"].to_numpy()})


def track_metrics(labels: Any, hit_pid: Any, particle_id: Any, particle_nhits: Any,
                  denominator: Any = None, definitions: Sequence[str] = ("double_majority",),
                  min_hits: int = 3, matching_fraction: float = 0.5,
                  return_details: bool = False) -> dict[str, Any]:
    """Track efficiency, fake rate and duplicate rate under several matching definitions.

    Args:
        labels: per-hit track labels (−1: unassigned).
        hit_pid: per-hit particle id (0: noise).
        particle_id: particle table ids.
        particle_nhits: hits :math:`n_p` of every particle (in the event, after hit selection).
        denominator: mask over the particle table of the particles in the efficiency denominator
            (e.g. pT > 1 GeV, |η| < 4); particles with fewer than ``min_hits`` hits are always excluded.
        definitions: subset of :data:`DEFINITIONS`.
        min_hits: tracks and particles need at least this many hits.
        matching_fraction: :math:`f`.
        return_details: also return per-particle ``reconstructed`` and per-track ``matched`` arrays
            (key ``details``) for binned plots.

    Returns:
        ``{f"{d}_efficiency", f"{d}_fake_rate", f"{d}_duplicate_rate"}`` per definition, plus
        ``n_tracks``, ``n_particles``.
    """
    bad = [d for d in definitions if d not in DEFINITIONS]
    if bad:
        raise ValueError(f"unknown matching definition(s) {bad}; expected some of {list(DEFINITIONS)}")
    lab = _np(labels, np.int64).reshape(-1)
    hpid = _np(hit_pid, np.int64).reshape(-1)
    ppid = _np(particle_id, np.int64).reshape(-1)
    pn = _np(particle_nhits, np.int64).reshape(-1)
    den = np.ones(ppid.size, bool) if denominator is None else _np(denominator).reshape(-1).astype(bool)
    den &= (pn >= min_hits) & (ppid != 0)
    # drop small tracks
    sizes = np.bincount(lab[lab >= 0], minlength=1) if (lab >= 0).any() else np.zeros(1, np.int64)
    lab = np.where((lab >= 0) & (sizes[np.clip(lab, 0, None)] >= min_hits), lab, -1)
    trk = match_tracks(lab, hpid)
    order = np.argsort(ppid)
    sorted_pid = ppid[order]
    pos = np.clip(np.searchsorted(sorted_pid, trk["major_pid"].to_numpy()), 0, max(ppid.size - 1, 0))
    known = (ppid.size > 0) & (sorted_pid[pos] == trk["major_pid"].to_numpy()) if ppid.size else np.zeros(len(trk), bool)
    prow = order[pos] if ppid.size else np.zeros(len(trk), np.int64)
    n_p = np.where(known, pn[prow] if ppid.size else 0, 0)
    n_t = trk["n_hits"].to_numpy()
    n_tp = trk["n_shared"].to_numpy()
    nonnoise = trk["major_pid"].to_numpy() != 0
    purity = n_tp / np.maximum(n_t, 1)
    eff = np.where(n_p > 0, n_tp / np.maximum(n_p, 1), 0.0)
    f = matching_fraction
    # best per-particle fraction in any single track (one_way reconstruction)
    best_frac = np.zeros(ppid.size)
    if (lab >= 0).any() and ppid.size:
        v = (lab >= 0) & (hpid != 0)
        df = pd.DataFrame({"t": lab[v], "p": hpid[v]}).groupby(["p", "t"]).size().groupby(level=0).max()
        pos2 = np.searchsorted(sorted_pid, df.index.to_numpy())
        ok = (pos2 < sorted_pid.size) & (sorted_pid[np.clip(pos2, 0, sorted_pid.size - 1)] == df.index.to_numpy())
        best_frac[order[pos2[ok]]] = df.to_numpy()[ok] / np.maximum(pn[order[pos2[ok]]], 1)
    out: dict[str, Any] = {"n_tracks": float(len(trk)), "n_particles": float(den.sum())}
    details: dict[str, Any] = {}
    for d in definitions:
        if d in ("double_majority", "two_way"):
            matched = (purity > f) & (eff > f)
        elif d in ("atlas", "one_way"):
            matched = purity > f
        elif d == "perfect":
            matched = (n_tp == n_p) & (purity > 0.99)
        else:  # lhc
            matched = purity > 0.75
        matched &= nonnoise & known
        if d == "one_way":
            reco = best_frac > f
        else:
            reco = np.zeros(ppid.size, bool)
            reco[prow[matched]] = True
        n_match = int(matched.sum())
        n_unique = int(np.unique(prow[matched]).size) if n_match else 0
        out[f"{d}_efficiency"] = float(reco[den].mean()) if den.any() else float("nan")
        out[f"{d}_fake_rate"] = float(1 - n_match / len(trk)) if len(trk) else float("nan")
        out[f"{d}_duplicate_rate"] = float((n_match - n_unique) / n_match) if n_match else float("nan")
        details[d] = {"particle_reconstructed": reco, "track_matched": matched}
    if return_details:
        details["denominator"] = den
        details["track_major_row"] = np.where(known, prow, -1)
        out["details"] = details
    return out


def trackml_score(hit_id: Any, hit_pid: Any, hit_weight: Any, labels: Any) -> float:
    """The official TrackML score (:func:`gnnreco.data.trackml.score_event`) of per-hit labels.

    Unassigned hits (label −1) become one-hit tracks of their own.
    """
    from gnnreco.data.trackml import score_event

    hid = _np(hit_id, np.int64).reshape(-1)
    lab = _np(labels, np.int64).reshape(-1).copy()
    free = lab < 0
    lab[free] = lab.max(initial=-1) + 1 + np.arange(int(free.sum()))
    truth = pd.DataFrame({"hit_id": hid, "particle_id": _np(hit_pid, np.int64).reshape(-1),
                          "weight": _np(hit_weight, np.float64).reshape(-1)})
    if truth["weight"].sum() <= 0:
        return float("nan")
    return float(score_event(truth, pd.DataFrame({"hit_id": hid, "track_id": lab})))
