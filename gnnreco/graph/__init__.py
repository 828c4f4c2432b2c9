"""gnnreco.graph: neighbour search and graph builders shared by every task.

* :mod:`~gnnreco.graph.neighbors`: exact ``knn``/``radius`` (PyG / torch_cluster conventions),
  ``edge_sq_distance``.
"""

from .neighbors import edge_sq_distance, knn, knn_graph, last_truncation, radius, radius_graph

__all__ = [
    "knn",
    "knn_graph",
    "radius",
    "radius_graph",
    "edge_sq_distance",
    "last_truncation",
]
