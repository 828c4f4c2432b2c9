"""Edge-classification loss of the tracking task: the shared weighted BCE / focal losses by name."""

from __future__ import annotations

from torch import nn

from gnnreco.nn.losses import FocalLoss, WeightedBCELoss

__all__ = ["make_edge_loss"]


def make_edge_loss(name: str = "bce", norm: str = "proportional", pos_weight: float = 1.0,
                   alpha: float = 0.25, gamma: float = 2.0) -> nn.Module:
    """Build the edge loss: ``bce`` (weighted BCE, :class:`gnnreco.nn.losses.WeightedBCELoss`) or
    ``focal`` (:class:`gnnreco.nn.losses.FocalLoss`), both with the declarative per-edge weights and
    ``proportional`` / ``equal`` normalisation."""
    if name == "bce":
        return WeightedBCELoss(norm=norm, pos_weight=pos_weight)
    if name == "focal":
        return FocalLoss(norm=norm, alpha=alpha, gamma=gamma)
    raise ValueError(f"model.loss.name must be 'bce' or 'focal', got {name!r}")
