"""Lightning module of the MLPF task: padded batches, MLPF loss, particle/jet/MET evaluation vs the baseline."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnreco.tasks.base import GraphTaskModule, gather_records
from gnnreco.tasks.pflow.baseline import rule_based_pf
from gnnreco.tasks.pflow.data import split_gen
from gnnreco.tasks.pflow.loss import mlpf_loss
from gnnreco.tasks.pflow.metrics import DEFAULT_PT_BINS, PFEvaluator, particle_metrics

__all__ = ["PFlowModule", "to_padded", "candidates_from_outputs", "export_mlpf_onnx"]

OUTPUT_NAMES = ("binary", "pid", "charge", "reg", "p4")


def to_padded(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """PyG batch (``x``, ``y``, ``batch``) → padded ``X [B, N, 12]``, ``mask [B, N]``, ``Y [B, N, 7]``."""
    from torch_geometric.utils import to_dense_batch

    index = getattr(batch, "batch", None)
    if index is None:
        index = torch.zeros(batch.x.shape[0], dtype=torch.long, device=batch.x.device)
    X, mask = to_dense_batch(batch.x, index)
    Y = to_dense_batch(batch.y, index)[0] if getattr(batch, "y", None) is not None else None
    return X, mask, Y


@torch.no_grad()
def candidates_from_outputs(out: tuple[Tensor, ...] | Mapping[str, Tensor]) -> Tensor:
    """Network outputs → candidate rows ``[class, q, p_T, η, sinφ, cosφ, E]`` (class 0 where 'none')."""
    if isinstance(out, Mapping):
        out = tuple(out[k] for k in OUTPUT_NAMES)
    binary, pid, charge, _, p4 = out
    is_part = binary.argmax(-1) == 1
    cls = torch.where(is_part, pid[..., 1:].argmax(-1) + 1, torch.zeros_like(is_part, dtype=torch.long))
    q = (charge.argmax(-1) - 1).to(p4.dtype)
    q = torch.where(cls == 1, torch.where(q == 0, torch.sign(q) + 1, q), q)  # charged hadrons carry charge
    q = torch.where((cls == 2) | (cls == 3) | (cls == 0), torch.zeros_like(q), q)
    norm = torch.sqrt(p4[..., 2] ** 2 + p4[..., 3] ** 2).clamp(min=1e-6)
    rows = torch.stack([cls.to(p4.dtype), q, p4[..., 0], p4[..., 1], p4[..., 2] / norm, p4[..., 3] / norm,
                        p4[..., 4]], -1)
    return rows * (cls > 0).unsqueeze(-1).to(p4.dtype)


def _plain(d: Mapping | None) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(d, DictConfig):
        return dict(OmegaConf.to_container(d, resolve=True))
    return {k: (list(v) if isinstance(v, tuple | list) or type(v).__name__ == "ListConfig" else v)
            for k, v in dict(d or {}).items()}


class PFlowModule(GraphTaskModule):
    """MLPF task module.

    Args:
        net: an :class:`~gnnreco.tasks.pflow.model.MLPFNet`.
        loss: keyword arguments of :func:`~gnnreco.tasks.pflow.loss.mlpf_loss`.
        baseline: keyword arguments of :func:`~gnnreco.tasks.pflow.baseline.rule_based_pf`.
        pt_bins: jet p_T bin edges of the evaluation.
        jet_pt_min: minimum generator-jet p_T.
        **kwargs: :class:`~gnnreco.tasks.base.GraphTaskModule` arguments (optimizer, scheduler, ...).
    """

    export_input_names = ("X", "mask")
    export_output_names = OUTPUT_NAMES
    #: padded inputs vary along the batch *and* the element axis (used by ``gnnreco export``)
    export_dynamic_axes = {n: {0: "B", 1: "N"} for n in ("X", "mask", *OUTPUT_NAMES)}

    def __init__(self, net: nn.Module, loss: Mapping | None = None, baseline: Mapping | None = None,
                 pt_bins: tuple[float, ...] = DEFAULT_PT_BINS, jet_pt_min: float = 5.0, **kwargs: Any) -> None:
        # plain Python containers (not DictConfig) so checkpoints load with torch.load(weights_only=True);
        # reassigned before super().__init__ because save_hyperparameters reads these locals
        loss = _plain(loss)
        baseline = _plain(baseline)
        pt_bins = tuple(float(b) for b in pt_bins)
        super().__init__(net=net, **kwargs)
        self.loss_kwargs = dict(loss or {})
        self.baseline_kwargs = dict(baseline or {})
        self.pt_bins = tuple(float(b) for b in pt_bins)
        self.jet_pt_min = float(jet_pt_min)
        self.evaluator: PFEvaluator | None = None
        self.test_summary: dict[str, float] = {}

    # ------------------------------------------------------------------ core
    def _net_inputs(self, batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """Padded ``X``, ``mask``, ``Y``; with the link features appended when the network reads them."""
        X, mask, Y = to_padded(batch)
        if int(getattr(self.net, "extra_features", 0)) and X.shape[-1] == 12:
            from gnnreco.tasks.pflow.links import LINK_FEATURES, with_link_features

            Xa = X.new_zeros((*X.shape[:2], 12 + len(LINK_FEATURES)))
            for i in range(X.shape[0]):
                m = mask[i]
                Xa[i, m] = torch.from_numpy(with_link_features(X[i, m].cpu().numpy())).to(X)
            X = Xa
        return X, mask, Y

    def forward(self, batch: Any) -> dict[str, Tensor]:
        X, mask, Y = self._net_inputs(batch)
        outs = self.net(X, mask)
        out = dict(zip(OUTPUT_NAMES, outs))
        out.update({"X": X, "mask": mask})
        if Y is not None:
            out["Y"] = Y
        return out

    def compute_loss(self, batch: Any, out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return mlpf_loss(tuple(out[k] for k in OUTPUT_NAMES), out["X"], out["Y"], out["mask"], **self.loss_kwargs)

    def compute_metrics(self, batch: Any, out: dict[str, Tensor], stage: str) -> dict[str, float | Tensor]:
        mask = out["mask"]
        cand = candidates_from_outputs(out)
        true = out["Y"][..., 0][mask].long().cpu().numpy()
        pred = cand[..., 0][mask].long().cpu().numpy()
        metrics: dict[str, float | Tensor] = {"class_acc": float((true == pred).mean())}
        metrics.update(particle_metrics(true, pred))
        if stage == "test":
            self._accumulate(batch, out, cand)
        return metrics

    # ------------------------------------------------------------------ test-time evaluation vs baseline
    def _accumulate(self, batch: Any, out: dict[str, Tensor], cand: Tensor) -> None:
        if self.evaluator is None:
            self.evaluator = PFEvaluator(self.pt_bins, jet_pt_min=self.jet_pt_min)
        mask = out["mask"].cpu()
        X, Y, C = out["X"].cpu().numpy(), out["Y"].cpu().numpy(), cand.cpu().numpy()
        gens = split_gen(batch.gen_p4.cpu().numpy(), batch.n_gen.cpu().numpy())
        for i in range(X.shape[0]):
            m = mask[i].numpy()
            self.evaluator.add(Y[i][m], gens[i], {"mlpf": C[i][m], "baseline": rule_based_pf(X[i][m][:, :12], **self.baseline_kwargs)})

    def on_test_epoch_start(self) -> None:
        self.evaluator = PFEvaluator(self.pt_bins, jet_pt_min=self.jet_pt_min)

    def on_test_epoch_end(self) -> None:
        if self.evaluator is not None and self._distributed():  # jets and MET pooled over every rank's events
            parts = gather_records([self.evaluator])
            self.evaluator = parts[0]
            for other in parts[1:]:
                self.evaluator.merge(other)
        if self.evaluator is None or self.evaluator.n_events == 0:
            return
        flat = self.evaluator.flat_metrics()
        self.test_summary = flat
        for k, v in flat.items():
            if v == v and ("jet_30_100" in k or "met_" in k or k.endswith("jet_matched_frac")):
                self.log(f"test/{k}", float(v), sync_dist=self._distributed())

    def evaluation_plots(self, out_dir: str | Path) -> list[Path]:
        """PNG comparison plots of MLPF and the baseline from the last test run."""
        if self.evaluator is None or self.evaluator.n_events == 0:
            return []
        from gnnreco.tasks.pflow.plots import plot_all

        return plot_all(self.evaluator, Path(out_dir))

    # ------------------------------------------------------------------ inference / export
    def reconstruct(self, batch: Any, out: dict[str, Tensor]) -> list[dict[str, np.ndarray]]:
        """Per event: MLPF candidates ``[n_cand, 7]`` and the element index of each."""
        cand = candidates_from_outputs(out).cpu().numpy()
        mask = out["mask"].cpu().numpy()
        recs = []
        for i in range(cand.shape[0]):
            c = cand[i][mask[i]]
            keep = c[:, 0] > 0
            recs.append({"candidates": c[keep], "element_index": np.flatnonzero(keep)})
        return recs

    def export_inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        X, mask, _ = self._net_inputs(batch)
        return X, mask

    def export_manifest(self) -> dict:
        """Manifest sections (docs/export.md): element schema, in-network normalisation, output meaning."""
        from gnnreco.sim.delphes_like import X_FEATURES
        from gnnreco.tasks.pflow.links import LINK_FEATURES

        link = bool(int(getattr(self.net, "extra_features", 0)))
        return {
            "task": "pflow",
            "features": {"X": list(X_FEATURES) + (list(LINK_FEATURES) if link else []),
                         "mask": "true for real elements, false for padding",
                         **({"link_features": "columns 12-15 from gnnreco.tasks.pflow.links.with_link_features "
                                              "(numpy, computed from columns 0-11 before the network)"} if link else {})},
            "normalisation": {"X": "none outside the network: raw Delphes-like element rows (GeV); the network "
                                   "applies log1p to the energy-like columns per element type itself "
                                   "(gnnreco.tasks.pflow.model)"},
            "thresholds": {"particle": "argmax(binary) == 1 (no tunable cut)"},
            "postprocessing": {
                "outputs": "binary [B,N,2], pid [B,N,6], charge [B,N,3] logits; reg [B,N,5] raw regression; "
                           "p4 [B,N,5] = (pT, eta, sin phi, cos phi, E)",
                "classes": ["none", "ch.had", "n.had", "gamma", "e", "mu"],
                "candidates": "gnnreco.tasks.pflow.module.candidates_from_outputs: rows [class, q, pT, eta, "
                              "sin phi, cos phi, E] of the masked elements with class > 0",
            },
        }


def export_mlpf_onnx(net: nn.Module, path: str | Path, example: tuple[Tensor, Tensor] | None = None,
                     opset: int = 17) -> Path:
    """Export ``net.forward(X, mask)`` alone to one ONNX file with dynamic batch and element axes
    (``gnnreco export`` writes the same ONNX graph plus TorchScript and a manifest)."""
    path = Path(path)
    if example is None:
        X = torch.zeros(1, 64, 12)
        X[..., 0] = 1.0
        X[..., 1] = X[..., 5] = 1.0
        example = (X, torch.ones(1, 64, dtype=torch.bool))
    axes = PFlowModule.export_dynamic_axes
    net = net.eval()
    torch.onnx.export(net, example, str(path), input_names=["X", "mask"], output_names=list(OUTPUT_NAMES),
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path
