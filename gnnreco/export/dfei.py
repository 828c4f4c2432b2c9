"""Manifest sections of a DFEI export (the network's own tensor-only forward is what gets traced).

The DFEI networks (:class:`~gnnreco.tasks.dfei.model.DFEIChain`, ``DFEIFused``) have a tensor-only,
single-event forward ``net(x, edge_index, edge_attr, u) -> (node_logit, edge_logit, lca_logits)`` and
:class:`~gnnreco.tasks.dfei.module.DFEIModule` declares its export hooks, so no wrapper is needed here;
this module adds the standard manifest sections (``features``, ``normalisation``, ``thresholds``,
``postprocessing``: docs/export.md) that a caller needs around that call.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dfei_manifest_sections"]


def dfei_manifest_sections(module: Any) -> dict[str, Any]:
    """Standard manifest sections of a DFEI task module (``module.net`` a DFEI chain or fused network)."""
    from gnnreco.sim.lhcb import NODE_FEATURES
    from gnnreco.tasks.dfei.data import EDGE_FEATURES
    from gnnreco.tasks.dfei.model import DFEIChain

    net = module.net
    if isinstance(net, DFEIChain):
        cuts: dict[str, Any] = {"node_pruning_cut": float(net.np_cut), "edge_pruning_cut": float(net.ep_cut)}
    else:
        cuts = {"node_pruning_cut": float(net.node_cut), "edge_pruning_cut": float(net.edge_cut),
                "prune": str(net.prune), "k_edges": int(net.k_edges)}
    node_cut = getattr(module, "node_cut", None)
    return {
        "task": "dfei",
        "features": {"x": list(NODE_FEATURES), "edge_attr": list(EDGE_FEATURES), "u": ["n_pv"],
                     "edge_index": "every ordered pair (i, j), i != j, of the event's particles, sorted by i "
                                   "then j (gnnreco.graph.fully_connected_graph)"},
        "normalisation": {
            "x": "none: raw LHCb units (mm, GeV/c); the network derives its inputs itself "
                 "(gnnreco.tasks.dfei.model.node_inputs)",
            "edge_attr": "gnnreco.tasks.dfei.data.edge_features(x, edge_index): opening angle (rad), d_perpP "
                         "(mm), dz of the associated PVs (mm), same-PV flag",
            "u": "number of reconstructed PVs as float32, shape [1, 1]",
        },
        "thresholds": {**cuts, "node_cut": None if node_cut is None else float(node_cut),
                       "k_nearest": int(net.k_nearest),
                       "max_dz": None if net.max_dz is None else float(net.max_dz),
                       "max_theta": None if net.max_theta is None else float(net.max_theta)},
        "postprocessing": {
            "node_score": "sigmoid(node_logit); a particle is selected when node_score > node_cut",
            "lca": "softmax(lca_logits) over LCA classes 0..3 of every input pair; pruned pairs carry "
                   "edge_logit -8 and class-0 logits (8, -8, -8, -8)",
            "tree": "gnnreco.tasks.dfei.metrics.predicted_lca, then gnnreco.tasks.dfei.reco.reconstruct_decay "
                    "(parent links)",
        },
    }
