"""Track–cluster link features: the energy bookkeeping of rule-based PF, as extra MLPF element columns.

A rule-based PF algorithm (:mod:`gnnreco.tasks.pflow.baseline`) links each track to the nearest ECAL and
HCAL cluster around its calorimeter impact, groups linked elements into *blocks*, and compares the
calorimeter energy of a block with the summed momentum of its tracks: the excess is neutral energy.
A message-passing network with normalised aggregation (GHConv, :math:`D^{-1/2} A D^{-1/2}`) averages
rather than sums its neighbours, so these sums are hard for it to form. :func:`link_features` computes
them once per event, with the same links as the baseline, as four columns appended to the 12 Delphes
element features (:data:`LINK_FEATURES`):

* ``link_sum`` — cluster: :math:`\\sum p` of the (non-μ) tracks linked to it; track: :math:`\\sum E` of the
  clusters it is linked to;
* ``link_excess`` — calorimeter minus tracks at that link: cluster :math:`E - \\sum p`, track
  :math:`\\sum E - p` (0 for a muon-flagged track);
* ``block_p`` — :math:`\\sum p` of the non-μ tracks of the element's block;
* ``block_e`` — :math:`\\sum E` of the clusters of the element's block.

Links (as in the baseline): track (η_out, φ_out) → nearest ECAL cluster within ΔR < ``ecal_link`` and
nearest HCAL cluster within ΔR < ``hcal_link``; ECAL cluster → nearest HCAL cluster within ``hcal_link``.
Nearest neighbours come from a k-d tree with periodic φ, so the cost is O(N log N) per event.

The network reads them with ``MLPFNet(extra_features=4)`` (inputs ``X[B, N, 16]``); the first 12
columns keep the documented schema, so readers and stored events are unchanged and the columns are
recomputed from ``X`` wherever they are needed (:func:`with_link_features`).
"""

from __future__ import annotations

import numpy as np

from gnnreco.tasks.pflow.baseline import pf_links

__all__ = ["LINK_FEATURES", "link_features", "with_link_features"]

LINK_FEATURES = ("link_sum", "link_excess", "block_p", "block_e")

def link_features(X: np.ndarray, ecal_link: float = 0.05, hcal_link: float = 0.15) -> np.ndarray:
    """Four link features per element (:data:`LINK_FEATURES`) of one event.

    Args:
        X: elements :math:`(N, 12)` (Delphes schema; only the first 12 columns are read).
        ecal_link: ΔR of track–ECAL links.
        hcal_link: ΔR of track–HCAL and ECAL–HCAL links.

    Returns:
        :math:`(N, 4)` float32, in GeV.
    """
    X = np.asarray(X, np.float64)
    n = len(X)
    out = np.zeros((n, len(LINK_FEATURES)))
    if n == 0:
        return out.astype(np.float32)
    lk = pf_links(X, ecal_link, hcal_link)
    trk, ecal, hcal, te, th, block = lk.trk, lk.ecal, lk.hcal, lk.te, lk.th, lk.block
    e = X[:, 5]
    p_trk = np.where(X[trk, 10] > 0.5, 0.0, e[trk])  # muons leave only a MIP: their p is not calorimeter energy
    # element-level sums over the direct track–cluster links
    link_sum = np.zeros(n)
    for ok, cl in ((te >= 0, ecal[te[te >= 0]]), (th >= 0, hcal[th[th >= 0]])):
        np.add.at(link_sum, cl, p_trk[ok])
        np.add.at(link_sum, trk[ok], e[cl])
    out[:, 0] = link_sum
    typ = X[:, 0]
    is_cl = typ == 1
    out[:, 1] = np.where(is_cl, e - link_sum, link_sum - np.where(typ == 2, e, 0.0))
    out[trk[X[trk, 10] > 0.5], 1] = 0.0
    # block sums over connected components of all links
    n_blocks = int(block.max()) + 1
    bp = np.bincount(block[trk], p_trk, n_blocks)
    be = np.bincount(block, np.where(is_cl, e, 0.0), n_blocks)
    out[:, 2] = bp[block]
    out[:, 3] = be[block]
    return out.astype(np.float32)


def with_link_features(X: np.ndarray, **kw: float) -> np.ndarray:
    """``X`` :math:`(N, 12)` with the :func:`link_features` columns appended: :math:`(N, 16)` float32."""
    X = np.asarray(X, np.float32)
    if X.ndim != 2 or X.shape[1] < 12:
        raise ValueError(f"X must have shape [N, 12] (Delphes element schema), got {tuple(X.shape)}")
    return np.concatenate([X[:, :12], link_features(X[:, :12], **kw)], 1)
