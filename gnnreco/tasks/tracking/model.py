"""Interaction-Network edge classifiers for GNN tracking.

One configurable network, :class:`InteractionEdgeClassifier`, covers the family used by the
tracking pipelines (reference §1.3); three subclasses only change the defaults:

* :class:`InteractionGNN` (acorn): node and edge encoders, ``n_graph_iters`` interaction steps with
  weights shared across steps (``recurrent=True``), multi-aggregation sum/mean/max/std of incoming and
  outgoing messages, no residual, LayerNorm + SiLU; optional undirected doubling with the two
  direction scores averaged.
* :class:`InteractionGNN2` (acorn / L2IT, GNN4ITk CTD2023): directed, incoming and outgoing sums kept
  separate, non-shared steps, the initial encodings concatenated to the input of every step
  (``skip="concat"``), BatchNorm + ReLU, edge features in the edge encoder.
* :class:`ResIN` (Exa.TrkX residual IGNN / gnn_tracking ResIN): residual updates
  :math:`x \\leftarrow \\sqrt{\\alpha}\\,x + \\sqrt{1-\\alpha}\\,\\Delta x` (plain sum when
  ``residual_alpha`` is None) and a classifier reading every step's edge embedding.

The encoders are

.. math::
    x^0_i = \\phi_x(f_i), \\qquad e^0_{ji} = \\phi_e([x^0_j, x^0_i, a_{ji}])

with node features :math:`f_i` and optional edge features :math:`a_{ji}`; after :math:`L` steps of
:class:`gnnreco.nn.interaction_network.InteractionBlock` the edge logit is
:math:`s_{ji} = \\phi_s([x^L_j, x^L_i, e^L_{ji}])` (or :math:`[x^L_j, x^L_i, e^0_{ji}, \\ldots, e^L_{ji}]`).

The ``forward`` is tensor-only, ``forward(x[N,F], edge_index[2,E], edge_attr[E,Fe] | None) -> logits[E]``,
so the model can be traced to TorchScript and exported to ONNX (see :mod:`gnnreco.tasks.tracking.export`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from gnnreco.nn.interaction_network import InteractionBlock, _exporting, _mlp, edge_apply

__all__ = ["InteractionEdgeClassifier", "InteractionGNN", "InteractionGNN2", "ResIN"]

_SKIPS = ("none", "residual", "concat")


class InteractionEdgeClassifier(nn.Module):
    """Configurable Interaction-Network edge classifier (see the module docstring).

    Args:
        node_features: input node features :math:`F` (e.g. 3 for r, φ, z).
        edge_features: input edge features :math:`F_e` (0: the edge encoder reads only the node pair).
        hidden: embedding size :math:`h` of nodes and edges.
        n_graph_iters: interaction steps :math:`L`.
        n_layers: Linear layers of every interaction MLP.
        encoder_layers: Linear layers of the node and edge encoders.
        output_layers: Linear layers of the edge classifier head.
        recurrent: share one interaction block across all steps.
        aggregations: reductions concatenated in every node update.
        directions: ``both`` (separate in/out aggregates), ``in``, ``out`` or ``undirected``.
        skip: ``none``, ``residual`` (add the update) or ``concat`` (concatenate the initial encodings
            to every step's input).
        residual_alpha: α of the weighted residual; None for a plain sum.
        concat_edge_history: the classifier reads :math:`[e^0, \\ldots, e^L]` instead of :math:`e^L`.
        undirected: double every edge with its reverse and average the two logits.
        activation: hidden activation.
        norm: ``layer``, ``batch`` or ``none``.
        checkpointing: gradient checkpointing of every interaction step during training.
        n_chunks: evaluate edge MLPs in this many edge chunks at inference (memory guard).
        input_norm: standardise the node and edge input features with running statistics
            (``BatchNorm1d`` without affine parameters); the scaled coordinates (r/1000, φ/π, z/1000)
            and especially the edge differences span very different ranges.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, edge_attr ``[E, F_e]`` or None → logits ``[E]``.
    """

    def __init__(
        self,
        node_features: int = 3,
        edge_features: int = 0,
        hidden: int = 64,
        n_graph_iters: int = 4,
        n_layers: int = 2,
        encoder_layers: int = 2,
        output_layers: int = 3,
        recurrent: bool = True,
        aggregations: Sequence[str] = ("sum", "mean", "max", "std"),
        directions: str = "both",
        skip: str = "none",
        residual_alpha: float | None = None,
        concat_edge_history: bool = False,
        undirected: bool = False,
        activation: str = "silu",
        norm: str = "layer",
        checkpointing: bool = False,
        n_chunks: int = 1,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        if skip not in _SKIPS:
            raise ValueError(f"skip must be one of {_SKIPS}, got {skip!r}")
        if n_graph_iters < 0:
            raise ValueError(f"n_graph_iters must be >= 0, got {n_graph_iters}")
        if node_features < 1:
            raise ValueError(f"node_features must be >= 1, got {node_features}")
        if residual_alpha is not None and not 0.0 <= residual_alpha <= 1.0:
            raise ValueError(f"residual_alpha must be in [0, 1] or None, got {residual_alpha}")
        self.node_features = int(node_features)
        self.edge_features = int(edge_features)
        self.hidden = int(hidden)
        self.n_graph_iters = int(n_graph_iters)
        self.skip = skip
        self.residual_alpha = residual_alpha
        self.concat_edge_history = bool(concat_edge_history)
        self.undirected = bool(undirected)
        self.checkpointing = bool(checkpointing)
        self.recurrent = bool(recurrent)
        h = self.hidden
        self.node_norm = nn.BatchNorm1d(node_features, affine=False) if input_norm else nn.Identity()
        self.edge_norm = (nn.BatchNorm1d(edge_features, affine=False) if input_norm and edge_features > 0
                          else nn.Identity())
        self.node_encoder = _mlp(node_features, h, h, encoder_layers, activation, norm, True)
        self.edge_encoder = _mlp(2 * h + edge_features, h, h, encoder_layers, activation, norm, True)
        extra = h if skip == "concat" else 0

        def block() -> InteractionBlock:
            return InteractionBlock(h, h, h, aggregations=aggregations, directions=directions, n_layers=n_layers,
                                    activation=activation, norm=norm, node_extra=extra, edge_extra=extra)

        n_blocks = (1 if n_graph_iters > 0 else 0) if recurrent else n_graph_iters
        self.blocks = nn.ModuleList([block() for _ in range(n_blocks)])
        head_in = 2 * h + (h * (n_graph_iters + 1) if concat_edge_history else h)
        self.classifier = _mlp(head_in, h, 1, output_layers, activation, norm, False)
        self.n_chunks = 1
        self.set_chunks(n_chunks)

    # ------------------------------------------------------------------ configuration
    def set_chunks(self, n_chunks: int) -> None:
        """Evaluate the edge MLPs in ``n_chunks`` edge chunks at inference (no effect in training)."""
        if n_chunks < 1:
            raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
        self.n_chunks = int(n_chunks)
        for b in self.blocks:
            b.edge_chunks = self.n_chunks

    # ------------------------------------------------------------------ forward
    def _step(self, i: int, x: Tensor, e: Tensor, edge_index: Tensor, x0: Tensor, e0: Tensor) -> tuple[Tensor, Tensor]:
        blk = self.blocks[0 if self.recurrent else i]
        if self.skip == "concat":
            xin, ein = torch.cat([x, x0], -1), torch.cat([e, e0], -1)
        else:
            xin, ein = x, e
        if self.checkpointing and self.training and torch.is_grad_enabled() and not _exporting():
            x_new, e_new = checkpoint(blk, xin, edge_index, ein, use_reentrant=False)
        else:
            x_new, e_new = blk(xin, edge_index, ein)
        if self.skip == "residual":
            if self.residual_alpha is None:
                x_new, e_new = x + x_new, e + e_new
            else:
                a = self.residual_alpha
                x_new = a ** 0.5 * x + (1 - a) ** 0.5 * x_new
                e_new = a ** 0.5 * e + (1 - a) ** 0.5 * e_new
        return x_new, e_new

    def _norm(self, norm: nn.Module, t: Tensor) -> Tensor:
        # BatchNorm needs > 1 row in training; a graph with a single node/edge passes through unnormalised
        # in training mode (running statistics are used in eval mode).
        if self.training and t.shape[0] < 2 and not isinstance(norm, nn.Identity):
            return t
        return norm(t)

    def _directed_logits(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        chunks = self.n_chunks
        x = self.node_encoder(self._norm(self.node_norm, x))
        if self.edge_features > 0:
            if edge_attr is None:
                raise ValueError(f"this model was built with edge_features={self.edge_features}, "
                                 "so forward() needs edge_attr of shape [E, edge_features]")
            e = edge_apply(self.edge_encoder, x, edge_index, self._norm(self.edge_norm, edge_attr), chunks)
        else:
            e = edge_apply(self.edge_encoder, x, edge_index, None, chunks)
        x0, e0 = x, e
        history = [e]
        for i in range(self.n_graph_iters):
            x, e = self._step(i, x, e, edge_index, x0, e0)
            if self.concat_edge_history:
                history.append(e)
        e_out = torch.cat(history, -1) if self.concat_edge_history else e
        return edge_apply(self.classifier, x, edge_index, e_out, chunks).squeeze(-1)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        """Edge logits :math:`s_{ji}` (apply a sigmoid for scores)."""
        if x.dim() != 2 or x.shape[1] != self.node_features:
            raise ValueError(f"x must have shape [N, {self.node_features}], got {tuple(x.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        if edge_attr is not None and self.edge_features == 0:
            edge_attr = None
        if self.undirected:
            n_e = edge_index.shape[1]
            ei = torch.cat([edge_index, edge_index.flip(0)], 1)
            ea = None if edge_attr is None else torch.cat([edge_attr, edge_attr], 0)
            logits = self._directed_logits(x, ei, ea)
            return 0.5 * (logits[:n_e] + logits[n_e:])
        return self._directed_logits(x, edge_index, edge_attr)

    @torch.no_grad()
    def predict_chunked(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                        n_chunks: int = 8) -> Tensor:
        """Inference with edge MLPs evaluated in ``n_chunks`` chunks (same result as ``forward``)."""
        old = self.n_chunks
        self.set_chunks(n_chunks)
        try:
            return self.forward(x, edge_index, edge_attr)
        finally:
            self.set_chunks(old)


class InteractionGNN(InteractionEdgeClassifier):
    """acorn's ``InteractionGNN``: shared weights, multi-aggregation in both directions, no residual."""

    def __init__(self, node_features: int = 3, edge_features: int = 0, hidden: int = 128, n_graph_iters: int = 8,
                 n_layers: int = 2, encoder_layers: int = 2, output_layers: int = 3, recurrent: bool = True,
                 aggregations: Sequence[str] = ("sum", "mean", "max", "std"), directions: str = "both",
                 undirected: bool = False, activation: str = "silu", norm: str = "layer",
                 checkpointing: bool = False, n_chunks: int = 1, input_norm: bool = True) -> None:
        super().__init__(node_features, edge_features, hidden, n_graph_iters, n_layers, encoder_layers,
                         output_layers, recurrent, aggregations, directions, skip="none", residual_alpha=None,
                         concat_edge_history=False, undirected=undirected, activation=activation, norm=norm,
                         checkpointing=checkpointing, n_chunks=n_chunks, input_norm=input_norm)


class InteractionGNN2(InteractionEdgeClassifier):
    """acorn's ``InteractionGNN2`` (L2IT): directed, separate in/out sums, non-shared steps, concat skips."""

    def __init__(self, node_features: int = 3, edge_features: int = 5, hidden: int = 128, n_graph_iters: int = 8,
                 n_layers: int = 3, encoder_layers: int = 3, output_layers: int = 3, recurrent: bool = False,
                 aggregations: Sequence[str] = ("sum",), directions: str = "both", undirected: bool = False,
                 activation: str = "relu", norm: str = "batch", checkpointing: bool = False,
                 n_chunks: int = 1, input_norm: bool = True) -> None:
        super().__init__(node_features, edge_features, hidden, n_graph_iters, n_layers, encoder_layers,
                         output_layers, recurrent, aggregations, directions, skip="concat", residual_alpha=None,
                         concat_edge_history=False, undirected=undirected, activation=activation, norm=norm,
                         checkpointing=checkpointing, n_chunks=n_chunks, input_norm=input_norm)


class ResIN(InteractionEdgeClassifier):
    """Residual interaction network (Exa.TrkX ``InteractionGNN`` / gnn_tracking ``ResIN``)."""

    def __init__(self, node_features: int = 3, edge_features: int = 0, hidden: int = 64, n_graph_iters: int = 6,
                 n_layers: int = 2, encoder_layers: int = 2, output_layers: int = 3, recurrent: bool = False,
                 aggregations: Sequence[str] = ("sum", "max"), directions: str = "in",
                 residual_alpha: float | None = 0.5, concat_edge_history: bool = True, undirected: bool = False,
                 activation: str = "relu", norm: str = "layer", checkpointing: bool = False,
                 n_chunks: int = 1, input_norm: bool = True) -> None:
        super().__init__(node_features, edge_features, hidden, n_graph_iters, n_layers, encoder_layers,
                         output_layers, recurrent, aggregations, directions, skip="residual",
                         residual_alpha=residual_alpha, concat_edge_history=concat_edge_history,
                         undirected=undirected, activation=activation, norm=norm, checkpointing=checkpointing,
                         n_chunks=n_chunks, input_norm=input_norm)
