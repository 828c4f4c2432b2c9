"""gnnreco.nn: layers shared by every task (MLP, Interaction Network blocks, GravNet, EdgeConv, losses)."""

from gnnreco.nn.edge_conv import DynamicEdgeConv
from gnnreco.nn.gravnet_conv import GravNetConv
from gnnreco.nn.interaction_network import InteractionBlock, aggregate, edge_apply, multi_aggregate
from gnnreco.nn.losses import (
    FocalLoss,
    WeightedBCELoss,
    focal_loss_with_logits,
    weight_masks,
    weighted_bce_loss,
    weighted_focal_loss,
)
from gnnreco.nn.mlp import MLP, make_activation, make_norm

__all__ = [
    "MLP",
    "make_activation",
    "make_norm",
    "InteractionBlock",
    "aggregate",
    "multi_aggregate",
    "edge_apply",
    "GravNetConv",
    "DynamicEdgeConv",
    "WeightedBCELoss",
    "FocalLoss",
    "weight_masks",
    "weighted_bce_loss",
    "weighted_focal_loss",
    "focal_loss_with_logits",
]
