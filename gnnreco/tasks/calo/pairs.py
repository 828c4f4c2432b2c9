r"""Learned suppression of condensation points: a classifier of candidate pairs.

In the condensation (:func:`~gnnreco.tasks.calo.reco.condense`) a candidate :math:`c` inside the
capture radius :math:`t_d\sigma_a` of a higher-β condensation point :math:`a` is suppressed: it joins
:math:`a` and never becomes a shower of its own. Two hadron showers 6–13 cm apart often end that way
(docs/calo.md, "Where the resolution goes"): the network gives the second shower a high-β hit of its
own, but does not pull it out of its neighbour's capture radius, and the two are merged. A smaller
suppression radius for everyone trades those merges for splits of single wide hadrons.

Here the decision is made per pair, from more than the cluster-space distance. For each pair
(:math:`a`, :math:`c`) of candidates with :math:`c` inside :math:`\rho\,\sigma_a` of :math:`a` the
classifier sees (:data:`PAIR_FEATURES`) the distance in units of both local scales, both β and
scales, the distance between the impact points both hits predict and between the hits themselves,
their depth difference, their energies, energy factors and times, and both PID distributions; a
small MLP returns :math:`P(\text{same shower})`. The condensation then lets :math:`a` suppress
:math:`c` only when that probability is at least ``threshold`` (0: every pair, the paper's rule).

The same rule merges fragments after the condensation (:func:`~gnnreco.tasks.calo.reco.absorption_targets`):
a smaller cluster whose condensation point lies within :math:`\rho\,t_d\sigma_a` of a larger cluster's
:math:`a` is merged into it when the pair's probability is at least the absorption threshold.

The classifier is fitted after the network, with the network frozen, on the candidate pairs of a few
hundred simulated events labelled by the truth (pairs with a noise hit are left out): seconds per
event on a CPU, much cheaper than more GravNet training. :func:`gather_pair_samples` collects them and
:func:`fit_pair_classifier` fits the MLP with a binary cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnreco.nn.mlp import MLP
from gnnreco.tasks.calo.model import symmetric_views
from gnnreco.tasks.calo.reco import _capture_pairs, ranked_candidates

__all__ = ["PAIR_FEATURES", "PairClassifier", "candidate_pairs", "pair_features", "gather_pair_samples",
           "fit_pair_classifier", "save_pair_classifier", "load_pair_classifier"]

#: scalar features of a candidate pair (a: the higher-ranked candidate, c: the other); the PID
#: probabilities of a and of c follow them
PAIR_FEATURES = ("d_over_sigma_a", "d_over_sigma_c", "beta_a", "beta_c", "sigma_a", "sigma_c",
                 "impact_distance_dm", "hit_distance_dm", "depth_difference_dm", "log_energy_a", "log_energy_c",
                 "energy_factor_a", "energy_factor_c", "time_difference", "pid_overlap")


def pair_features(out: dict[str, Tensor], hit_pos: Tensor, hit_energy: Tensor, a: Tensor, c: Tensor,
                  d: Tensor) -> Tensor:
    """Features ``[P, len(PAIR_FEATURES) + 2 P_pid]`` of the pairs ``(a, c)`` (hit indices) at
    cluster-space distance ``d``, from the network outputs ``out`` (``beta``, ``coords``,
    ``energy_factor``, ``position``, ``time``, ``pid_logits``, optional ``distance_scale``) and the hits'
    positions (mm) and energies (GeV). Lengths in decimetres (the shower scale)."""
    sigma = out.get("distance_scale")
    if sigma is None:
        sigma = torch.ones_like(out["beta"])
    sigma = sigma.reshape(-1)
    beta = out["beta"].reshape(-1)
    impact = hit_pos[:, :2] + out["position"]
    pid = torch.softmax(out["pid_logits"], dim=1)
    le = torch.log(hit_energy.clamp(min=1e-4))
    f = torch.stack([d / sigma[a], d / sigma[c], beta[a], beta[c], sigma[a], sigma[c],
                     (impact[a] - impact[c]).norm(dim=1) / 100.0,
                     (hit_pos[a, :2] - hit_pos[c, :2]).norm(dim=1) / 100.0,
                     (hit_pos[a, 2] - hit_pos[c, 2]) / 100.0, le[a], le[c],
                     out["energy_factor"][a], out["energy_factor"][c], out["time"][a] - out["time"][c],
                     (pid[a] * pid[c]).sum(dim=1)], dim=1)
    return torch.cat([f, pid[a], pid[c]], dim=1).float()


@torch.no_grad()
def candidate_pairs(out: dict[str, Tensor], batch: Tensor, t_beta: float = 0.3, radius: float = 2.5
                    ) -> tuple[Tensor, Tensor, Tensor]:
    r"""Every pair of candidates (:math:`\beta > t_\beta`) of one event with :math:`c` ranked below
    :math:`a` (lower β) and within :math:`\rho\,\sigma_a` (``radius``) of it in cluster space: hit
    indices ``a``, ``c`` and distances ``d``, as :func:`~gnnreco.tasks.calo.reco.condense` sees them."""
    cand = ranked_candidates(out["beta"], batch, t_beta)
    sigma = out.get("distance_scale")
    r = radius * (sigma.reshape(-1)[cand].float() if sigma is not None else
                  torch.ones(cand.numel(), device=cand.device))
    cb = batch[cand]
    xc = out["coords"][cand].float()
    c_, a_, d = _capture_pairs(xc, r, xc, cb, cb, 1 << 20, lower_only=True)
    return cand[a_], cand[c_], d


class PairClassifier(nn.Module):
    """MLP giving the logit of :math:`P(\\text{same shower})` for a candidate pair; features are
    standardised with the training sample's mean and standard deviation (buffers)."""

    def __init__(self, n_pid: int = 4, hidden: int = 32, n_features: int | None = None):
        super().__init__()
        n_in = len(PAIR_FEATURES) + 2 * n_pid if n_features is None else int(n_features)
        self.n_pid = n_pid
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.mlp = MLP(n_in, hidden, 1, n_layers=3, activation="elu", norm="none")

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp((features - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def same_shower(self, out: dict[str, Tensor], hit_pos: Tensor, hit_energy: Tensor, threshold: float
                    ) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """The pair rule of one batch, :math:`P(\\text{same shower}) \\ge` ``threshold``: the
        ``suppress`` rule of :func:`~gnnreco.tasks.calo.reco.condense` (``a`` suppresses ``c``) and
        the ``decide`` rule of :func:`~gnnreco.tasks.calo.reco.absorption_targets` (``a``'s cluster
        absorbs ``c``'s)."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"pair classifier: threshold must be in [0, 1], got {threshold}")

        def rule(a: Tensor, c: Tensor, d: Tensor) -> Tensor:
            f = pair_features(out, hit_pos, hit_energy, a, c, d)
            return torch.sigmoid(self(f)) >= threshold

        return rule


@torch.no_grad()
def gather_pair_samples(net: nn.Module, batches: Iterable[Any], t_beta: float = 0.3, radius: float = 2.5,
                        max_pairs_per_event: int = 200_000, seed: int = 0, views: int = 1) -> tuple[Tensor, Tensor]:
    """Features and truth labels (1: both hits of the same shower) of the candidate pairs of
    ``batches`` (simulated events with ``hit_shower``), the network frozen. Pairs with a noise hit
    have no right answer and are left out; an event with more than ``max_pairs_per_event`` pairs
    gives a uniform sample of them. ``views`` averages the network over rotations of each event
    (:func:`~gnnreco.tasks.calo.model.symmetric_views`), as the module's ``test_views`` does at
    inference: fit the classifier on the outputs it will see. Returns ``(features [P, F], labels [P])``."""
    gen = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    was = net.training
    net.eval()
    for b in batches:
        out = symmetric_views(net, b.x, b.batch, views)
        a, c, d = candidate_pairs(out, b.batch, t_beta=t_beta, radius=radius)
        hs = b.hit_shower
        keep = (hs[a] >= 0) & (hs[c] >= 0)
        a, c, d = a[keep], c[keep], d[keep]
        if a.numel() > max_pairs_per_event:
            pick = torch.randperm(a.numel(), generator=gen)[:max_pairs_per_event]
            a, c, d = a[pick], c[pick], d[pick]
        feats.append(pair_features(out, b.hit_pos, b.hit_energy, a, c, d))
        labels.append((hs[a] == hs[c]).float())
    net.train(was)
    if not feats:
        raise ValueError("gather_pair_samples: no events given")
    return torch.cat(feats), torch.cat(labels)


def fit_pair_classifier(features: Tensor, labels: Tensor, n_pid: int = 4, hidden: int = 32, steps: int = 3000,
                        batch_size: int = 4096, lr: float = 3e-3, seed: int = 0, n_features: int | None = None
                        ) -> tuple[PairClassifier, float]:
    """Fit a :class:`PairClassifier` (Adam, binary cross-entropy, minibatches drawn with replacement).
    Returns the classifier (eval mode) and the mean loss of the last 10 % of the steps. ``n_features``:
    the width of another feature set (e.g. :data:`~gnnreco.tasks.calo.hitshare.HIT_SHARE_FEATURES`);
    default the candidate pairs' :data:`PAIR_FEATURES` and two PID distributions."""
    if features.ndim != 2 or features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise ValueError(f"fit_pair_classifier: need features [P, F] and labels [P] with P > 0, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("fit_pair_classifier: features contain NaN or inf")
    torch.manual_seed(seed)
    clf = PairClassifier(n_pid=n_pid, hidden=hidden, n_features=n_features)
    if features.shape[1] != clf.mean.numel():
        raise ValueError(f"fit_pair_classifier: {features.shape[1]} features, the classifier expects "
                         f"{clf.mean.numel()} (n_pid={n_pid})")
    clf.mean.copy_(features.mean(0))
    clf.std.copy_(features.std(0) + 1e-6 if features.shape[0] > 1 else torch.ones_like(clf.std))
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    hist = []
    for step in range(steps):
        for g in opt.param_groups:  # cosine decay to 5 %
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * step / max(steps, 1))))
        idx = torch.randint(features.shape[0], (batch_size,), generator=gen)
        loss = nn.functional.binary_cross_entropy_with_logits(clf(features[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    clf.eval()
    tail = hist[-max(1, steps // 10):]
    return clf, float(np.mean(tail))


def save_pair_classifier(clf: PairClassifier, path: str | Path, record: dict | None = None) -> None:
    """Save ``clf`` (weights, PID classes, width) and an optional record of how it was fitted."""
    hidden = clf.mlp[0].out_features
    torch.save({"state_dict": clf.state_dict(), "n_pid": clf.n_pid, "hidden": hidden,
                "n_features": clf.mean.numel(), "record": record or {}}, str(path))


def load_pair_classifier(path: str | Path) -> PairClassifier:
    """A classifier saved by :func:`save_pair_classifier` (eval mode)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"pair classifier {str(path)!r} does not exist (fit it with "
                                "gnnreco.bench.calo --pair-events N, or fit_pair_classifier)")
    blob = torch.load(str(path), map_location="cpu")
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"{path}: not a pair classifier saved by save_pair_classifier")
    clf = PairClassifier(n_pid=int(blob.get("n_pid", 4)), hidden=int(blob.get("hidden", 32)),
                         n_features=blob.get("n_features"))
    clf.load_state_dict(blob["state_dict"])
    return clf.eval()
