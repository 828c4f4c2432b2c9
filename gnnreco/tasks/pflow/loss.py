r"""The MLPF loss (reference §3.3, PyTorch HEAD version), masked so that padding never contributes.

.. math::
    L = w_b\,\mathrm{CE}(\text{particle vs none})
      + \frac{1}{N_{elem}} \sum_{i \in \text{true}} \mathrm{FL}_\gamma(\text{pid}_i)
      + w_q\,\mathrm{CE}_{\text{true}}(q)
      + \sum_k w_k\, \mathrm{MSE}_{\text{true}}(r_k)
      \;[+\ w_\chi\, \chi^2_{p_T}]

with the focal loss :math:`\mathrm{FL}_\gamma = -(1 - p_t)^\gamma \log p_t` (γ = 2), the regression
targets :math:`r = (\log p_T/p_{T,elem},\ \eta,\ \sin\phi,\ \cos\phi,\ \log E/E_{elem})` evaluated on true
particles only, weights 1 / 0.01 / 0.01 / 0.01 / 1 by default, and the p_T and E terms optionally
multiplied by :math:`\sqrt{p_{T,target}}`. ``N_elem`` counts real (unpadded) elements.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["focal_loss_multiclass", "mlpf_loss", "regression_targets"]


def focal_loss_multiclass(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    r"""Per-element multi-class focal loss :math:`-(1-p_t)^\gamma \log p_t`.

    Shapes:
        logits :math:`(M, C)`, target :math:`(M,)` long → :math:`(M,)`.
    """
    logp = F.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return -((1 - logp.exp()).clamp(min=0) ** gamma) * logp


def regression_targets(X: Tensor, y: Tensor) -> Tensor:
    r"""Targets :math:`(\log p_T/p_{T,elem}, \eta, \sin\phi, \cos\phi, \log E/E_{elem})` of each element.

    Elements without a target (class 0) get zeros (they are masked out of the loss).

    Shapes:
        X :math:`(*, 12)`, y :math:`(*, 7)` → :math:`(*, 5)`.
    """
    tiny = 1e-6
    has = (y[..., 0] > 0).to(X.dtype)
    lpt = torch.log(y[..., 2].clamp(min=tiny) / X[..., 1].clamp(min=tiny)) * has
    le = torch.log(y[..., 6].clamp(min=tiny) / X[..., 5].clamp(min=tiny)) * has
    return torch.stack([lpt, y[..., 3], y[..., 4], y[..., 5], le], -1)


def mlpf_loss(out: Sequence[Tensor], X: Tensor, y: Tensor, mask: Tensor, binary_weight: float = 10.0,
              focal_gamma: float = 2.0, charge_weight: float = 1.0,
              reg_weights: Sequence[float] = (1.0, 0.01, 0.01, 0.01, 1.0), sqrt_pt_weight: bool = True,
              pt_linear_weight: float = 0.0, pt_linear_scale: float = 1.0,
              pt_linear_on_all: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    r"""MLPF loss of a padded batch.

    Args:
        out: network outputs ``(binary, pid, charge, reg, p4)`` (see :class:`~gnnreco.tasks.pflow.model.MLPFNet`).
        X: elements :math:`(B, N, 12)`.
        y: targets :math:`(B, N, 7)` ``[class, q, p_T, η, sinφ, cosφ, E]``.
        mask: :math:`(B, N)` bool, True for real elements; padded entries never enter the loss.
        binary_weight: :math:`w_b`.
        focal_gamma: γ of the PID focal loss.
        charge_weight: :math:`w_q`.
        reg_weights: weights of the five regression terms.
        sqrt_pt_weight: multiply the p_T and E terms by √p_T,target.
        pt_linear_weight: :math:`w_\chi`, weight of an extra term on the *linear* transverse momentum,
            :math:`\chi^2_{p_T} = (p_T - p_{T,target})^2 / (p_{T,elem} + s)` on true particles (the
            calorimeter variance grows like the energy, so this is a χ² per element). The log-ratio
            MSE estimates a geometric mean; jets sum linear p_T, and this term pulls towards the
            conditional mean and weighs elements by their absolute contribution. 0 (default) = reference loss.
        pt_linear_scale: :math:`s` in GeV.
        pt_linear_on_all: apply the χ² term to every real element, with :math:`p_{T,target} = 0` for
            elements without a target: the regressed p_T then hedges towards zero where an element is
            probably not a particle, so a false positive carries little momentum into the jets.

    Returns:
        ``(loss, parts)`` with parts ``binary, pid, charge, reg_pt, reg_eta, reg_sin, reg_cos, reg_e``.
    """
    binary, pid, charge, reg, p4 = out
    m = mask.to(torch.bool)
    n_elem = m.sum().clamp(min=1).to(X.dtype)
    cls = y[..., 0].long()
    true = m & (cls > 0)
    n_true = true.sum().clamp(min=1).to(X.dtype)
    l_bin = F.cross_entropy(binary[m], (cls[m] > 0).long(), reduction="sum") / n_elem
    l_pid = focal_loss_multiclass(pid[true], cls[true], focal_gamma).sum() / n_elem
    q_idx = (y[..., 1].round().clamp(-1, 1) + 1).long()
    l_q = F.cross_entropy(charge[true], q_idx[true], reduction="sum") / n_true
    t = regression_targets(X, y)[true]
    pred = torch.stack([reg[..., 0], p4[..., 1], p4[..., 2], p4[..., 3], reg[..., 4]], -1)[true]
    se = (pred - t) ** 2
    if sqrt_pt_weight:
        w = y[..., 2][true].clamp(min=0).sqrt()
        se = torch.cat([se[:, :1] * w[:, None], se[:, 1:4], se[:, 4:] * w[:, None]], 1)
    per_term = se.sum(0) / n_true
    rw = torch.as_tensor(list(reg_weights), dtype=X.dtype, device=X.device)
    loss = binary_weight * l_bin + l_pid + charge_weight * l_q + (rw * per_term).sum()
    names = ("reg_pt", "reg_eta", "reg_sin", "reg_cos", "reg_e")
    parts = {"binary": l_bin.detach(), "pid": l_pid.detach(), "charge": l_q.detach()}
    if pt_linear_weight > 0:
        sel = m if pt_linear_on_all else true
        pt_t = torch.where(cls > 0, y[..., 2], torch.zeros_like(y[..., 2]))[sel]
        pt_elem = X[..., 1][sel]
        chi2 = (p4[..., 0][sel] - pt_t) ** 2 / (pt_elem.clamp(min=0) + pt_linear_scale)
        l_lin = chi2.sum() / (n_elem if pt_linear_on_all else n_true)
        loss = loss + pt_linear_weight * l_lin
        parts["pt_linear"] = l_lin.detach()
    parts.update({k: per_term[i].detach() for i, k in enumerate(names)})
    return loss, parts
