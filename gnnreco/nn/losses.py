"""Weighted binary losses shared by the edge classifiers of every task.

The weighting follows acorn's convention: every edge carries a truth label :math:`y_e\\in\\{0,1\\}` and a
weight :math:`w_e`. An edge enters the *positive* term when :math:`y_e = 1 \\wedge w_e > 0` and the
*negative* term when :math:`y_e = 0 \\wedge w_e \\neq 0` (or when :math:`w_e < 0`, which marks an edge to
be pushed down whatever its label). Edges with :math:`y_e = 1, w_e = 0` (true but not a target) are
"neither rewarded nor punished".

With :math:`\\ell_e` the per-edge loss (BCE or focal), the total is

.. math::
    L = \\frac{\\sum_{e\\in P} |w_e|\\,\\ell_e(1) + \\sum_{e\\in N} |w_e|\\,\\ell_e(0)}{|P| + |N|}
    \\quad\\text{("proportional")}, \\qquad
    L = \\tfrac12\\Big(\\frac{\\sum_{P} |w_e|\\ell_e(1)}{|P|} + \\frac{\\sum_{N} |w_e|\\ell_e(0)}{|N|}\\Big)
    \\quad\\text{("equal")}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "weight_masks",
    "weighted_bce_loss",
    "focal_loss_with_logits",
    "weighted_focal_loss",
    "WeightedBCELoss",
    "FocalLoss",
]

_NORMS = ("proportional", "equal")


def weight_masks(y: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Positive and negative masks and absolute weights of the declarative weighting.

    Args:
        y: edge truth :math:`y_e` (bool, int or float; > 0.5 is true), shape ``[E]``.
        weight: per-edge weights :math:`w_e`; ``None`` means 1 for every edge.

    Returns:
        ``(pos, neg, |w|)``: boolean masks :math:`P`, :math:`N` and the float weights.
    """
    truth = y > 0.5 if y.is_floating_point() else y.bool()
    if weight is None:
        weight = torch.ones(truth.shape, dtype=torch.float32, device=truth.device)
    if weight.shape != truth.shape:
        raise ValueError(f"'weight' must have the shape of 'y' {tuple(truth.shape)}, got {tuple(weight.shape)}")
    pos = truth & (weight > 0)
    neg = (~truth & (weight != 0)) | (weight < 0)
    return pos, neg, weight.abs().float()


def _reduce(per_pos: Tensor, per_neg: Tensor, pos: Tensor, neg: Tensor, w: Tensor, norm: str) -> Tensor:
    if norm not in _NORMS:
        raise ValueError(f"loss normalisation must be one of {_NORMS}, got {norm!r}")
    s_pos = (per_pos * w * pos).sum()
    s_neg = (per_neg * w * neg).sum()
    n_pos = pos.sum()
    n_neg = neg.sum()
    if norm == "proportional":
        return (s_pos + s_neg) / (n_pos + n_neg).clamp_min(1)
    terms = []
    if bool(n_pos > 0):
        terms.append(s_pos / n_pos)
    if bool(n_neg > 0):
        terms.append(s_neg / n_neg)
    if not terms:
        return s_pos * 0.0
    return torch.stack(terms).mean()


def weighted_bce_loss(logits: Tensor, y: Tensor, weight: Tensor | None = None,
                      norm: str = "proportional", pos_weight: float = 1.0) -> Tensor:
    """Weighted binary cross-entropy on logits with the positive/negative masks above.

    Args:
        logits: edge logits :math:`s_e`, shape ``[E]``.
        y: truth :math:`y_e`, shape ``[E]``.
        weight: declarative weights :math:`w_e` (``None``: all 1).
        norm: ``"proportional"`` (divide by :math:`|P|+|N|`) or ``"equal"`` (mean of the class means).
        pos_weight: extra factor on the positive term (the old Exa.TrkX ``pos_weight``).

    Returns:
        Scalar loss; 0 (with a gradient path) when no edge is masked in.
    """
    pos, neg, w = weight_masks(y, weight)
    logits = logits.reshape(pos.shape).float()
    l_pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none") * pos_weight
    l_neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return _reduce(l_pos, l_neg, pos, neg, w, norm)


def focal_loss_with_logits(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    r"""Element-wise binary focal loss (Lin et al. 2017).

    .. math::
        \mathrm{FL}(p_t) = -\alpha_t (1 - p_t)^\gamma \log p_t,\quad
        p_t = \begin{cases} p & t = 1\\ 1-p & t = 0\end{cases},\quad
        \alpha_t = \begin{cases} \alpha & t=1 \\ 1-\alpha & t=0\end{cases}

    ``alpha < 0`` disables the class balancing (:math:`\alpha_t = 1`).
    """
    target = target.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss


def weighted_focal_loss(logits: Tensor, y: Tensor, weight: Tensor | None = None, norm: str = "proportional",
                        alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss with the declarative weighting (same masks and normalisation as :func:`weighted_bce_loss`)."""
    pos, neg, w = weight_masks(y, weight)
    logits = logits.reshape(pos.shape).float()
    l_pos = focal_loss_with_logits(logits, torch.ones_like(logits), alpha, gamma)
    l_neg = focal_loss_with_logits(logits, torch.zeros_like(logits), alpha, gamma)
    return _reduce(l_pos, l_neg, pos, neg, w, norm)


class WeightedBCELoss(torch.nn.Module):
    """Module form of :func:`weighted_bce_loss` (configurable from Hydra)."""

    def __init__(self, norm: str = "proportional", pos_weight: float = 1.0) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"loss.norm must be one of {_NORMS}, got {norm!r}")
        self.norm, self.pos_weight = norm, float(pos_weight)

    def forward(self, logits: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return weighted_bce_loss(logits, y, weight, self.norm, self.pos_weight)


class FocalLoss(torch.nn.Module):
    """Module form of :func:`weighted_focal_loss`."""

    def __init__(self, norm: str = "proportional", alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"loss.norm must be one of {_NORMS}, got {norm!r}")
        self.norm, self.alpha, self.gamma = norm, float(alpha), float(gamma)

    def forward(self, logits: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return weighted_focal_loss(logits, y, weight, self.norm, self.alpha, self.gamma)
