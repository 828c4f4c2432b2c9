"""A tiny node-regression task used to test the framework itself (not a gnnreco pipeline).

Each event is a random point cloud; the target of a node is the mean of its neighbours' first
feature. It exercises the whole framework path (generator -> processor -> store -> DataModule ->
GraphTaskModule -> Trainer) in well under a second per epoch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gnnreco.nn.mlp import MLP
from gnnreco.tasks.base import GraphTaskModule


def toy_generator(seed: int, n_min: int = 8, n_max: int = 24) -> dict:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_min, n_max + 1))
    return {"pos": rng.normal(size=(n, 3)).astype(np.float32)}


def toy_processor(raw: dict, k: int = 4, reject_small: int = 0) -> dict | None:
    pos = raw["pos"]
    n = len(pos)
    if n <= reject_small:
        return None
    d = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nbr = np.argsort(d, axis=1)[:, :k]
    src = nbr.reshape(-1)
    dst = np.repeat(np.arange(n), k)
    y = pos[nbr, 0].mean(1)
    return {"x": pos, "y": y.astype(np.float32), "edge_index": np.stack([src, dst]).astype(np.int64),
            "num_nodes": np.array([n])}


class ToyNet(nn.Module):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.enc = MLP(3, hidden, hidden, n_layers=2)
        self.dec = MLP(2 * hidden, hidden, 1, n_layers=2)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        # scatter_add_ (not index_add_): the legacy ONNX exporter turns index_add_ into a ScatterND
        # that overwrites duplicate indices instead of summing them.
        h = self.enc(x)
        dst = edge_index[1].unsqueeze(1)
        agg = torch.zeros_like(h).scatter_add_(0, dst.expand(-1, h.shape[1]), h[edge_index[0]])
        deg = torch.zeros(x.shape[0], 1, dtype=h.dtype).scatter_add_(0, dst, torch.ones(edge_index.shape[1], 1, dtype=h.dtype))
        return self.dec(torch.cat([h, agg / deg.clamp(min=1)], 1)).squeeze(-1)


class ToyModule(GraphTaskModule):
    export_input_names = ("x", "edge_index")

    def forward(self, batch):
        return {"pred": self.net(batch.x, batch.edge_index)}

    def compute_loss(self, batch, out):
        loss = nn.functional.mse_loss(out["pred"], batch.y)
        return loss, {"mse": loss.detach()}

    def compute_metrics(self, batch, out, stage):
        return {"mae": (out["pred"] - batch.y).abs().mean()}

    def export_inputs(self, batch):
        return (batch.x, batch.edge_index)

    def reconstruct(self, batch, out):
        recs = []
        for i in range(batch.num_graphs):
            m = batch.batch == i
            recs.append({"pred": out["pred"][m]})
        return recs
