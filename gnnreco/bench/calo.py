"""Benchmark of the calo task (filled in below the reference implementation)."""

from __future__ import annotations

import torch
from torch import Tensor


def reference_condensation_loss(*, beta: Tensor, x: Tensor, object_id: Tensor, weights: Tensor | None = None,
                                q_min: float, noise_threshold: int = 0, potential: str = "hinge",
                                distance_scale: Tensor | None = None) -> dict[str, Tensor]:
    r"""Dense :math:`O(NK)` object-condensation loss written directly from the paper's equations.

    The yardstick for values and memory when the ``object_condensation`` package is not installed;
    the ``"soft"`` potential is the HGCalML form (see :mod:`gnnreco.tasks.calo.loss`).
    """
    beta = beta.reshape(-1)
    object_id = object_id.reshape(-1)
    w = torch.ones_like(beta) if weights is None else weights.reshape(-1)
    ids = torch.unique(object_id[object_id > noise_threshold])
    m = (object_id[:, None] == ids[None, :]).to(beta.dtype)  # M_jk
    q = torch.atanh(beta) ** 2 + q_min
    alpha = torch.argmax(q[:, None] * m, dim=0)
    d2 = ((x[:, None, :] - x[alpha][None, :, :]) ** 2).sum(-1)
    pre = w[:, None] * q[:, None] * q[alpha][None, :]
    if potential == "soft":
        s = torch.ones_like(beta) if distance_scale is None else distance_scale.reshape(-1)
        d2 = d2 / (s[alpha][None, :] + 1e-4)
        f_att, f_rep = torch.log(torch.e * d2 / 2 + 1), torch.exp(-d2 / 2)
    else:
        f_att, f_rep = d2, torch.relu(1 - torch.sqrt(d2 + 1e-30))
    att = (pre * m * f_att).sum(0) / (m.sum(0) + 1e-9)
    rep = (pre * (1 - m) * f_rep).sum(0) / ((1 - m).sum(0) + 1e-9)
    if potential == "soft":
        coward = (1 - 1e-3 * torch.logsumexp(beta[:, None] / 1e-3 + torch.log(m), dim=0)).mean() + \
            (1 - (beta[:, None] * m).sum(0).clamp(0, 1)).mean()
    else:
        coward = (1 - beta[alpha]).mean()
    noise = beta[object_id <= noise_threshold].mean()
    return {"attractive": att.mean(), "repulsive": rep.mean(), "coward": coward, "noise": noise}
