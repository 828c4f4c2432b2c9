r"""Learned energy sharing: a classifier of (hit, condensation point) pairs.

The Gaussian sharing of :func:`~gnnreco.tasks.calo.reco.share_energy` splits a hit's energy among the
condensation points that reach it by the cluster-space distance alone (and the points' β and
energies). What is left of the resolution after the fragment merging is mostly hadron energy shared
into a neighbouring shower (docs/calo.md, "Where the energy goes"): hits between two close showers whose
cluster-space position does not say which one they belong to. The physical picture often does: the
hit's lateral distance to each shower's predicted impact point, its depth, its energy, the two
showers' energies and PID.

Here each pair (hit :math:`j`, condensation point :math:`\alpha`) with
:math:`d_{j\alpha} < \rho\,t_d\,\sigma_\alpha` gets :math:`p_{j\alpha} = P(j \in \alpha)` from a small MLP
(:class:`~gnnreco.tasks.calo.pairs.PairClassifier` on :data:`HIT_SHARE_FEATURES`), and the hit's
energy is split in proportion:

.. math::
    f_{j\alpha} = \frac{p_{j\alpha}^{\,k}}{\sum_{\alpha'} p_{j\alpha'}^{\,k}},

with a sharpening exponent :math:`k` (``share_sigma`` is not used; ``share_beta_power`` is reused as
:math:`k`, 1 = the probabilities themselves). A condensation point stays whole in its own cluster, as
in the Gaussian sharing.

The classifier is fitted after the network and the pair classifier, everything else frozen, on the
condensations of simulated events at the chosen working point, labelled by the truth (1: the hit
belongs to the shower of the condensation point's own hit *and* that cluster is the shower's main one,
:func:`hit_share_labels`; noise hits are 0 for every point):
:func:`gather_hit_share_samples`, then :func:`~gnnreco.tasks.calo.pairs.fit_pair_classifier`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from gnnreco.ops import scatter, scatter_sum
from gnnreco.tasks.calo.reco import (
    Condensation,
    SharedAssignment,
    _capture_pairs,
    cluster_energies,
    shares_from_log_weights,
)

__all__ = ["HIT_SHARE_FEATURES", "hit_cp_pairs", "hit_share_features", "hit_share_labels",
           "share_energy_learned", "gather_hit_share_samples"]

#: scalar features of a (hit j, condensation point α) pair; the PID probabilities of α and of j follow
HIT_SHARE_FEATURES = ("d_over_sigma_cp", "d_excess_over_nearest", "log_candidates", "d_over_sigma_hit", "beta_hit",
                      "beta_cp", "sigma_cp", "sigma_hit", "lateral_to_cp_impact_dm", "impact_distance_dm",
                      "depth_difference_dm", "log_energy_hit", "log_cluster_energy", "energy_factor_hit",
                      "energy_factor_cp", "time_difference", "pid_overlap")


@torch.no_grad()
def hit_cp_pairs(out: dict[str, Tensor], cond: Condensation, batch: Tensor, *, t_d: float, radius: float,
                 use_scale: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    r"""Every (hit, cluster) pair with the hit within :math:`\rho\,t_d\,\sigma_\alpha` (``radius`` = ρ) of
    the cluster's condensation point in cluster space, without the pairs of a condensation point with
    another cluster: hit indices, cluster indices and distances."""
    coords = out["coords"].detach().float()
    n = coords.shape[0]
    cp = cond.cp_index
    sig = out.get("distance_scale") if use_scale else None
    scale = sig.reshape(-1).detach().float() if sig is not None else torch.ones(n, device=coords.device)
    h, p, d = _capture_pairs(coords.index_select(0, cp), radius * t_d * scale.index_select(0, cp), coords,
                             batch[cp], batch, max_num_neighbors=4096)
    own = torch.full((n,), -1, dtype=torch.long, device=coords.device)
    own[cp] = torch.arange(cp.numel(), device=coords.device)
    keep = (own[h] < 0) | (own[h] == p)
    return h[keep], p[keep], d[keep]


def hit_share_features(out: dict[str, Tensor], hit_pos: Tensor, hit_energy: Tensor, cond: Condensation,
                       h: Tensor, p: Tensor, d: Tensor, use_scale: bool = True) -> Tensor:
    """Features ``[P, len(HIT_SHARE_FEATURES) + 2 P_pid]`` of the pairs (hit ``h``, cluster ``p``) at
    cluster-space distance ``d`` (:func:`hit_cp_pairs`). Lengths in decimetres (the shower scale); the
    cluster energy is the hard cluster's summed hit energy (GeV)."""
    n = out["beta"].numel()
    cp = cond.cp_index
    a = cp[p]  # the condensation point's hit
    sig = out.get("distance_scale") if use_scale else None
    sigma = sig.reshape(-1).float() if sig is not None else torch.ones(n, device=hit_pos.device)
    beta = out["beta"].reshape(-1).float()
    rel = d / sigma[a]
    nearest = scatter(rel, h, dim=0, dim_size=n, reduce="min")[h]
    n_cand = scatter_sum(torch.ones_like(rel), h, dim=0, dim_size=n)[h]
    impact = hit_pos[:, :2] + out["position"]
    pid = torch.softmax(out["pid_logits"].float(), dim=1)
    e = hit_energy.clamp(min=0.0)
    e_cluster = cluster_energies(cond.assignment, e, cp.numel())
    f = torch.stack([rel, rel - nearest, torch.log(n_cand), d / sigma[h], beta[h], beta[a], sigma[a], sigma[h],
                     (hit_pos[h, :2] - impact[a]).norm(dim=1) / 100.0, (impact[h] - impact[a]).norm(dim=1) / 100.0,
                     (hit_pos[h, 2] - hit_pos[a, 2]) / 100.0, torch.log(e[h].clamp(min=1e-4)),
                     torch.log(e_cluster[p].clamp(min=1e-3)), out["energy_factor"][h], out["energy_factor"][a],
                     out["time"][h] - out["time"][a], (pid[h] * pid[a]).sum(dim=1)], dim=1)
    return torch.cat([f, pid[a], pid[h]], dim=1).float()


@torch.no_grad()
def share_energy_learned(out: dict[str, Tensor], hit_pos: Tensor, hit_energy: Tensor, cond: Condensation,
                         batch: Tensor, classifier: Callable[[Tensor], Tensor], *, t_d: float, radius: float = 1.5,
                         power: float = 1.0, energy_power: float = 0.0, min_fraction: float = 1e-3,
                         use_scale: bool = True) -> SharedAssignment:
    r"""Fractions :math:`f_{j\alpha} \propto p_{j\alpha}^k S_\alpha^q` (module docstring; :math:`S_\alpha`
    the hard cluster's summed hit energy, ``energy_power`` = q) over the pairs of :func:`hit_cp_pairs`;
    ``classifier`` maps features to logits. Pairs below ``min_fraction`` are dropped and the hit's
    others renormalised (its strongest pair is always kept)."""
    if radius <= 0 or power <= 0:
        raise ValueError(f"share_energy_learned: radius and power must be > 0, got {radius}, {power}")
    n = out["beta"].numel()
    dev = out["beta"].device
    h, p, d = hit_cp_pairs(out, cond, batch, t_d=t_d, radius=radius, use_scale=use_scale)
    if h.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return SharedAssignment(e, e, torch.zeros(0, device=dev))
    logp = torch.nn.functional.logsigmoid(classifier(hit_share_features(out, hit_pos, hit_energy, cond, h, p, d,
                                                                         use_scale=use_scale)))
    own = torch.zeros(n, dtype=torch.bool, device=dev)
    own[cond.cp_index] = True
    logw = power * logp
    if energy_power:
        s_k = cluster_energies(cond.assignment, hit_energy.clamp(min=0.0), cond.cp_index.numel())
        logw = logw + energy_power * torch.log(s_k[p].clamp(min=1e-6))
    logw = torch.where(own[h], torch.full_like(logw, 1e9), logw)  # a condensation point stays whole
    return shares_from_log_weights(h, p, logw, n, cond.cp_index.numel(), min_fraction)


def hit_share_labels(cond: Condensation, hit_shower: Tensor, hit_energy: Tensor, h: Tensor, p: Tensor) -> Tensor:
    """Truth labels of the pairs (hit ``h``, cluster ``p``) of one event: 1 when the hit belongs to the shower of the
    cluster's condensation point *and* the cluster is that shower's main one (the largest hard
    cluster whose condensation point lies in it). A fragment of the same shower gets 0: its hits
    belong to the main cluster, which the fragment merging or the matching credits."""
    cp = cond.cp_index
    k = cp.numel()
    t = hit_shower[cp]  # each cluster's shower (−1: a noise condensation point)
    e_cluster = cluster_energies(cond.assignment, hit_energy.clamp(min=0.0), k)
    main = torch.zeros(k, dtype=torch.bool, device=cp.device)
    if k:
        ok = t >= 0
        n_sh = int(t.max()) + 1 if ok.any() else 0
        # the highest-energy cluster per shower (ties to the lower index)
        best = scatter(torch.where(ok, e_cluster, torch.full_like(e_cluster, -1.0)), t.clamp(min=0), dim=0,
                       dim_size=max(n_sh, 1), reduce="max")
        cand = ok & (e_cluster >= best[t.clamp(min=0)])
        idx = torch.where(cand, torch.arange(k, device=cp.device), torch.full_like(t, k))
        first = scatter(idx, t.clamp(min=0), dim=0, dim_size=max(n_sh, 1), reduce="min")
        main = cand & (first[t.clamp(min=0)] == torch.arange(k, device=cp.device))
    return ((hit_shower[h] >= 0) & (hit_shower[h] == t[p]) & main[p]).float()


@torch.no_grad()
def gather_hit_share_samples(events: Iterable[Any], outputs: Callable[[Any], dict[str, Tensor]],
                             condensation: Callable[[Any, dict[str, Tensor]], Condensation], *, t_d: float,
                             radius: float = 2.0, max_pairs_per_event: int = 50_000, seed: int = 0,
                             use_scale: bool = True) -> tuple[Tensor, Tensor]:
    """Features and truth labels of the (hit, condensation point) pairs of ``events`` (simulated, with
    ``hit_shower``): ``outputs(event)`` gives the frozen network's outputs, ``condensation(event, out)``
    the condensation at the working point the sharing will follow. Label 1 when the hit belongs to the
    shower of the condensation point's own hit. An event with more pairs than ``max_pairs_per_event``
    gives a uniform sample of them. Returns ``(features [P, F], labels [P])``."""
    gen = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    for b in events:
        out = outputs(b)
        cond = condensation(b, out)
        h, p, d = hit_cp_pairs(out, cond, b.batch, t_d=t_d, radius=radius, use_scale=use_scale)
        if h.numel() > max_pairs_per_event:
            pick = torch.randperm(h.numel(), generator=gen)[:max_pairs_per_event]
            h, p, d = h[pick], p[pick], d[pick]
        feats.append(hit_share_features(out, b.hit_pos, b.hit_energy, cond, h, p, d, use_scale=use_scale))
        labels.append(hit_share_labels(cond, b.hit_shower, b.hit_energy, h, p))
    if not feats:
        raise ValueError("gather_hit_share_samples: no events given")
    return torch.cat(feats), torch.cat(labels)
