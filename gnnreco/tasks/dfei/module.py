"""``DFEIModule``: the Lightning wiring of the DFEI networks, loss, tree building and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnreco.tasks.base import GraphTaskModule
from gnnreco.tasks.dfei.data import dense_lca, pair_labels
from gnnreco.tasks.dfei.loss import dfei_loss
from gnnreco.tasks.dfei.metrics import DFEIMetrics, evaluate_event
from gnnreco.tasks.dfei.model import _PRUNED, DFEIChain, DFEIFused, pair_inputs

__all__ = ["DFEIModule", "split_events"]


def split_events(batch: Any, out: dict) -> list[dict]:
    """Per-event numpy views of a batched DFEI output (local node ids)."""
    ptr = batch.ptr.cpu().numpy() if hasattr(batch, "ptr") else np.array([0, batch.num_nodes])
    pair = out["pair_index"].detach().cpu().numpy()
    probs = torch.softmax(out["lca_logits"].detach().float(), 1).cpu().numpy()
    node_score = torch.sigmoid(out["node_logit"].detach().float()).cpu().numpy()
    edge_score = torch.sigmoid(out["edge_logit"].detach().float()).cpu().numpy()
    lei = batch.lca_edge_index.cpu().numpy()
    lval = batch.lca_value.cpu().numpy()
    ev_of_pair = np.searchsorted(ptr, pair[0], side="right") - 1 if pair.size else np.zeros(0, int)
    ev_of_lca = np.searchsorted(ptr, lei[0], side="right") - 1 if lei.size else np.zeros(0, int)
    res = []
    for g in range(len(ptr) - 1):
        a, b = int(ptr[g]), int(ptr[g + 1])
        m = ev_of_pair == g
        ml = ev_of_lca == g
        res.append({
            "n": b - a,
            "node_score": node_score[a:b],
            "y_node": batch.y_node[a:b].cpu().numpy(),
            "cluster": batch.cluster[a:b].cpu().numpy(),
            "true_lca": dense_lca(b - a, lei[:, ml] - a, lval[ml]),
            "pair_index": pair[:, m] - a,
            "lca_probs": probs[m],
            "edge_score": edge_score[m],
            "mode_id": int(batch.mode_id[g]) if hasattr(batch, "mode_id") else -1,
            "pid": batch.pid[a:b].cpu().numpy() if hasattr(batch, "pid") else np.zeros(b - a, np.int64),
        })
    return res


class DFEIModule(GraphTaskModule):
    """DFEI task module (sequential chain or fused network, chosen by ``net``).

    Args:
        net: :class:`~gnnreco.tasks.dfei.model.DFEIChain` or :class:`~gnnreco.tasks.dfei.model.DFEIFused`.
        beta_node, beta_edge, beta_lca: loss weights :math:`\\beta_n, \\beta_e` and of the LCA term.
        class_weights: fixed LCA class weights (default: inverse frequencies per batch).
        node_cut: working point of node selection in the metrics (default: the net's pruning cut).
        **kwargs: :class:`~gnnreco.tasks.base.GraphTaskModule` options.
    """

    def __init__(self, net: torch.nn.Module, optimizer, scheduler=None, beta_node: float = 3.0,
                 beta_edge: float = 3.0, beta_lca: float = 1.0, class_weights: list[float] | None = None,
                 node_cut: float | None = None, **kwargs: Any) -> None:
        super().__init__(net=net, optimizer=optimizer, scheduler=scheduler, **kwargs)
        self.beta = (beta_node, beta_edge, beta_lca)
        self.class_weights = list(class_weights) if class_weights is not None else None
        cut = node_cut if node_cut is not None else getattr(net, "np_cut", getattr(net, "node_cut", 0.5))
        self.node_cut = float(cut)
        self._test = DFEIMetrics(node_cut=self.node_cut)
        self._examples: list[dict] = []

    def _pair_label(self, batch: Any):
        n = int(batch.num_nodes)
        return lambda ei: pair_labels(ei, batch.lca_edge_index, batch.lca_value, n)

    def forward(self, batch: Any) -> dict:
        if not isinstance(getattr(self.net, "_orig_mod", self.net), DFEIChain | DFEIFused):  # an export
            return self._forward_tensor_only(batch)
        b = batch.batch if getattr(batch, "batch", None) is not None else torch.zeros(
            batch.num_nodes, dtype=torch.long, device=batch.x.device)
        return self.net(batch.x, b, batch.n_pv.view(-1), y_node=batch.y_node, pair_label=self._pair_label(batch))

    def _forward_tensor_only(self, batch: Any) -> dict:
        """The batched output dictionary from a tensor-only network (an export loaded by
        ``gnnreco.Reconstructor.from_export``), called once per event on :func:`pair_inputs`.

        ``pair_index`` keeps the pairs that survived node pruning (``edge_logit`` above the pruned
        value), as the eager chain does; ``lca_mask`` marks the pairs the LCA stage classified.
        """
        x = batch.x
        ptr = batch.ptr.tolist() if getattr(batch, "ptr", None) is not None else [0, int(x.shape[0])]
        n_pv = batch.n_pv.view(-1)
        pruned = torch.tensor(_PRUNED, dtype=x.dtype, device=x.device)
        nls, pis, els, lls = [], [], [], []
        for g in range(len(ptr) - 1):
            a, b = ptr[g], ptr[g + 1]
            xg = x[a:b]
            ei, ea = pair_inputs(xg)
            nl, el, ll = self.net(xg, ei, ea, n_pv[g:g + 1].to(x.dtype).view(1, 1))
            keep = el > -8.0 + 1e-6
            nls.append(nl.view(-1))
            pis.append(ei[:, keep] + a)
            els.append(el[keep])
            lls.append(ll[keep])
        lca = torch.cat(lls) if lls else x.new_zeros(0, 4)
        pair = torch.cat(pis, 1) if pis else torch.zeros(2, 0, dtype=torch.long, device=x.device)
        edge = torch.cat(els) if els else x.new_zeros(0)
        return {"node_logit": torch.cat(nls) if nls else x.new_zeros(0), "pair_index": pair, "edge_logit": edge,
                "lca_logits": lca, "lca_mask": (lca != pruned).any(1), "aux_node": [],
                "aux_edge": [(edge, pair)] if edge.numel() else []}

    def compute_loss(self, batch: Any, out: dict) -> tuple[Tensor, dict[str, Tensor]]:
        bn, be, bl = self.beta
        return dfei_loss(out, batch.y_node, self._pair_label(batch), beta_node=bn, beta_edge=be, beta_lca=bl,
                         class_weights=self.class_weights)

    def compute_metrics(self, batch: Any, out: dict, stage: str) -> dict[str, float]:
        m = DFEIMetrics(node_cut=self.node_cut)
        for ev in split_events(batch, out):
            rec = evaluate_event(ev["node_score"], ev["y_node"], ev["cluster"], ev["true_lca"], ev["pair_index"],
                                 ev["lca_probs"], self.node_cut)
            m.add(rec, ev["mode_id"])
            if stage == "test":
                self._test.add(rec, ev["mode_id"])
                self._test.node_scores.append(ev["node_score"])
                self._test.node_labels.append(ev["y_node"])
                lab = ev["true_lca"][ev["pair_index"][0], ev["pair_index"][1]] > 0 if ev["pair_index"].size else \
                    np.zeros(0, bool)
                self._test.edge_scores.append(ev["edge_score"])
                self._test.edge_labels.append(lab)
                if len(self._examples) < 4 and rec["categories"]:
                    self._examples.append({**ev, "parent": rec["parent"]})
        s = m.summary()
        keys = ("signal_efficiency", "background_rejection", "perfect_event", "perfect_lca", "chain_perfect")
        return {k: float(s[k]) for k in keys if k in s}

    def on_test_epoch_start(self) -> None:
        self._test = DFEIMetrics(node_cut=self.node_cut)
        self._examples = []

    def test_summary(self) -> dict[str, float]:
        """Summary of every test event seen so far (see :class:`~gnnreco.tasks.dfei.metrics.DFEIMetrics`)."""
        return self._test.summary()

    def evaluation_plots(self, out_dir: str | Path) -> list[Path]:
        from gnnreco.tasks.dfei.plots import make_plots

        return make_plots(self._test, self._examples, out_dir)

    # ------------------------------------------------------------------ export
    #: inputs of the tensor-only ``net(x, edge_index, edge_attr, u)`` (one event; see
    #: :class:`~gnnreco.tasks.dfei.model.DFEIChain`)
    export_input_names: tuple[str, ...] = ("x", "edge_index", "edge_attr", "u")
    #: outputs, aligned with the inputs: ``node_logit [N]``, ``edge_logit [E]``, ``lca_logits [E, 4]``
    export_output_names: tuple[str, ...] = ("node_logit", "edge_logit", "lca_logits")
    #: formats: both (the forward uses nonzero/index selection and scatter, no data-dependent Python)
    export_formats: tuple[str, ...] = ("torchscript", "onnx")
    #: ONNX dynamic axes: the number of particles N and of pairs E vary, ``u`` is ``[1, 1]``
    export_dynamic_axes: dict[str, dict[int, str]] = {
        "x": {0: "n_particles"}, "edge_index": {1: "n_pairs"}, "edge_attr": {0: "n_pairs"},
        "node_logit": {0: "n_particles"}, "edge_logit": {0: "n_pairs"}, "lca_logits": {0: "n_pairs"},
    }

    def export_inputs(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Example inputs of the tensor-only network forward, built from the **first event** of ``batch``.

        Returns ``(x [N, 13] float32, edge_index [2, N(N-1)] long, edge_attr [E, 4] float32,
        u [1, 1] float32)``: the stored node features, every ordered pair of particles sorted by source
        then target (:func:`gnnreco.graph.fully_connected_graph`), the DFEI pair features
        (:func:`gnnreco.tasks.dfei.data.edge_features`) and the number of reconstructed PVs. A C++ caller
        builds the same four tensors per event; the exported program does node pruning, edge pruning
        and LCA classification inside and returns logits for every input pair.
        """
        from gnnreco.graph import fully_connected_graph
        from gnnreco.tasks.dfei.data import edge_features

        ptr = getattr(batch, "ptr", None)
        n = int(ptr[1]) if ptr is not None and ptr.numel() > 1 else int(batch.x.shape[0])
        x = batch.x[:n].float()
        ei = fully_connected_graph(num_nodes=n, device=x.device)
        u = batch.n_pv.view(-1)[:1].float().view(1, 1)
        return x, ei, edge_features(x, ei), u

    def export_manifest(self) -> dict[str, Any]:
        """Task metadata of the export manifest beyond gnnreco.export's standard DFEI sections."""
        return {"task": "dfei", "design": type(self.net).__name__}

    def reconstruct(self, batch: Any, out: dict) -> list[dict]:
        from gnnreco.tasks.dfei.reco import reconstruct_decay

        recs = []
        for ev in split_events(batch, out):
            from gnnreco.tasks.dfei.metrics import predicted_lca

            pred = predicted_lca(ev["n"], ev["pair_index"], ev["lca_probs"])
            parent = reconstruct_decay(pred)
            iu, ju = np.nonzero(np.triu(pred, 1))
            recs.append({"node_score": ev["node_score"].astype(np.float32), "parent": parent,
                         "lca_i": iu, "lca_j": ju, "lca": pred[iu, ju]})
        return recs
