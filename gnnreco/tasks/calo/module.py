"""``CaloModule``: GravNet + object condensation as a :class:`~gnnreco.tasks.base.GraphTaskModule`.

It only wires pure functions together: the network (:mod:`.model`), the loss (:mod:`.loss`),
condensation and matching (:mod:`.reco`), metrics (:mod:`.metrics`) and plots (:mod:`.plots`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnreco.ops import scatter, scatter_sum
from gnnreco.tasks.base import GraphTaskModule
from gnnreco.tasks.calo.loss import OCInputError, condensation_loss, oc_total, payload_loss, payload_weights
from gnnreco.tasks.calo.metrics import CaloMetricsAccumulator, EventResult, energy_budget
from gnnreco.tasks.calo.model import symmetric_views
from gnnreco.tasks.calo.reco import (
    SharedAssignment,
    cluster_energies_shared,
    condense,
    match_showers,
    merge_fragments,
    share_energy,
)

log = logging.getLogger(__name__)

__all__ = ["CaloModule", "global_object_id", "oc_hit_weights"]


def global_object_id(hit_shower: Tensor, num_showers: Tensor, batch: Tensor) -> Tensor:
    """Object ids unique over a batch: ``shower + 1 + showers of earlier events``; 0 for noise."""
    off = torch.cumsum(num_showers.reshape(-1), 0) - num_showers.reshape(-1)
    return torch.where(hit_shower >= 0, hit_shower + 1 + off[batch], torch.zeros_like(hit_shower))


def oc_hit_weights(energy: Tensor, power: float) -> Tensor | None:
    r"""Hit weights of the OC potentials, :math:`w_j = \mathrm{clip}(e_j/\langle e\rangle, 0.05, 20)^p`
    divided by their mean; ``None`` (unweighted) for :math:`p = 0`. Non-finite or negative energies
    count as 0 (then the clip floor)."""
    if power == 0.0:
        return None
    if power < 0:
        raise ValueError(f"model.oc_energy_weight must be >= 0, got {power}")
    e = torch.nan_to_num(energy.detach(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0.0)
    w = (e / e.mean().clamp(min=1e-12)).clamp(0.05, 20.0) ** power
    return w / w.mean()


class CaloModule(GraphTaskModule):
    r"""Calorimeter clustering with object condensation.

    Args:
        net: a :class:`~gnnreco.tasks.calo.model.CaloGravNet` (tensor-only ``forward(x, batch)``).
        optimizer, scheduler, ...: see :class:`~gnnreco.tasks.base.GraphTaskModule` (``**base``).
        q_min: minimal charge :math:`q_{min}`.
        s_c: weight :math:`s_C` of the condensation terms.
        s_b: weight :math:`s_B` of the noise term.
        s_log: weight of the extra :math:`-\log\beta_\alpha` term (keeps β from collapsing to 0).
        repulsive_scale: extra weight of the repulsive potential.
        payload_scale: weight of the payload terms.
        payload_kind: ``"paper"`` (arctanh²β) or ``"beta2"`` (β²) payload hit weights.
        payload_weights: per-head weights (``energy``, ``energy_quantile``, ``position``, ``time``, ``pid``).
        potential: ``"hinge"`` or ``"soft"`` OC potential.
        repulsive: ``"chunked"`` or ``"radius"`` repulsion.
        max_n_rep: tiger-style subsampling of repulsive pairs (radius only).
        t_beta, t_d, local_radius: condensation thresholds (``local_radius`` uses the predicted
            distance scale: capture within :math:`t_d\,\sigma_\alpha`; with the hinge potential the
            scale is trained to each object's energy-weighted RMS radius, loss ``radius``).
        oc_energy_weight: exponent :math:`p` of energy-weighted potentials, :math:`w_j \propto
            \mathrm{clip}(e_j/\langle e\rangle, 0.05, 20)^p` normalised to mean 1 (0: unweighted, the
            paper). The metrics weight hits by energy (IoU, shower energy), so with :math:`p > 0` the
            potentials place the energetic hits of each shower first.
        assign: condensation's assignment of hits inside several capture radii: ``"beta"`` (the
            paper: highest-β condensation point) or ``"nearest"`` (smallest distance over capture
            radius; see :func:`~gnnreco.tasks.calo.reco.condense`).
        energy_sharing: shower energies from the hard assignment (``"none"``) or with each hit's
            energy shared among the condensation points within reach (``"gaussian"``: fractions
            :math:`\propto \beta_\alpha^{p}\exp(-d^2/2s^2\sigma_\alpha^2)`, see
            :func:`~gnnreco.tasks.calo.reco.share_energy`), or in proportion to a learned
            :math:`P(j \in \alpha)^k` (``"learned"``, with a hit-share classifier set by
            :meth:`set_share_classifier`; :mod:`gnnreco.tasks.calo.hitshare`; ``share_beta_power`` is
            :math:`k`). The clusters (assignment, matching) stay hard.
        share_sigma: Gaussian width :math:`s` in units of the condensation point's scale :math:`\sigma_\alpha`.
        share_radius: candidate radius :math:`\rho` in units of the capture radius :math:`t_d\sigma_\alpha`
            (> 1 also gives energy of hits no capture radius reached).
        share_beta_power: exponent :math:`p` of :math:`\beta_\alpha` in the sharing weights.
        share_energy_power: exponent :math:`q` of the hard cluster's hit-energy sum :math:`S_\alpha` in
            the sharing weights (:math:`c_\alpha = S_\alpha^q`: a large neighbour keeps its halo,
            a small fragment inside a shower does not take half of it).
        share_min_fraction: smaller fractions are dropped and the rest renormalised (speed).
        pair_threshold: with a pair classifier set (:meth:`set_pair_classifier`), a condensation
            point suppresses a candidate inside its capture radius only if the classifier gives the
            pair :math:`P(\text{same shower}) \ge` this (:mod:`gnnreco.tasks.calo.pairs`); 0, or no
            classifier: every candidate inside is suppressed (the paper's rule).
        absorb_threshold: with a pair classifier, after the condensation (and the energy sharing) a
            cluster is merged into a larger one whose condensation point lies within
            ``absorb_radius`` · t_d · σ_a of its own when the classifier gives that pair of points
            P(same shower) ≥ this (:func:`~gnnreco.tasks.calo.reco.absorption_targets`); 0: off.
        absorb_radius: ρ of the absorption's search radius, in capture radii of the larger cluster.
        pair_classifier: path of a saved pair classifier (:func:`~gnnreco.tasks.calo.pairs.save_pair_classifier`,
            e.g. the benchmark's ``<checkpoint>.pairs.pt``) to load now; or set one later with
            :meth:`set_pair_classifier`.
        share_classifier: path of a saved hit-share classifier (the benchmark's ``<checkpoint>.share.pt``)
            for ``energy_sharing="learned"``, loaded now; or set one with :meth:`set_share_classifier`.
        test_views: outside training, average the network over this many rotations of each event
            about the beam axis (1, 2 or 4; :func:`~gnnreco.tasks.calo.model.symmetric_views`): a
            test-time ensemble from the detector's symmetry, at ``test_views`` times the network's
            inference cost. Training always sees the event as it is.
        iou_threshold: matching threshold.
        metric_min_energy: showers below this (GeV) are ignored in efficiency and fake rate.
    """

    #: the settings the energy sharing depends on (beyond the condensation's): a reconstruction cache key
    SHARE_KEYS = ("energy_sharing", "share_sigma", "share_radius", "share_beta_power", "share_energy_power",
                  "share_min_fraction")

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], *, q_min: float = 0.5,
                 s_c: float = 1.0, s_b: float = 1.0, repulsive_scale: float = 1.0, payload_scale: float = 0.5,
                 payload_kind: str = "beta2", payload_weights: Mapping[str, float] | None = None,
                 potential: str = "hinge", repulsive: str = "chunked", max_n_rep: int = 0, t_beta: float = 0.3,
                 t_d: float = 0.5, local_radius: bool = False, iou_threshold: float = 0.1,
                 metric_min_energy: float = 1.0, s_log: float = 0.0, assign: str = "beta",
                 oc_energy_weight: float = 0.0, energy_sharing: str = "none", share_sigma: float = 0.5,
                 share_radius: float = 1.0, share_beta_power: float = 0.0, share_energy_power: float = 0.0,
                 share_min_fraction: float = 1e-3, pair_threshold: float = 0.0, absorb_threshold: float = 0.0,
                 absorb_radius: float = 1.5, pair_classifier: str | None = None, test_views: int = 1,
                 share_classifier: str | None = None, **base: Any) -> None:
        if energy_sharing not in ("none", "gaussian", "learned"):
            raise ValueError(f"model.energy_sharing must be 'none', 'gaussian' or 'learned', got {energy_sharing!r}")
        if energy_sharing == "learned" and share_beta_power <= 0:
            raise ValueError(f"model.share_beta_power is the exponent k of the learned sharing and must be > 0, "
                             f"got {share_beta_power}")
        if share_sigma < 0 or share_radius <= 0:
            raise ValueError(f"model.share_sigma must be >= 0 and model.share_radius > 0, got {share_sigma}, "
                             f"{share_radius}")
        if not (0.0 <= pair_threshold <= 1.0 and 0.0 <= absorb_threshold <= 1.0):
            raise ValueError(f"model.pair_threshold and model.absorb_threshold must be in [0, 1], got {pair_threshold}, "
                             f"{absorb_threshold}")
        if absorb_radius <= 0:
            raise ValueError(f"model.absorb_radius must be > 0, got {absorb_radius}")
        if test_views not in (1, 2, 4):
            raise ValueError(f"model.test_views must be 1, 2 or 4, got {test_views}")
        super().__init__(net=net, optimizer=optimizer, **base)
        self.skipped_bad_events = 0
        # not a registered submodule: fitted after the network, saved on its own, no OC gradients
        object.__setattr__(self, "pair_classifier", None)
        object.__setattr__(self, "share_classifier", None)
        if pair_classifier or share_classifier:
            from gnnreco.tasks.calo.pairs import load_pair_classifier

            if pair_classifier:
                self.set_pair_classifier(load_pair_classifier(pair_classifier))
            if share_classifier:
                self.set_share_classifier(load_pair_classifier(share_classifier))
        self._test_acc = CaloMetricsAccumulator(min_energy=metric_min_energy)

    # ------------------------------------------------------------------ forward and loss
    def forward(self, batch: Any) -> dict[str, Tensor]:
        views = self.hparams.get("test_views", 1)
        if self.training or views == 1:
            return self.net(batch.x, batch.batch)
        return symmetric_views(self.net, batch.x, batch.batch, views)

    def compute_loss(self, batch: Any, out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        gid = global_object_id(batch.hit_shower, batch.num_showers, batch.batch)
        weights = oc_hit_weights(batch.hit_energy, hp.get("oc_energy_weight", 0.0))
        try:
            oc = condensation_loss(beta=out["beta"], x=out["coords"], object_id=gid, weights=weights, q_min=hp.q_min,
                                   potential=hp.potential, repulsive=hp.repulsive, max_n_rep=hp.max_n_rep,
                                   distance_scale=out.get("distance_scale"), batch=batch.batch)
        except OCInputError as exc:  # a counted skip, never a crash inside the loss
            self.skipped_bad_events += 1
            log.warning("calo: skipping a batch the OC loss rejects (%d so far): %s", self.skipped_bad_events, exc)
            zero = sum(torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0 for v in out.values())
            return zero, {"skipped_bad": torch.tensor(float(self.skipped_bad_events))}
        xi = payload_weights(out["beta"], gid, kind=hp.payload_kind)
        shower_sum = scatter_sum(batch.hit_energy[gid > 0], gid[gid > 0] - 1, dim=0,
                                 dim_size=int(batch.num_showers.sum()))
        s_hit = torch.where(gid > 0, shower_sum[(gid - 1).clamp(min=0)], torch.ones_like(batch.hit_energy))
        pred = {"energy": out["energy_factor"] * s_hit, "position": out["position"], "time": out["time"],
                "pid_logits": out["pid_logits"]}
        if "energy_q" in out:
            pred["energy_q"] = out["energy_q"] * s_hit[:, None]
        tgt = {"energy": batch.hit_true_energy, "position": batch.hit_impact[:, :2] - batch.hit_pos[:, :2],
               "time": batch.hit_dt, "pid": batch.hit_pid_class}
        parts = payload_loss(pred, tgt, xi, energy_quantiles="energy_q" in out)
        if getattr(self.net, "shower_head", None) is not None:
            parts["shower_energy"] = self._shower_energy_loss(batch, out, gid)
        if hp.local_radius and hp.potential == "hinge" and "distance_scale" in out:
            parts["radius"] = self._radius_loss(batch, out, gid, xi)
        oc_parts = {k: oc[k] for k in ("attractive", "repulsive", "coward", "noise", "coward_log")}
        oc_parts["repulsive"] = hp.repulsive_scale * oc_parts["repulsive"]
        total = oc_total({**oc_parts, **parts}, s_c=hp.s_c, s_b=hp.s_b, payload_scale=hp.payload_scale,
                         payload_weights_by_name=hp.payload_weights, s_log=hp.s_log)
        return total, {**{k: v.detach() for k, v in oc_parts.items()}, **{k: v.detach() for k, v in parts.items()}}

    def _shower_energy_loss(self, batch: Any, out: dict[str, Tensor], gid: Tensor) -> Tensor:
        r"""Shower calibration on the truth assignment: Huber (δ = 0.2) of :math:`E_{pred}/E_{true} - 1`."""
        n_sh = int(batch.num_showers.sum())
        e_pred, s_sum = self.net.shower_energy(batch.x, out, batch.hit_energy, gid - 1, n_sh)
        e_true = batch.shower_energy.reshape(-1)
        ok = (s_sum > 0) & (e_true > 0)
        if not bool(ok.any()):
            return e_pred.sum() * 0.0
        rel = e_pred[ok] / e_true[ok] - 1.0
        return nn.functional.huber_loss(rel, torch.zeros_like(rel), delta=0.2)

    def fit_shower_calibration(self, batches: Iterable[Any], steps: int = 400, lr: float = 1e-2,
                               min_energy: float = 1.0, on: str = "truth") -> float:
        r"""Second-stage fit of the :class:`~gnnreco.tasks.calo.model.ShowerCalibration` head with the
        network frozen: the shower moments of ``batches`` are computed once, then the head is fitted
        full-batch (Adam, ``steps``) on the Huber loss (δ = 0.2) of :math:`E_{pred}/E_{true}-1`
        (showers above ``min_energy`` GeV). Cheap (seconds for thousands of showers), and it sees many
        more showers per step than the joint training. Returns the final loss.

        ``on`` chooses the showers: ``"truth"`` (the truth assignment, as the joint training) or
        ``"condensed"``: the clusters that inference makes (:meth:`reconstruct` with the module's
        t_β, t_d), each matched to its truth shower (:func:`~gnnreco.tasks.calo.reco.match_showers`)
        and calibrated to that shower's energy. The condensed clusters lose part of the halo to
        neighbours and collect some of theirs; fitted on them, the head corrects the response of the
        clusters it is applied to, not of ideal ones.
        """
        net = self.net
        head = getattr(net, "shower_head", None)
        if head is None:
            raise ValueError("fit_shower_calibration needs model.net.shower_calibration=true")
        if on not in ("truth", "condensed"):
            raise ValueError(f"fit_shower_calibration: on must be 'truth' or 'condensed', got {on!r}")
        feats, sums, truth = [], [], []
        with torch.no_grad():
            for b in batches:
                out = self(b)
                for u, s_sum, e_true in self._calibration_samples(b, out, on):
                    keep = (s_sum > 0) & (e_true > min_energy)
                    feats.append(u[keep])
                    sums.append(s_sum[keep])
                    truth.append(e_true[keep])
        if not feats or sum(len(f) for f in feats) == 0:
            raise ValueError("fit_shower_calibration: no showers above min_energy in 'batches'")
        u, s_sum, e_true = torch.cat(feats), torch.cat(sums), torch.cat(truth)
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        loss = torch.zeros(())
        with torch.enable_grad():
            for _ in range(steps):
                rel = head(u) * s_sum / e_true - 1.0
                loss = nn.functional.huber_loss(rel, torch.zeros_like(rel), delta=0.2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return float(loss.detach())

    def _calibration_samples(self, b: Any, out: dict[str, Tensor], on: str) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(moments, hit sums, true energies) of the showers of one batch for the calibration fit."""
        net = self.net
        head = net.shower_head
        if on == "truth":
            gid = global_object_id(b.hit_shower, b.num_showers, b.batch)
            u, s_sum = head.features(b.x, net.front_face_xy(b.x), b.hit_energy, gid - 1, int(b.num_showers.sum()),
                                     out["energy_factor"], out["pid_logits"], out["beta"])
            return [(u, s_sum, b.shower_energy.reshape(-1))]
        res = []
        recos = self.reconstruct(b, out)
        counts = torch.bincount(b.batch, minlength=len(recos)).tolist()
        n_sh = b.num_showers.reshape(-1).tolist()
        xy = net.front_face_xy(b.x)
        h0 = k0 = 0
        for ev, r in enumerate(recos):
            n, kt = counts[ev], int(n_sh[ev])
            sl = slice(h0, h0 + n)
            m = match_showers(b.hit_shower[sl].cpu().numpy(), r["assignment"], b.hit_energy[sl].cpu().numpy(),
                              n_truth=kt, n_pred=len(r["energy"]), iou_threshold=self.hparams.iou_threshold)
            if len(m.pred_idx):
                a = torch.as_tensor(r["assignment"], device=b.x.device)
                u, s_sum = head.features(b.x[sl], xy[sl], b.hit_energy[sl], a, len(r["energy"]),
                                         out["energy_factor"][sl], out["pid_logits"][sl], out["beta"][sl])
                p_idx = torch.as_tensor(m.pred_idx, device=b.x.device)
                t_idx = torch.as_tensor(m.truth_idx, device=b.x.device)
                res.append((u[p_idx], s_sum[p_idx], b.shower_energy.reshape(-1)[k0:k0 + kt][t_idx]))
            h0 += n
            k0 += kt
        return res

    def _radius_loss(self, batch: Any, out: dict[str, Tensor], gid: Tensor, xi: Tensor) -> Tensor:
        r"""Local condensation radius for the hinge potential: every hit of object :math:`k` learns
        its energy-weighted RMS radius around the condensation point,
        :math:`r_k = (\sum_{j\in k} e_j \lVert\mathbf{x}_j-\mathbf{x}_{\alpha_k}\rVert^2/\sum_{j\in k} e_j)^{1/2}`
        (coordinates detached), with the loss :math:`\sum_j \xi_j (\log\sigma_j - \log(r_{k(j)} + 0.02))^2
        / \sum_j \xi_j`; condensation then captures within :math:`t_d\,\sigma_\alpha`."""
        sig = gid > 0
        if not bool(sig.any()):
            return out["distance_scale"].sum() * 0.0
        obj = gid[sig] - 1
        k = int(batch.num_showers.sum())
        idx = torch.nonzero(sig, as_tuple=True)[0]
        q = out["beta"].detach()[idx]
        qmax = scatter(q, obj, dim=0, dim_size=k, reduce="max")
        cand = torch.where(q == qmax[obj], idx, torch.full_like(idx, gid.numel()))
        alpha = scatter(cand, obj, dim=0, dim_size=k, reduce="min").clamp(max=gid.numel() - 1)
        x = out["coords"].detach()
        d2 = ((x[idx] - x[alpha[obj]]) ** 2).sum(1)
        e = batch.hit_energy[idx].clamp(min=0.0)
        r = (scatter_sum(e * d2, obj, dim=0, dim_size=k) / scatter_sum(e, obj, dim=0, dim_size=k).clamp(min=1e-9)).sqrt()
        lr = (torch.log(out["distance_scale"][idx]) - torch.log(r[obj] + 0.02)) ** 2
        w = xi[idx].detach()
        return (w * lr).sum() / w.sum().clamp(min=1e-6)

    # ------------------------------------------------------------------ reconstruction
    def set_pair_classifier(self, classifier: nn.Module | None) -> None:
        """Use ``classifier`` (a :class:`~gnnreco.tasks.calo.pairs.PairClassifier`, fitted on this
        network's outputs) for the condensation's suppression (``pair_threshold``) and the fragment merging
        (``absorb_threshold``); ``None`` removes it."""
        object.__setattr__(self, "pair_classifier", classifier)

    def _apply(self, fn, *args, **kwargs):
        # the classifiers are not registered submodules (no OC gradients, saved on their own), but
        # they run on the network's outputs: .to(device) / .cuda() / .double() move them with the module
        super()._apply(fn, *args, **kwargs)
        for name in ("pair_classifier", "share_classifier"):
            clf = self.__dict__.get(name)
            if clf is not None:
                clf._apply(fn, *args, **kwargs)
        return self

    def set_share_classifier(self, classifier: nn.Module | None) -> None:
        """Use ``classifier`` (a :class:`~gnnreco.tasks.calo.pairs.PairClassifier` on
        :data:`~gnnreco.tasks.calo.hitshare.HIT_SHARE_FEATURES`, fitted on this network's condensations)
        for ``energy_sharing: learned``; ``None`` removes it."""
        object.__setattr__(self, "share_classifier", classifier)

    @torch.no_grad()
    def condensation(self, batch: Any, out: dict[str, Tensor]):
        """The condensation of ``batch`` at the module's settings (t_β, t_d, local radius, assignment,
        the pair classifier's suppression), before the energy sharing and the fragment merging."""
        hp = self.hparams
        suppress = None
        if self.pair_classifier is not None and hp.get("pair_threshold", 0.0) > 0:
            suppress = self.pair_classifier.same_shower(out, batch.hit_pos, batch.hit_energy, hp.pair_threshold)
        return condense(out["beta"], out["coords"], t_beta=hp.t_beta, t_d=hp.t_d, batch=batch.batch,
                        distance_scale=out.get("distance_scale") if hp.local_radius else None,
                        assign=hp.get("assign", "beta"), suppress=suppress)

    @torch.no_grad()
    def reconstruct(self, batch: Any, out: dict[str, Tensor], cache: dict | None = None
                    ) -> list[dict[str, np.ndarray]]:
        """Condense each event and regress its showers: one dict of numpy arrays per event.

        Keys: ``assignment`` (cluster per hit, −1 noise), ``cp_index`` (hit index within the event),
        ``energy`` (GeV: the network's :meth:`~gnnreco.tasks.calo.model.CaloGravNet.shower_energy`,
        a calibration factor times the summed energy of the assigned hits, or of the shared hit
        energies with ``energy_sharing``), ``energy_low``/``energy_high`` (16 %/84 % quantiles, if predicted),
        ``position`` (impact x, y in mm), ``time`` (ns), ``pid`` (class), ``beta``, and the (shared)
        hit-to-cluster pairs the energies were summed over: ``share_hit`` (hit index within the event),
        ``share_cluster``, ``share_fraction`` (1 for the hard assignment).

        ``cache``: a dict kept by the caller across calls on the *same* ``batch`` and ``out`` (a scan of
        settings, :func:`gnnreco.bench.calo.scan`): the condensation and the energy sharing are reused
        between settings that differ only in later stages (the sharing options reuse one condensation,
        the absorption options one condensation and sharing). The results are those without it; a
        cache met with another batch, output or pair classifier is emptied first.
        """
        hp = self.hparams
        b = batch.batch
        cond_key = share_key = None
        if cache is not None:
            owner = (id(batch), id(out), id(self.pair_classifier), id(self.share_classifier))
            if cache.get("owner") != owner:
                cache.clear()
                cache["owner"] = owner
            cond_key = ("condense", hp.t_beta, hp.t_d, bool(hp.local_radius), hp.get("assign", "beta"),
                        hp.get("pair_threshold", 0.0) if self.pair_classifier is not None else 0.0)
            share_key = (cond_key, *(hp.get(k) for k in self.SHARE_KEYS))
        cond = cache.get(cond_key) if cache is not None else None
        if cond is None:
            cond = self.condensation(batch, out)
            if cache is not None:
                cache[cond_key] = cond
        cp = cond.cp_index
        k = cp.numel()
        asg = cond.assignment
        shares = asg
        if cache is not None and share_key in cache:
            shares = cache[share_key]
        elif hp.get("energy_sharing", "none") == "gaussian":
            q = hp.get("share_energy_power", 0.0)
            cw = cluster_energies_shared(SharedAssignment.from_hard(asg), batch.hit_energy.clamp(min=0.0), k) ** q \
                if q else None
            shares = share_energy(out["coords"], cond, t_d=hp.t_d, beta=out["beta"], batch=b,
                                  distance_scale=out.get("distance_scale") if hp.local_radius else None,
                                  sigma=hp.get("share_sigma", 0.5), radius=hp.get("share_radius", 1.0),
                                  beta_power=hp.get("share_beta_power", 0.0), cluster_weight=cw,
                                  min_fraction=hp.get("share_min_fraction", 1e-3))
        elif hp.get("energy_sharing", "none") == "learned":
            if self.share_classifier is None:
                raise RuntimeError("energy_sharing 'learned' needs a hit-share classifier: set_share_classifier() "
                                   "or the share_classifier path (gnnreco.bench.calo --share-events N fits one)")
            from gnnreco.tasks.calo.hitshare import share_energy_learned

            shares = share_energy_learned(out, batch.hit_pos, batch.hit_energy, cond, b, self.share_classifier,
                                          t_d=hp.t_d, radius=hp.get("share_radius", 1.0),
                                          power=hp.get("share_beta_power", 1.0),
                                          energy_power=hp.get("share_energy_power", 0.0),
                                          min_fraction=hp.get("share_min_fraction", 1e-3),
                                          use_scale=bool(hp.local_radius))
        if cache is not None:
            cache[share_key] = shares
        if self.pair_classifier is not None and hp.get("absorb_threshold", 0.0) > 0:
            cond, shares = merge_fragments(
                out["coords"], cond, shares, batch.hit_energy, t_d=hp.t_d, radius=hp.get("absorb_radius", 1.5),
                decide=self.pair_classifier.same_shower(out, batch.hit_pos, batch.hit_energy, hp.absorb_threshold),
                batch=b, distance_scale=out.get("distance_scale") if hp.local_radius else None)
            cp, asg = cond.cp_index, cond.assignment
            k = cp.numel()
        if getattr(self.net, "shower_energy", None) is not None:
            energy, e_sum = self.net.shower_energy(batch.x, out, batch.hit_energy, shares, k)
        else:
            if not isinstance(shares, SharedAssignment):
                shares = SharedAssignment.from_hard(asg)
            e_sum = cluster_energies_shared(shares, batch.hit_energy, k)
            energy = out["energy_factor"][cp] * e_sum
        pos = batch.hit_pos[cp, :2] + out["position"][cp]
        time = batch.hit_pos.new_zeros(k) + out["time"][cp]
        pid = out["pid_logits"][cp].argmax(-1)
        counts = torch.bincount(b, minlength=int(b.max()) + 1 if b.numel() else 1)
        ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        cp_event = b[cp]
        first_cluster = torch.cat([cp_event.new_zeros(1), torch.cumsum(torch.bincount(cp_event, minlength=len(counts)), 0)])
        # clusters are numbered in beta order over the batch; renumber them within each event
        perm = torch.argsort(cp_event, stable=True)
        local = torch.empty_like(perm)
        local[perm] = torch.arange(k, device=perm.device) - first_cluster[cp_event[perm]]
        pairs = shares if isinstance(shares, SharedAssignment) else SharedAssignment.from_hard(asg)
        pair_event = b[pairs.hit]
        res = []
        for ev in range(len(counts)):
            s, e = int(ptr[ev]), int(ptr[ev + 1])
            sel = cp_event == ev
            a = asg[s:e]
            a = torch.where(a >= 0, local[a.clamp(min=0)], a) if k else torch.full_like(a, -1)
            ps = pair_event == ev
            r = {"assignment": a.cpu().numpy(), "cp_index": (cp[sel] - s).cpu().numpy(),
                 "share_hit": (pairs.hit[ps] - s).cpu().numpy(), "share_cluster": local[pairs.cluster[ps]].cpu().numpy(),
                 "share_fraction": pairs.fraction[ps].cpu().numpy(),
                 "energy": energy[sel].cpu().numpy(), "position": pos[sel].cpu().numpy(),
                 "time": time[sel].cpu().numpy(), "pid": pid[sel].cpu().numpy(),
                 "beta": out["beta"][cp[sel]].cpu().numpy()}
            if "energy_q" in out:
                q = out["energy_q"][cp[sel]] * e_sum[sel][:, None]
                r["energy_low"], r["energy_high"] = q[:, 0].cpu().numpy(), q[:, 1].cpu().numpy()
            res.append(r)
        return res

    def event_results(self, batch: Any, out: dict[str, Tensor], cache: dict | None = None) -> list[EventResult]:
        """Reconstruct and match every event of ``batch`` against its truth (``cache``: see
        :meth:`reconstruct`)."""
        recos = self.reconstruct(batch, out, cache=cache)
        b = batch.batch
        counts = torch.bincount(b, minlength=len(recos)).tolist()
        n_sh = batch.num_showers.reshape(-1).tolist()
        hs = batch.hit_shower.cpu().numpy()
        he = batch.hit_energy.cpu().numpy()
        s_e = batch.shower_energy.cpu().numpy()
        s_eta = batch.shower_eta.cpu().numpy()
        s_pid = batch.shower_pid_class.cpu().numpy()
        s_hit = batch.shower_hit_energy.cpu().numpy()
        results, h0, k0 = [], 0, 0
        for ev, r in enumerate(recos):
            n, k = counts[ev], int(n_sh[ev])
            m = match_showers(hs[h0:h0 + n], r["assignment"], he[h0:h0 + n], n_truth=k, n_pred=len(r["energy"]),
                              iou_threshold=self.hparams.iou_threshold)
            budget = energy_budget(hs[h0:h0 + n], he[h0:h0 + n], r["share_hit"], r["share_cluster"],
                                   r["share_fraction"], m, n_truth=k, n_pred=len(r["energy"]))
            results.append(EventResult(m, s_e[k0:k0 + k], s_hit[k0:k0 + k], s_eta[k0:k0 + k], s_pid[k0:k0 + k],
                                       r["energy"], r["pid"], budget))
            h0 += n
            k0 += k
        return results

    def compute_metrics(self, batch: Any, out: dict[str, Tensor], stage: str) -> dict[str, float]:
        results = self.event_results(batch, out)
        if stage == "test":
            self._test_acc.extend(results)
        acc = CaloMetricsAccumulator(min_energy=self.hparams.metric_min_energy, events=results)
        s = acc.summary()
        return {k: s[k] for k in ("efficiency", "fake_rate", "merge_rate", "split_rate", "response", "resolution")
                if k in s}

    def on_test_epoch_start(self) -> None:
        self._test_acc.reset()

    def test_results(self) -> CaloMetricsAccumulator:
        """The events matched during the last ``trainer.test``."""
        return self._test_acc

    def evaluation_plots(self, out_dir: str | Path) -> list[Path]:
        from gnnreco.tasks.calo.plots import plot_all

        return plot_all(self._test_acc, out_dir)
