"""gnnreco.graph: neighbour search and graph builders shared by every task.

* :mod:`~gnnreco.graph.neighbors`: exact ``knn``/``radius`` (PyG / torch_cluster conventions)
  and the differentiable ``edge_sq_distance``.
* :mod:`~gnnreco.graph.tracking`: layer-pair cuts, module map, metric-learning graphs.
* :mod:`~gnnreco.graph.dense`: fully connected (DFEI) and LSH-binned (MLPF) graphs.
* :mod:`~gnnreco.graph.truth`: truth graphs, edge labels, target weights, construction metrics.

See ``docs/graph.md``.
"""

from .dense import LSHBinning, fully_connected_graph, lsh_bins, unbin
from .neighbors import (
    Truncation,
    edge_sq_distance,
    knn,
    knn_graph,
    knn_index,
    last_truncation,
    radius,
    radius_graph,
)
from .pyg_patch import patch_pyg
from .tracking import (
    IN_PAPER_PRESETS,
    LAYER_PAIR_PRESETS,
    LayerPairBuilder,
    ModuleMap,
    adjacent_layer_pairs,
    geometric_layer_pairs,
    layer_pair_graph,
    metric_learning_graph,
    pair_features,
    phi_slope_for_pt,
)
from .truth import (
    construction_metrics,
    edge_labels,
    edge_target_weights,
    edge_truth_labels,
    target_hit_mask,
    truth_graph,
)

__all__ = [
    "knn",
    "knn_graph",
    "knn_index",
    "radius",
    "radius_graph",
    "edge_sq_distance",
    "last_truncation",
    "Truncation",
    "LayerPairBuilder",
    "layer_pair_graph",
    "adjacent_layer_pairs",
    "pair_features",
    "LAYER_PAIR_PRESETS",
    "IN_PAPER_PRESETS",
    "geometric_layer_pairs",
    "phi_slope_for_pt",
    "ModuleMap",
    "metric_learning_graph",
    "truth_graph",
    "edge_labels",
    "edge_truth_labels",
    "target_hit_mask",
    "edge_target_weights",
    "construction_metrics",
    "patch_pyg",
    "fully_connected_graph",
    "lsh_bins",
    "LSHBinning",
    "unbin",
]
