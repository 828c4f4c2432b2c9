r"""DFEI loss: class-weighted cross-entropy of the LCA classes plus weighted BCE of the pruning heads.

.. math::
    L = \mathrm{CE}_w(\hat A, A) + \beta_n \sum_b \mathrm{BCE}(\hat w^{n}_b, y^{n})
        + \beta_e \sum_b \mathrm{BCE}(\hat w^{e}_b, y^{e}),
    \qquad w_c = \frac{N}{4 N_c}

with the class weights :math:`w_c` the inverse class frequencies of the pairs the LCA head saw (or
fixed ``class_weights``), :math:`y^n` the DFEI node label and :math:`y^e = [A > 0]`. The BCE terms use
:func:`gnnreco.nn.losses.weighted_bce_loss` with ``norm="equal"`` (mean of the positive and negative
means), which plays the role of the port's ``pos_weight = N / (2 N_{pos})``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gnnreco.nn.losses import weighted_bce_loss

__all__ = ["lca_class_weights", "dfei_loss"]


def lca_class_weights(y: Tensor, n_classes: int = 4, max_weight: float = 100.0) -> Tensor:
    """Inverse-frequency weights :math:`w_c = N / (C N_c)` (classes absent from ``y`` get ``max_weight``)."""
    if y.numel() and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"LCA labels must be in [0, {n_classes - 1}], got range [{int(y.min())}, {int(y.max())}]")
    cnt = torch.bincount(y, minlength=n_classes).float()
    w = y.numel() / (n_classes * cnt.clamp_min(1.0))
    return w.clamp(max=max_weight)


def dfei_loss(out: dict, y_node: Tensor, pair_label: Callable[[Tensor], Tensor], beta_node: float = 3.0,
              beta_edge: float = 3.0, beta_lca: float = 1.0, class_weights: Sequence[float] | None = None,
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """Total DFEI loss and its parts.

    Args:
        out: network output (``node_logit``, ``pair_index``, ``edge_logit``, ``lca_logits``, ``lca_mask``,
            ``aux_node``, ``aux_edge``; see :mod:`gnnreco.tasks.dfei.model`).
        y_node: node labels ``[N]``.
        pair_label: ``f(pair_index [2, E]) -> [E]`` truth LCA classes.
        beta_node, beta_edge, beta_lca: :math:`\\beta_n`, :math:`\\beta_e` and the LCA weight.
        class_weights: fixed :math:`w_c` (default: inverse frequencies per batch).
    """
    node_logit = out["node_logit"]
    zero = node_logit.sum() * 0.0
    l_node = weighted_bce_loss(node_logit, y_node, norm="equal") if node_logit.numel() else zero
    for nl, _ in out.get("aux_node", [])[:-1]:
        l_node = l_node + weighted_bce_loss(nl, y_node, norm="equal")
    l_edge = zero
    for el, gi in out.get("aux_edge", []):
        if el.numel():
            l_edge = l_edge + weighted_bce_loss(el, (pair_label(gi) > 0).long(), norm="equal")
    l_lca = zero
    mask = out["lca_mask"]
    if bool(mask.any()):
        y = pair_label(out["pair_index"][:, mask])
        logits = out["lca_logits"][mask]
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
        else:
            w = lca_class_weights(y, logits.shape[1]).to(logits.dtype)
        l_lca = F.cross_entropy(logits, y, weight=w)
    total = beta_lca * l_lca + beta_node * l_node + beta_edge * l_edge
    return total, {"loss_lca": l_lca.detach(), "loss_node": l_node.detach(), "loss_edge": l_edge.detach()}
