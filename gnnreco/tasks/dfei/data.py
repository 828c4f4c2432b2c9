r"""DFEI event processing: raw events → stored graphs, pair features and pair labels.

A processed event stores only per-node arrays and the *positive* LCA pairs; the fully connected graph,
its edge features and the labels of any edge are rebuilt on the fly (an event of 150 particles has
22,350 directed pairs, of which a few dozen are positive, so storing the dense graph would cost about
1 MB per event for nothing):

=================  ==========  ========================================================================
key                shape       meaning
=================  ==========  ========================================================================
``x``              [N, 13]     node features (:data:`gnnreco.sim.lhcb.NODE_FEATURES`)
``y_node``         [N]         1 if the particle has a partner with LCA > 0 (DFEI node label)
``cluster``        [N]         b-chain id within the event, −1 if not from a b hadron
``pid``            [N]         PDG id (truth only, never a model input)
``b_pid``          [N]         PDG id of the chain's root b hadron (0: none)
``pv_assoc``       [N]         min-IP reconstructed PV of the node (−1: none)
``pv_truth``       [N]         reconstructed PV of the node's own collision (−1: none)
``lca_edge_index`` [2, P]      positive pairs :math:`i < j` (batched by PyG like an edge index)
``lca_value``      [P]         their LCA class 1..3
``n_pv``           [1]         number of reconstructed PVs (global feature)
``mode_id``        [1]         exclusive-mode id, −1 = inclusive
``num_nodes``      [1]         N
=================  ==========  ========================================================================

Edge features (DFEI): opening angle :math:`\theta`, the transverse-momentum distance
:math:`d_{\perp P}` (distance of the two origin points transverse to the summed momentum; the DFEI
definition is not public, this is the documented reading), :math:`\Delta z` of the associated PVs and
the same-PV flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnreco.tasks.dfei.reco import check_lca_matrix

__all__ = [
    "EDGE_FEATURES",
    "process_event",
    "edge_features",
    "pair_labels",
    "node_labels_from_lca",
    "dense_lca",
]

EDGE_FEATURES = ("theta", "dperpP", "dz", "same_pv")


def node_labels_from_lca(lca: np.ndarray) -> np.ndarray:
    """DFEI node label: the particle has at least one partner with LCA > 0."""
    return (np.asarray(lca) > 0).any(1).astype(np.int64)


def process_event(raw: Mapping[str, Any], max_lca: int = 3) -> dict[str, np.ndarray]:
    """Turn a generated (or read) event into the stored DFEI format (see module docstring).

    Events with no particles are kept (they flow through to empty outputs).

    Args:
        raw: dict with ``x`` ``[N, >=10]`` and ``lca`` ``[N, N]``; optional ``pid``, ``cluster``,
            ``pv``, ``pv_ip_index``, ``pv_true_index``, ``mode_id``.
        max_lca: largest LCA class.

    Raises:
        ValueError: naming the key when shapes disagree or labels are out of range.
    """
    if "x" not in raw or "lca" not in raw:
        raise ValueError(f"DFEI event needs keys 'x' and 'lca', got {sorted(raw)}")
    x = np.asarray(raw["x"], dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 10:
        raise ValueError(f"DFEI event key 'x': expected [N, >=10] node features, got shape {x.shape}")
    n = x.shape[0]
    if x.shape[1] < 13:  # no true-PV columns: repeat the min-IP PV
        x = np.concatenate([x[:, :10], x[:, 6:9]], 1)
    lca = check_lca_matrix(np.asarray(raw["lca"]).reshape(n, n) if np.asarray(raw["lca"]).size == n * n
                           else np.asarray(raw["lca"]), max_value=max_lca, name="lca")
    if lca.shape[0] != n:
        raise ValueError(f"DFEI event key 'lca': expected [{n}, {n}] for {n} nodes, got {lca.shape}")
    iu, ju = np.nonzero(np.triu(lca, 1))
    pv = np.asarray(raw.get("pv", np.zeros((0, 3))))

    def get(key: str, default: int) -> np.ndarray:
        v = raw.get(key)
        return np.full(n, default, np.int64) if v is None else np.asarray(v, dtype=np.int64).reshape(n)

    if "n_pv" in raw:
        n_pv = int(np.asarray(raw["n_pv"]).reshape(-1)[0])
    elif "pv" in raw:
        n_pv = len(pv)
    else:
        n_pv = len(np.unique(x[:, 6:9], axis=0))
    return {
        "x": x[:, :13],
        "y_node": node_labels_from_lca(lca),
        "cluster": get("cluster", -1),
        "pid": get("pid", 0),
        "b_pid": get("b_pid", 0),
        "pv_assoc": get("pv_ip_index", -1),
        "pv_truth": get("pv_true_index", -1),
        "lca_edge_index": np.stack([iu, ju]).astype(np.int64),
        "lca_value": lca[iu, ju].astype(np.int64),
        "n_pv": np.array([n_pv], dtype=np.int64),
        "mode_id": np.asarray(raw.get("mode_id", [-1]), dtype=np.int64).reshape(1),
        "num_nodes": np.array([n], dtype=np.int64),
    }


def edge_features(x: Tensor, edge_index: Tensor) -> Tensor:
    r"""DFEI pair features of the edges ``(i, j)``.

    .. math::
        \theta = \angle(\vec p_i, \vec p_j),\quad
        d_{\perp P} = |\vec d - (\vec d\cdot\hat P)\hat P|,\ \vec d = \vec O_i - \vec O_j,\ \vec P = \vec p_i + \vec p_j,
        \quad \Delta z = z^{PV}_i - z^{PV}_j,\quad s = [PV_i = PV_j]

    Shapes:
        x ``[N, >=9]`` (origin, momentum, min-IP PV), edge_index ``[2, E]`` → ``[E, 4]``.
    """
    s, t = edge_index[0], edge_index[1]
    o, p, pv = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    pi, pj = p[s], p[t]
    cross = torch.linalg.vector_norm(torch.cross(pi, pj, dim=1), dim=1)
    theta = torch.atan2(cross, (pi * pj).sum(1))
    d = o[s] - o[t]
    big = pi + pj
    phat = big / torch.linalg.vector_norm(big, dim=1, keepdim=True).clamp_min(1e-9)
    dperp = torch.linalg.vector_norm(d - (d * phat).sum(1, keepdim=True) * phat, dim=1)
    dz = pv[s, 2] - pv[t, 2]
    same = (pv[s] - pv[t]).abs().amax(1) < 1e-6
    return torch.stack([theta, dperp, dz, same.to(x.dtype)], 1)


def pair_labels(edge_index: Tensor, lca_edge_index: Tensor, lca_value: Tensor, num_nodes: int) -> Tensor:
    """LCA class of arbitrary edges, looked up in the stored positive pairs (0 when absent).

    Shapes:
        edge_index ``[2, E]``, lca_edge_index ``[2, P]`` (any orientation), lca_value ``[P]`` → ``[E]``.
    """
    if edge_index.numel() == 0:
        return torch.zeros(edge_index.shape[1], dtype=torch.long, device=edge_index.device)
    if lca_edge_index.numel() == 0:
        return torch.zeros(edge_index.shape[1], dtype=torch.long, device=edge_index.device)
    n = int(num_nodes)
    a = torch.minimum(lca_edge_index[0], lca_edge_index[1]) * n + torch.maximum(lca_edge_index[0], lca_edge_index[1])
    order = torch.argsort(a)
    keys = a[order]
    vals = lca_value[order].long()
    q = torch.minimum(edge_index[0], edge_index[1]) * n + torch.maximum(edge_index[0], edge_index[1])
    pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    hit = keys[pos] == q
    return torch.where(hit, vals[pos], torch.zeros_like(q))


def dense_lca(n: int, lca_edge_index: np.ndarray, lca_value: np.ndarray) -> np.ndarray:
    """Dense symmetric ``[n, n]`` LCA matrix from positive pairs."""
    out = np.zeros((n, n), dtype=np.int64)
    if len(lca_value):
        i, j = np.asarray(lca_edge_index)
        out[i, j] = lca_value
        out[j, i] = lca_value
    return out


def generate_and_process(seed: int, **generator_options: Any) -> dict[str, np.ndarray]:
    """Generator + processor in one call (for scripts and benchmarks)."""
    from gnnreco.sim.lhcb import generate_event

    return process_event(generate_event(seed, **generator_options))
