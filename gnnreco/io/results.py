"""Per-event reconstruction results as flat columns (the output layout of ``gnnreco infer``).

A task module's ``reconstruct(batch, out)`` gives one record per event in the graph's own indexing
(after hit selection, in the processor's order). :func:`result_columns` turns it into the columns that
are written, in the *input's* indexing, with every ragged list stored as a flat array plus counts so
that the same layout fits a ROOT TTree (one level of jaggedness) and parquet:

=========  ==================================================================================
task       columns (per event; ``[N]`` hits/elements/particles, ``[T]``/``[K]``/``[C]`` objects)
=========  ==================================================================================
tracking   ``hit_id [N]``, ``track_label [N]`` (−1: on no track), ``track_hits [ΣT_k]`` (input hit
           indices, track after track, ordered by :math:`r^2+z^2`), ``track_nhits [T]``,
           ``track_score [T]`` (mean edge score inside the track); with ``keep_edges``:
           ``edge_src, edge_dst [E]`` (input hit indices), ``edge_score [E]``
calo       ``hit_cluster [N]`` (−1 noise), ``cluster_energy [K]`` (GeV), ``cluster_x, cluster_y``
           (mm), ``cluster_time`` (ns), ``cluster_pid``, ``cluster_beta``, ``cluster_seed_hit``
           (condensation point), and ``cluster_energy_low/high`` when quantiles are predicted
pflow      ``cand_pid, cand_charge, cand_pt, cand_eta, cand_sin_phi, cand_cos_phi, cand_energy,
           cand_element`` ``[C]`` (element index of each candidate)
dfei       ``node_score [N]``, ``parent [N+M]`` (parent link of the N particles and then of the M
           reconstructed ancestors, which are numbered N…N+M−1; −1 for a root), ``lca_i, lca_j,
           lca [P]``: the non-zero upper triangle of the symmetric LCA matrix (``M[i,j] = M[j,i] = lca``)
other      every 1-D array as a column, ``[n, k]`` arrays as ``<key>_0 … <key>_{k-1}``, lists of
           arrays as ``<key>`` (flat) + ``<key>_n`` (counts), scalars as scalars
=========  ==================================================================================

Every file also has ``run``, ``event`` and ``ok`` (False when the processor rejected the event, e.g.
an empty event; its other columns are then empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["result_columns", "tracks_from_columns", "track_scores", "dense_lca", "generic_columns"]


def _np(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def track_scores(labels: np.ndarray, edge_index: np.ndarray, scores: np.ndarray, n_tracks: int) -> np.ndarray:
    """Mean score of the edges whose two hits lie on the same track, per track (0 for none).

    .. math:: s_t = \\frac{1}{|E_t|} \\sum_{(j,i) \\in E_t} s_{ji},\\quad
              E_t = \\{(j, i) : t_j = t_i = t\\}

    Shapes:
        labels ``[N]``, edge_index ``[2, E]``, scores ``[E]`` → ``[T]`` float32.
    """
    out = np.zeros(n_tracks, np.float32)
    if n_tracks == 0 or edge_index.size == 0:
        return out
    ls, ld = labels[edge_index[0]], labels[edge_index[1]]
    inside = (ls == ld) & (ls >= 0)
    tot = np.bincount(ls[inside], weights=scores[inside], minlength=n_tracks)
    cnt = np.bincount(ls[inside], minlength=n_tracks)
    out[:] = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)[:n_tracks]
    return out


def _input_rows(graph_hit_id: np.ndarray, input_hit_id: np.ndarray | None) -> np.ndarray:
    if input_hit_id is None:
        return np.arange(len(graph_hit_id), dtype=np.int64)
    sorter = np.argsort(input_hit_id, kind="stable")
    pos = np.searchsorted(input_hit_id, graph_hit_id, sorter=sorter)
    pos = np.clip(pos, 0, max(len(input_hit_id) - 1, 0))
    rows = sorter[pos] if len(input_hit_id) else np.zeros(0, np.int64)
    bad = len(input_hit_id) == 0 or np.any(input_hit_id[rows] != graph_hit_id)
    if bad and len(graph_hit_id):
        raise ValueError("tracking result: a graph hit_id is not among the input hit ids (the processor "
                         "must keep the input's hit_id column)")
    return rows.astype(np.int64)


def _tracking(rec: Mapping[str, Any], graph: Mapping[str, Any], input_hit_id: np.ndarray | None,
              keep_edges: bool) -> dict[str, np.ndarray]:
    labels = _np(rec["track_labels"]).astype(np.int64)
    ghid = _np(rec.get("hit_id", graph.get("hit_id", np.arange(len(labels))))).astype(np.int64)
    rows = _input_rows(ghid, input_hit_id)
    n_in = len(input_hit_id) if input_hit_id is not None else len(labels)
    hit_id = input_hit_id.astype(np.int64) if input_hit_id is not None else ghid
    full = np.full(n_in, -1, np.int64)
    full[rows] = labels
    n_tracks = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    ei = _np(rec.get("edge_index", np.zeros((2, 0)))).astype(np.int64).reshape(2, -1)
    sc = _np(rec.get("edge_scores", np.zeros(0))).astype(np.float32).reshape(-1)
    hc = graph.get("hit_coords")
    if hc is not None and len(_np(hc)) == len(labels):
        hc = _np(hc).astype(np.float64)
        R = hc[:, 0] ** 2 + hc[:, 2] ** 2
    else:
        R = np.arange(len(labels), dtype=np.float64)
    on = np.flatnonzero(labels >= 0)
    order = on[np.lexsort((R[on], labels[on]))]
    cols = {
        "hit_id": hit_id,
        "track_label": full,
        "track_hits": rows[order],
        "track_nhits": np.bincount(labels[on], minlength=n_tracks).astype(np.int64),
        "track_score": track_scores(labels, ei, sc, n_tracks),
    }
    if keep_edges:
        cols["edge_src"] = rows[ei[0]] if ei.size else np.zeros(0, np.int64)
        cols["edge_dst"] = rows[ei[1]] if ei.size else np.zeros(0, np.int64)
        cols["edge_score"] = sc
    return cols


def _calo(rec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    pos = _np(rec["position"]).reshape(-1, 2)
    cols = {
        "hit_cluster": _np(rec["assignment"]).astype(np.int64),
        "cluster_energy": _np(rec["energy"]).astype(np.float32),
        "cluster_x": pos[:, 0].astype(np.float32),
        "cluster_y": pos[:, 1].astype(np.float32),
        "cluster_time": _np(rec["time"]).astype(np.float32),
        "cluster_pid": _np(rec["pid"]).astype(np.int64),
        "cluster_beta": _np(rec["beta"]).astype(np.float32),
        "cluster_seed_hit": _np(rec["cp_index"]).astype(np.int64),
    }
    for k in ("energy_low", "energy_high"):
        if k in rec:
            cols[f"cluster_{k}"] = _np(rec[k]).astype(np.float32)
    return cols


_PF_NAMES = ("cand_pid", "cand_charge", "cand_pt", "cand_eta", "cand_sin_phi", "cand_cos_phi", "cand_energy")


def _pflow(rec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    c = _np(rec["candidates"]).reshape(-1, 7)
    cols = {name: c[:, j].astype(np.float32) for j, name in enumerate(_PF_NAMES)}
    cols["cand_pid"] = c[:, 0].astype(np.int64)
    cols["cand_charge"] = c[:, 1].astype(np.int64)
    cols["cand_element"] = _np(rec["element_index"]).astype(np.int64)
    return cols


def _dfei(rec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        "node_score": _np(rec["node_score"]).astype(np.float32),
        "parent": _np(rec["parent"]).astype(np.int64),
        "lca_i": _np(rec["lca_i"]).astype(np.int64),
        "lca_j": _np(rec["lca_j"]).astype(np.int64),
        "lca": _np(rec["lca"]).astype(np.int64),
    }


def generic_columns(rec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Columns of a record of any task (see the module table, row *other*)."""
    cols: dict[str, np.ndarray] = {}
    for k, v in rec.items():
        if isinstance(v, list | tuple) and (not v or hasattr(v[0], "__len__")):
            arrs = [_np(a).reshape(-1) for a in v]
            cols[k] = np.concatenate(arrs) if arrs else np.zeros(0, np.int64)
            cols[f"{k}_n"] = np.array([len(a) for a in arrs], np.int64)
            continue
        a = _np(v)
        if a.ndim == 0:
            cols[k] = a.copy()
        elif a.ndim == 1:
            cols[k] = a.copy()
        else:
            a = a.reshape(len(a), -1)
            for j in range(a.shape[1]):
                cols[f"{k}_{j}"] = a[:, j].copy()
    return cols


def result_columns(task: str, record: Mapping[str, Any], graph: Mapping[str, Any] | None = None,
                   input_hit_id: np.ndarray | None = None, keep_edges: bool = False) -> dict[str, np.ndarray]:
    """Output columns of one event (fresh arrays: they never alias reused input buffers).

    Args:
        task: task name.
        record: one element of the task module's ``reconstruct(batch, out)``.
        graph: the processed event (tracking: ``hit_coords`` order the hits of a track).
        input_hit_id: tracking: the input event's hit ids, to express hits as input indices.
        keep_edges: tracking: also write the scored edges.
    """
    graph = graph or {}
    if task == "tracking":
        cols = _tracking(record, graph, input_hit_id, keep_edges)
    elif task == "calo":
        cols = _calo(record)
    elif task == "pflow":
        cols = _pflow(record)
    elif task == "dfei":
        cols = _dfei(record)
    else:
        cols = generic_columns(record)
    return {k: np.array(v, copy=True) for k, v in cols.items()}


def tracks_from_columns(track_hits: Sequence[int] | np.ndarray, track_nhits: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Split the flat ``track_hits`` of one event into one hit-index array per track."""
    th = np.asarray(track_hits, np.int64)
    n = np.asarray(track_nhits, np.int64)
    return np.split(th, np.cumsum(n)[:-1]) if len(n) else []


def dense_lca(n: int, lca_i: Sequence[int], lca_j: Sequence[int], lca: Sequence[int]) -> np.ndarray:
    """The symmetric ``[n, n]`` LCA matrix of one event from the written upper-triangle pairs."""
    out = np.zeros((int(n), int(n)), np.int64)
    i, j, v = (np.asarray(a, np.int64) for a in (lca_i, lca_j, lca))
    out[i, j] = v
    out[j, i] = v
    return out
