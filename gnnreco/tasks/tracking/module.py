"""``TrackingModule``: Lightning wiring of the GNN tracking pipeline.

The network scores the edges of each event's graph; the loss is the weighted BCE (or focal) loss with
the processor's declarative weights; validation logs edge efficiency/purity/AUC at the edge cut and a
cheap connected-components track efficiency; test additionally caches per-event results for the
evaluation plots and the chosen track builder; :meth:`reconstruct` returns track candidates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnreco.tasks.base import GraphTaskModule, gather_records
from gnnreco.tasks.tracking.loss import make_edge_loss
from gnnreco.tasks.tracking.metrics import edge_metrics, track_metrics, trackml_score
from gnnreco.tasks.tracking.reco import build_tracks, candidates_from_labels
from gnnreco.utils.config import to_plain

log = logging.getLogger(__name__)

__all__ = ["TrackingModule"]

_FILTER_DEFAULTS: dict[str, Any] = {"hidden": 32, "n_layers": 3, "efficiency": 0.995, "epochs": 12, "neg_ratio": 20.0,
                                    "lr": 3e-3, "batch_edges": 65536, "max_events": 40, "budget_s": None, "seed": 0}


def _filter_options(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``model.edge_filter`` with defaults filled in; unknown keys are an error that lists the known ones."""
    cfg = to_plain(cfg)
    if cfg is None or cfg is False:
        return None
    if cfg is True:
        cfg = {}
    unknown = sorted(set(cfg) - set(_FILTER_DEFAULTS))
    if unknown:
        raise ValueError(f"model.edge_filter: unknown option(s) {unknown}; known: {sorted(_FILTER_DEFAULTS)}")
    out = {**_FILTER_DEFAULTS, **cfg}
    if not 0.0 < float(out["efficiency"]) <= 1.0:
        raise ValueError(f"model.edge_filter.efficiency must be in (0, 1], got {out['efficiency']}")
    return out


def _event_arrays(data: Any) -> dict[str, np.ndarray]:
    """NumPy view of a stored event (PyG ``Data``) with the keys the filter trainer reads."""
    out = {}
    for k in ("x", "edge_index", "edge_attr", "y", "edge_target"):
        v = getattr(data, k, None)
        if v is None:
            if k == "edge_attr":
                continue
            raise KeyError(f"model.edge_filter: the stored events have no '{k}' (process them with "
                           "gnnreco.tasks.tracking.data.process_event)")
        out[k] = v.detach().cpu().numpy()
    return out




class TrackingModule(GraphTaskModule):
    """GNN edge classification + track building.

    Args:
        net: an edge classifier with ``forward(x, edge_index, edge_attr) -> logits``
            (:mod:`gnnreco.tasks.tracking.model`).
        optimizer, scheduler, ...: see :class:`gnnreco.tasks.base.GraphTaskModule` (``**base``).
        loss: ``{name: bce|focal, norm: proportional|equal, pos_weight, alpha, gamma}``.
        edge_cut: score cut of the edge metrics and of the ``cc``/``junction`` builders.
        track_builder: ``{method: cc|junction|walk, **options}`` used in test and :meth:`reconstruct`.
        val_builder: builder of the (cheap) validation track metrics; None disables them in val.
        min_track_hits: minimum hits of a track and of a particle in the efficiency denominator.
        eff_pt_min: pT threshold (GeV) of the efficiency denominator.
        eff_eta_max: |η| bound of the efficiency denominator.
        eff_targets_only: restrict the denominator to the processor's target particles.
        definitions: matching definitions evaluated in test (val uses only double majority).
        max_training_graph_size: graphs (batches) with more edges are skipped or subsampled in training.
        oversize: ``skip`` or ``subsample``.
        n_chunks: edge chunks at inference (memory guard; same result).
        features / edge_feature_names / node_scales: recorded in the export manifest.
        edge_filter: optional filter stage (Exa.TrkX/acorn ``Filter``; :mod:`gnnreco.tasks.tracking.filter`):
            ``{hidden, n_layers, efficiency, epochs, neg_ratio, lr, batch_edges, max_events, budget_s, seed}``.
            ``net`` is wrapped in a :class:`~gnnreco.tasks.tracking.filter.FilteredEdgeClassifier`; at the
            start of ``fit`` the filter MLP is trained on up to ``max_events`` training events and its cut set
            for ``efficiency`` of the target edges on the validation events, then frozen, and the GNN trains
            (loss on kept edges only) and predicts on the filtered graph. The export is the composite network.
    """

    export_output_names = ("logits",)

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        edge_cut: float = 0.5,
        track_builder: Mapping[str, Any] | None = None,
        val_builder: Mapping[str, Any] | None = None,
        min_track_hits: int = 3,
        eff_pt_min: float = 1.0,
        eff_eta_max: float = 4.0,
        eff_targets_only: bool = True,
        definitions: Sequence[str] = ("double_majority", "atlas", "one_way", "perfect", "lhc"),
        max_training_graph_size: int | None = None,
        oversize: str = "skip",
        n_chunks: int = 1,
        features: Sequence[str] | None = None,
        edge_feature_names: Sequence[str] | None = None,
        node_scales: Mapping[str, float] | None = None,
        edge_filter: Mapping[str, Any] | None = None,
        **base: Any,
    ) -> None:
        filter_options = _filter_options(edge_filter)
        if filter_options is not None:
            from gnnreco.tasks.tracking.filter import EdgeFilter, FilteredEdgeClassifier

            net = FilteredEdgeClassifier(net, EdgeFilter(
                int(net.node_features), int(getattr(net, "edge_features", 0)),
                hidden=filter_options["hidden"], n_layers=filter_options["n_layers"]))
        super().__init__(net=net, optimizer=optimizer, scheduler=scheduler, **base)
        self.filter_options = filter_options
        self.filter_summary: dict[str, Any] | None = None
        if oversize not in ("skip", "subsample"):
            raise ValueError(f"model.oversize must be 'skip' or 'subsample', got {oversize!r}")
        self.loss_fn = make_edge_loss(**(to_plain(loss) or {}))
        self.edge_cut = float(edge_cut)
        self.track_builder = dict(to_plain(track_builder) or {"method": "cc", "score_cut": edge_cut})
        vb = to_plain(val_builder)
        self.val_builder = None if vb is None else dict(vb)
        self.min_track_hits = int(min_track_hits)
        self.eff_pt_min = float(eff_pt_min)
        self.eff_eta_max = float(eff_eta_max)
        self.eff_targets_only = bool(eff_targets_only)
        self.definitions = tuple(definitions)
        self.max_training_graph_size = max_training_graph_size
        self.oversize = oversize
        self.n_chunks = int(n_chunks)
        self.features = list(features) if features is not None else None
        self.edge_feature_names = list(edge_feature_names) if edge_feature_names is not None else None
        self.node_scales = dict(to_plain(node_scales) or {})
        self.oversize_count = 0
        self._test_cache: list[dict[str, np.ndarray]] = []
        self._gen = torch.Generator().manual_seed(0)

    # ------------------------------------------------------------------ network
    def _edge_attr(self, batch: Any) -> Tensor | None:
        return getattr(batch, "edge_attr", None)

    def _filtered_net(self) -> Any:
        """The :class:`FilteredEdgeClassifier` (unwrapped from ``torch.compile``), or None."""
        if self.filter_options is None:
            return None
        return getattr(self.net, "_orig_mod", self.net)

    def forward(self, batch: Any) -> dict[str, Tensor]:
        x, ei, ea = batch.x, batch.edge_index, self._edge_attr(batch)
        if ei.shape[1] == 0:
            return {"logits": x.new_zeros(0)}
        chunks = self.n_chunks if not self.training else 1
        fnet = self._filtered_net()
        if fnet is not None:
            logits, keep = fnet.split(x, ei, ea, n_chunks=chunks)
            return {"logits": logits, "keep": keep}
        if chunks > 1 and hasattr(self.net, "predict_chunked"):
            return {"logits": self.net.predict_chunked(x, ei, ea, n_chunks=chunks)}
        return {"logits": self.net(x, ei, ea)}

    def compute_loss(self, batch: Any, out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits, y, w = out["logits"], batch.y, getattr(batch, "weight", None)
        keep = out.get("keep")
        if keep is not None:  # the loss sees only the edges the filter passed to the GNN
            logits, y = logits[keep], y[keep]
            w = w[keep] if w is not None else None
        if logits.numel() == 0:
            zero = sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)
            return zero, {}
        return self.loss_fn(logits, y, w), {}

    # ------------------------------------------------------------------ filter stage
    def on_fit_start(self) -> None:
        """Train the edge filter (once: a resumed or fine-tuned model keeps its fitted filter)."""
        fnet = self._filtered_net()
        if fnet is None or bool(fnet.fitted):
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "dataset"):
            raise RuntimeError("model.edge_filter needs an EventDataModule (trainer.fit(model, datamodule)) to "
                               "train the filter on its training events")
        self.fit_edge_filter(dm.dataset("train"), dm.dataset("val"))

    def fit_edge_filter(self, train: Sequence[Any], val: Sequence[Any]) -> dict[str, Any]:
        """Train the filter on (up to ``max_events`` of) ``train`` and set its cut on ``val``; returns the summary.

        Every DDP rank runs the same deterministic fit on the same events (same seed), so the ranks agree.
        """
        from gnnreco.tasks.tracking.filter import fit_filter

        fnet = self._filtered_net()
        if fnet is None:
            raise RuntimeError("this TrackingModule has no edge filter (model.edge_filter is null)")
        o = self.filter_options
        n_max = o["max_events"]
        tr = [_event_arrays(train[i]) for i in range(min(len(train), n_max) if n_max else len(train))]
        tr = [ev for ev in tr if ev["edge_index"].shape[1] > 0]
        va = [_event_arrays(val[i]) for i in range(min(len(val), n_max) if n_max else len(val))]
        if not tr:
            raise ValueError("model.edge_filter: every training event has zero edges; nothing to train the filter on")
        fnet.edge_filter.to("cpu")  # the filter trains on the stored events' CPU arrays; the GNN stays put
        res = fit_filter(fnet, tr, va, efficiency=o["efficiency"], epochs=o["epochs"], neg_ratio=o["neg_ratio"],
                         lr=o["lr"], batch_edges=o["batch_edges"], budget_s=o["budget_s"], seed=o["seed"])
        fnet.edge_filter.to(self.device)
        log.info("edge filter: %d epochs on %d events (%.0f s CPU); cut %.3f keeps %.1f%% of the validation edges "
                 "at %.2f%% target-edge efficiency", res["epochs"], len(tr), res["cpu_s"], res["cut"],
                 100 * res["val_kept_fraction"], 100 * res["val_target_efficiency"])
        self.filter_summary = res
        return res

    # ------------------------------------------------------------------ memory guard
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        limit = self.max_training_graph_size
        if limit is not None and batch.edge_index.shape[1] > limit:
            self.oversize_count += 1
            if self.oversize == "skip":
                log.warning("training batch %d has %d edges > max_training_graph_size=%d: skipped "
                            "(%d so far)", batch_idx, batch.edge_index.shape[1], limit, self.oversize_count)
                return None
            log.warning("training batch %d has %d edges > max_training_graph_size=%d: subsampled "
                        "(%d so far)", batch_idx, batch.edge_index.shape[1], limit, self.oversize_count)
            batch = self._subsample_edges(batch, limit)
        return super().training_step(batch, batch_idx)

    def _subsample_edges(self, batch: Any, limit: int) -> Any:
        n_e = batch.edge_index.shape[1]
        keep = torch.randperm(n_e, generator=self._gen)[:limit].sort().values.to(batch.edge_index.device)
        b = batch.clone()
        for key in ("edge_index",):
            b[key] = batch[key][:, keep]
        for key in ("edge_attr", "y", "weight", "edge_target"):
            if getattr(batch, key, None) is not None and batch[key].shape[0] == n_e:
                b[key] = batch[key][keep]
        return b

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log("train/oversize_graphs", float(self.oversize_count), on_epoch=True)

    # ------------------------------------------------------------------ per-event helpers
    def _events(self, batch: Any, out: dict[str, Tensor]) -> list[dict[str, np.ndarray]]:
        """Split a batch into per-event NumPy dicts (hits, edges, particles)."""
        n_graphs = int(getattr(batch, "num_graphs", 1))
        ptr = batch.ptr.cpu().numpy() if getattr(batch, "ptr", None) is not None else np.array([0, batch.num_nodes])
        ei = batch.edge_index.cpu().numpy()
        scores = torch.sigmoid(out["logits"].detach().float()).cpu().numpy()
        node_graph = np.repeat(np.arange(n_graphs), np.diff(ptr))
        edge_graph = node_graph[ei[0]] if ei.shape[1] else np.zeros(0, np.int64)
        n_part = batch.num_particles.cpu().numpy().reshape(-1) if getattr(batch, "num_particles", None) is not None \
            else np.zeros(n_graphs, np.int64)
        pptr = np.concatenate([[0], np.cumsum(n_part)])
        events = []
        for g in range(n_graphs):
            a, b = int(ptr[g]), int(ptr[g + 1])
            em = edge_graph == g
            ev = {"num_nodes": b - a, "edge_index": ei[:, em] - a, "scores": scores[em]}
            for key in ("y", "weight", "edge_target"):
                if getattr(batch, key, None) is not None:
                    ev[key] = batch[key].cpu().numpy()[em]
            for key in ("hit_id", "hit_particle_id", "hit_pt", "hit_eta", "hit_target", "hit_weight", "hit_coords"):
                if getattr(batch, key, None) is not None:
                    ev[key] = batch[key].cpu().numpy()[a:b]
            for key in ("particle_id", "particle_pt", "particle_eta", "particle_nhits", "particle_is_target"):
                if getattr(batch, key, None) is not None:
                    ev[key] = batch[key].cpu().numpy()[pptr[g]:pptr[g + 1]]
            events.append(ev)
        return events

    def _build(self, ev: Mapping[str, Any], builder: Mapping[str, Any]) -> np.ndarray:
        opts = dict(builder)
        method = opts.pop("method", "cc")
        opts.setdefault("min_hits", self.min_track_hits)
        if method in ("cc", "junction"):
            opts.setdefault("score_cut", self.edge_cut)
        return build_tracks(method, ev["num_nodes"], ev["edge_index"], ev["scores"], coords=ev.get("hit_coords"),
                            **opts)

    def _denominator(self, ev: Mapping[str, Any]) -> np.ndarray:
        den = (ev["particle_pt"] > self.eff_pt_min) & (np.abs(ev["particle_eta"]) < self.eff_eta_max)
        if self.eff_targets_only and "particle_is_target" in ev:
            den &= ev["particle_is_target"].astype(bool)
        return den

    def _event_track_metrics(self, ev: Mapping[str, Any], labels: np.ndarray, definitions: Sequence[str],
                             details: bool = False) -> dict[str, Any]:
        return track_metrics(labels, ev["hit_particle_id"], ev["particle_id"], ev["particle_nhits"],
                             denominator=self._denominator(ev), definitions=definitions,
                             min_hits=self.min_track_hits, return_details=details)

    # ------------------------------------------------------------------ metrics
    def compute_metrics(self, batch: Any, out: dict[str, Tensor], stage: str) -> dict[str, float | Tensor]:
        scores = torch.sigmoid(out["logits"].detach().float())
        if scores.numel() == 0:
            return {}
        y = batch.y
        target = getattr(batch, "edge_target", None)
        m = edge_metrics(scores, y, target, getattr(batch, "weight", None), cut=self.edge_cut, auc=True)
        res: dict[str, float | Tensor] = {f"edge_{k}": v for k, v in m.items() if k != "n_edges"}
        if getattr(batch, "particle_id", None) is None:
            return res
        builder = self.val_builder if stage == "val" else self.track_builder
        if builder is None:
            return res
        defs = ("double_majority",) if stage == "val" else self.definitions
        vals: dict[str, list[float]] = {}
        for ev in self._events(batch, out):
            tm = self._event_track_metrics(ev, self._build(ev, builder), defs)
            for k, v in tm.items():
                if not (isinstance(v, float) and math.isnan(v)):
                    vals.setdefault(k, []).append(v)
        for k, v in vals.items():
            if k.endswith(("efficiency", "fake_rate", "duplicate_rate")):
                res[f"track_{k}"] = float(np.mean(v))
        return res

    # ------------------------------------------------------------------ test caching and plots
    def on_test_epoch_start(self) -> None:
        self._test_cache = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        out = super()._eval_step(batch, "test")
        for ev in self._events(batch, out):
            labels = self._build(ev, self.track_builder)
            tm = self._event_track_metrics(ev, labels, self.definitions, details=True)
            det = tm.pop("details")
            dm = det.get("double_majority", det[self.definitions[0]])
            major = det["track_major_row"]
            rec = {
                "scores": ev["scores"].astype(np.float32),
                "y": ev.get("y", np.zeros(0, bool)).astype(bool),
                "edge_target": ev.get("edge_target", np.zeros(0, bool)).astype(bool),
                "particle_pt": ev["particle_pt"], "particle_eta": ev["particle_eta"],
                "particle_den": det["denominator"], "particle_reco": dm["particle_reconstructed"],
                "track_matched": dm["track_matched"],
                "track_eta": np.where(major >= 0, ev["particle_eta"][np.clip(major, 0, None)], np.nan)
                if ev["particle_eta"].size else np.full(major.size, np.nan),
                "metrics": tm,
            }
            if "hit_weight" in ev and "hit_id" in ev:
                rec["trackml_score"] = trackml_score(ev["hit_id"], ev["hit_particle_id"], ev["hit_weight"], labels)
            self._test_cache.append(rec)

    def on_test_epoch_end(self) -> None:
        # under DDP every rank pools the events of all ranks, so the totals describe the whole test split
        self._test_cache = gather_records(self._test_cache)
        if not self._test_cache:
            return
        summary = self.test_summary()
        for k, v in summary.items():
            if not math.isnan(v):
                self.log(f"test/total_{k}", v, sync_dist=self._distributed())

    def test_summary(self) -> dict[str, float]:
        """Event-pooled results of the cached test events (counts summed over events)."""
        c = self._test_cache
        if not c:
            return {}
        den = np.concatenate([r["particle_den"] for r in c])
        reco = np.concatenate([r["particle_reco"] for r in c])
        matched = np.concatenate([r["track_matched"] for r in c])
        scores = np.concatenate([r["scores"] for r in c])
        y = np.concatenate([r["y"] for r in c])
        tgt = np.concatenate([r["edge_target"] for r in c])
        em = edge_metrics(scores, y, tgt, cut=self.edge_cut, auc=False)
        out = {
            "track_efficiency_dm": float(reco[den].mean()) if den.any() else float("nan"),
            "track_fake_rate_dm": float(1 - matched.mean()) if matched.size else float("nan"),
            "edge_efficiency": em["efficiency"],
            "edge_purity": em["purity"],
        }
        s = [r["trackml_score"] for r in c if "trackml_score" in r and not math.isnan(r["trackml_score"])]
        if s:
            out["trackml_score"] = float(np.mean(s))
        return out

    def evaluation_plots(self, out_dir: str | Path) -> list[Path]:
        """Write the PNG plots of the cached test results (see :mod:`gnnreco.tasks.tracking.plots`)."""
        from gnnreco.tasks.tracking.plots import make_plots

        if not self._test_cache:
            log.warning("evaluation_plots: no cached test results (run the test loop first)")
            return []
        return make_plots(self._test_cache, Path(out_dir), edge_cut=self.edge_cut)

    # ------------------------------------------------------------------ inference
    def reconstruct(self, batch: Any, out: dict[str, Tensor]) -> list[dict[str, Any]]:
        """Per event: ``track_labels`` per hit (−1 unassigned), ``hit_id``, ``tracks`` (hit-id lists),
        ``edge_scores`` and ``edge_index``."""
        records = []
        for ev in self._events(batch, out):
            labels = self._build(ev, self.track_builder)
            hid = ev.get("hit_id", np.arange(ev["num_nodes"]))
            records.append({
                "hit_id": hid.astype(np.int64),
                "track_labels": labels.astype(np.int64),
                "tracks": [t.astype(np.int64) for t in candidates_from_labels(labels, hid)],
                "edge_index": ev["edge_index"].astype(np.int64),
                "edge_scores": ev["scores"].astype(np.float32),
            })
        return records

    # ------------------------------------------------------------------ export
    def _filter_manifest(self) -> dict[str, Any]:
        fnet = self._filtered_net()
        if fnet is None:
            return {}
        return {"edge_filter": {"logit_cut": float(fnet.cut), "fitted": bool(fnet.fitted),
                                "target_efficiency": float(self.filter_options["efficiency"]),
                                "dropped_edge_logit": fnet.fill_logit}}

    def _uses_edge_attr(self) -> bool:
        return int(getattr(self.net, "edge_features", 0)) > 0

    @property
    def export_input_names(self) -> tuple[str, ...]:
        """Names of the exported network's inputs (``edge_attr`` only when the network reads it)."""
        return ("x", "edge_index", "edge_attr") if self._uses_edge_attr() else ("x", "edge_index")

    def export_inputs(self, batch: Any) -> tuple[Tensor, ...]:
        """Example inputs of the tensor-only ``net.forward`` for tracing (``gnnreco export``)."""
        if self._uses_edge_attr():
            return batch.x, batch.edge_index, batch.edge_attr
        return batch.x, batch.edge_index

    @property
    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Hits ``N`` and edges ``E`` vary (``edge_index`` along its last axis)."""
        axes = {"x": {0: "N"}, "edge_index": {1: "E"}, "logits": {0: "E"}}
        if self._uses_edge_attr():
            axes["edge_attr"] = {0: "E"}
        return axes

    def export_manifest(self) -> dict[str, Any]:
        """Manifest sections (docs/export.md): feature order and scales, edge cut, track builder."""
        from gnnreco.tasks.tracking.data import NODE_SCALES

        features = self.features or []
        features_spec: dict[str, Any] = {"x": list(features)}
        norm: dict[str, Any] = {"x": {f: {"divide_by": float(self.node_scales.get(f, NODE_SCALES.get(f, 1.0)))}
                                      for f in features}}
        if self._uses_edge_attr():
            features_spec["edge_attr"] = list(self.edge_feature_names or [])
            norm["edge_attr"] = ("computed from the scaled node columns r, phi, z, eta of the edge's two hits "
                                 "(source s, target d): dr = r_d - r_s, dphi = wrap(phi_d - phi_s) into [-1, 1), "
                                 "dz, deta, phislope = dphi / dr (0 where |dr| < 1e-9, clipped to +-10), "
                                 "rphislope = (r_d + r_s) / 2 * phislope (gnnreco.tasks.tracking.data.edge_features)")
        features_spec["edge_index"] = ("[2, E] int64 (source, target) pairs of the hit graph, built by the "
                                       "graph builder of config.data (module map, layer pairs or metric learning)")
        return {
            "task": "tracking",
            "features": features_spec,
            "normalisation": norm,
            "thresholds": {"edge_cut": self.edge_cut, "min_track_hits": self.min_track_hits,
                           **self._filter_manifest()},
            "postprocessing": {"edge_score": "sigmoid(logits)",
                               "track_builder": self.track_builder},
        }
