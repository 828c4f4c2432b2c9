r"""Object-condensation loss (Kieseler, arXiv:2002.03605) without the :math:`N \times K` matrix.

Per hit :math:`j` the network predicts a condensation score :math:`\beta_j \in (0, 1)` and cluster
coordinates :math:`\mathbf{x}_j \in \mathbb{R}^C`. With the charge :math:`q_j = \operatorname{arctanh}^2
\beta_j + q_{min}`, the condensation point :math:`\alpha_k = \arg\max_{j \in k} q_j` of object
:math:`k`, membership :math:`M_{jk}` and hit weights :math:`w_j`:

.. math::
    V_{att} = \frac{1}{K}\sum_k \frac{\sum_j w_j q_j q_{\alpha_k} M_{jk}\,
        \lVert\mathbf{x}_j-\mathbf{x}_{\alpha_k}\rVert^2}{\sum_j M_{jk}}, \qquad
    V_{rep} = \frac{1}{K}\sum_k \frac{\sum_j w_j q_j q_{\alpha_k} (1-M_{jk})\,
        \mathrm{relu}(1-\lVert\mathbf{x}_j-\mathbf{x}_{\alpha_k}\rVert)}{\sum_j (1-M_{jk})}

    L_{coward} = \frac{1}{K}\sum_k (1-\beta_{\alpha_k}), \qquad
    L_{noise} = \frac{1}{N_B}\sum_{j \in B} \beta_j .

These are exactly the terms (and normalisations) of ``object_condensation.pytorch.losses
.condensation_loss``; :func:`condensation_loss` takes the same keyword arguments and returns the same
dictionary, so the two are interchangeable.

Memory. The attractive term and the β terms are :math:`O(N)` (every hit belongs to one object).
The repulsive term needs every (hit, condensation point) pair. Two exact strategies never hold an
:math:`N \times K` tensor:

* ``repulsive="chunked"`` (default): a custom autograd function evaluates
  :math:`S_k=\sum_j a_j (1-M_{jk})\,\phi(\lVert\mathbf{x}_j-\mathbf{y}_k\rVert^2)` over blocks of
  condensation points, and recomputes the blocks in the backward pass with the analytic gradient.
  It stores only :math:`\mathbf{x}, a, \mathbf{y}` (memory :math:`O(N + K C)` plus one block).
* ``repulsive="radius"``: the hinge vanishes beyond distance 1, so only pairs inside the unit ball
  contribute. They are found without gradients (blockwise), then the loss is evaluated with autograd
  on these :math:`E` pairs (memory :math:`O(E)`, the radius-graph variant of gnn_tracking).
  ``max_n_rep`` subsamples the pairs and re-weights them ("tiger"-style) to bound :math:`E`.

Variants (``potential``): ``"hinge"`` is the paper/package form above; ``"soft"`` is the HGCalML
soft potential with a predicted per-hit distance scale :math:`\sigma`:
:math:`\tilde d^2 = d^2/(\sigma_{\alpha_k}+10^{-4})`, attraction :math:`\log(e\,\tilde d^2/2 + 1)`,
Gaussian repulsion :math:`\exp(-\tilde d^2/2)` (no finite range, so only ``"chunked"``) and the
smooth-max β penalty :math:`1-\varepsilon\,\mathrm{LSE}(\beta_k/\varepsilon) + (1 -
\mathrm{clip}(\sum_{j\in k}\beta_j, 0, 1))`.

The payload terms follow the paper: hit weights :math:`\xi_j = (1-n_j)\operatorname{arctanh}^2\beta_j`
(noise hits carry none), :math:`L_p = \sum_j \xi_j L_j / \sum_j \xi_j`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from gnnreco.ops import scatter, scatter_sum

__all__ = [
    "OCInputError",
    "condensation_loss",
    "condensation_loss_radius",
    "condensation_loss_tiger",
    "payload_weights",
    "payload_loss",
    "oc_total",
]


class OCInputError(ValueError):
    """Bad input to the object-condensation loss (names the argument and what was expected)."""


# ----------------------------------------------------------------------------------------------
# input checks


def _flat(t: Tensor, name: str, n: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise OCInputError(f"condensation_loss: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1:
        raise OCInputError(f"condensation_loss: argument '{name}' must have shape [N] or [N, 1], got {list(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise OCInputError(f"condensation_loss: argument '{name}' has {t.shape[0]} rows, expected N={n} (rows of 'x')")
    return t


def _check_inputs(beta: Tensor, x: Tensor, object_id: Tensor, weights: Tensor | None, q_min: float):
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise OCInputError(f"condensation_loss: argument 'x' must be a [N, C] tensor, got "
                           f"{list(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    n = x.shape[0]
    if n == 0:
        raise OCInputError("condensation_loss: the event has zero hits (argument 'x' is [0, C])")
    beta = _flat(beta, "beta", n)
    object_id = _flat(object_id, "object_id", n)
    if object_id.is_floating_point():
        raise OCInputError(f"condensation_loss: argument 'object_id' must be an integer tensor, got {object_id.dtype}")
    if weights is None:
        weights = torch.ones_like(beta)
    weights = _flat(weights, "weights", n).to(beta.dtype)
    with torch.no_grad():
        if not torch.isfinite(x).all():
            raise OCInputError(f"condensation_loss: argument 'x' has {int((~torch.isfinite(x)).sum())} NaN/inf entries")
        if not torch.isfinite(beta).all():
            raise OCInputError(f"condensation_loss: argument 'beta' has {int((~torch.isfinite(beta)).sum())} NaN/inf entries")
        if (beta < 0).any() or (beta > 1).any():
            raise OCInputError("condensation_loss: argument 'beta' must lie in [0, 1] "
                               f"(got min {float(beta.min()):.3g}, max {float(beta.max()):.3g}); apply a sigmoid")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise OCInputError("condensation_loss: argument 'weights' must be finite and >= 0")
    if not math.isfinite(q_min) or q_min <= 0:
        raise OCInputError(f"condensation_loss: q_min must be a positive number, got {q_min}")
    return beta, x, object_id, weights


def _charge(beta: Tensor, q_min: float) -> Tensor:
    # arctanh(1) is infinite; keep one ulp below 1 so a saturated sigmoid gives a large, finite charge
    b = beta.clamp(max=1.0 - torch.finfo(beta.dtype).eps)
    return torch.atanh(b) ** 2 + q_min


def _objects(object_id: Tensor, noise_threshold: int):
    """Compact object index per hit (−1 for noise), number of objects K."""
    signal = object_id > noise_threshold
    obj = torch.full_like(object_id, -1, dtype=torch.long)
    if signal.any():
        _, inv = torch.unique(object_id[signal], return_inverse=True)
        obj[signal] = inv
        k = int(inv.max()) + 1
    else:
        k = 0
    return obj, signal, k


def _condensation_points(q: Tensor, obj: Tensor, signal: Tensor, k: int) -> Tensor:
    """:math:`\\alpha_k`: the first hit of each object with the largest charge (as ``torch.argmax``)."""
    idx = torch.arange(q.shape[0], device=q.device)
    qs, os_, is_ = q.detach()[signal], obj[signal], idx[signal]
    qmax = scatter(qs, os_, dim=0, dim_size=k, reduce="max")
    cand = torch.where(qs == qmax[os_], is_, torch.full_like(is_, q.shape[0]))
    return scatter(cand, os_, dim=0, dim_size=k, reduce="min")


# ----------------------------------------------------------------------------------------------
# blockwise pair sums with an analytic backward


def _phi(u: Tensor, kind: str) -> Tensor:
    if kind == "hinge":
        return torch.relu(1.0 - torch.sqrt(u))
    return torch.exp(-0.5 * u)


def _dphi(u: Tensor, kind: str) -> Tensor:
    """dφ/du; the hinge derivative is −1/(2√u) inside the unit ball and 0 at u = 0 (as cdist)."""
    if kind == "hinge":
        inside = (u < 1.0) & (u > 0.0)
        return torch.where(inside, -0.5 / torch.sqrt(torch.where(inside, u, torch.ones_like(u))), torch.zeros_like(u))
    return -0.5 * torch.exp(-0.5 * u)


def _block_rows(n: int, max_elements: int) -> int:
    return max(1, int(max_elements) // max(n, 1))


class _ChunkedPairSum(torch.autograd.Function):
    r""":math:`S_k = \sum_j a_j\,[o_j \ne k][b_j = b_k]\,\phi(c_k \lVert\mathbf{x}_j-\mathbf{y}_k\rVert^2)`, blockwise over k."""

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, y: Tensor, c: Tensor, obj: Tensor, ev: Tensor, ev_k: Tensor,
                kind: str, max_elements: int):
        n, k = x.shape[0], y.shape[0]
        out = x.new_zeros(k)
        xx = (x * x).sum(1)
        step = _block_rows(n, max_elements)
        for s in range(0, k, step):
            e = min(k, s + step)
            yb = y[s:e]
            d2 = (xx[:, None] + (yb * yb).sum(1)[None, :] - 2.0 * (x @ yb.T)).clamp_(min=0.0)
            u = d2 * c[None, s:e]
            m = (obj[:, None] != torch.arange(s, e, device=x.device)[None, :]) & (ev[:, None] == ev_k[None, s:e])
            out[s:e] = ((_phi(u, kind) * m) * a[:, None]).sum(0)
        ctx.save_for_backward(x, a, y, c, obj, ev, ev_k)
        ctx.kind, ctx.max_elements = kind, max_elements
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, a, y, c, obj, ev, ev_k = ctx.saved_tensors
        kind = ctx.kind
        n, k = x.shape[0], y.shape[0]
        gx = torch.zeros_like(x)
        ga = torch.zeros_like(a)
        gy = torch.zeros_like(y)
        gc = torch.zeros_like(c)
        xx = (x * x).sum(1)
        step = _block_rows(n, ctx.max_elements)
        for s in range(0, k, step):
            e = min(k, s + step)
            yb = y[s:e]
            d2 = (xx[:, None] + (yb * yb).sum(1)[None, :] - 2.0 * (x @ yb.T)).clamp_(min=0.0)
            cb = c[None, s:e]
            u = d2 * cb
            m = ((obj[:, None] != torch.arange(s, e, device=x.device)[None, :])
                 & (ev[:, None] == ev_k[None, s:e])).to(x.dtype)
            gm = g[None, s:e] * m
            if ctx.needs_input_grad[1]:
                ga += (gm * _phi(u, kind)).sum(1)
            dp = gm * _dphi(u, kind) * a[:, None]  # dS/du weighted by the upstream gradient
            if ctx.needs_input_grad[3]:
                gc[s:e] = (dp * d2).sum(0)
            G = 2.0 * dp * cb  # d/dx_j of u_jk = 2 c_k (x_j − y_k)
            rs = G.sum(1)
            gx += x * rs[:, None] - G @ yb
            gy[s:e] = yb * G.sum(0)[:, None] - G.T @ x
        return gx, ga, gy, gc, None, None, None, None, None


# ----------------------------------------------------------------------------------------------
# public API


def _zero(like: Tensor) -> Tensor:
    return like.sum() * 0.0


def condensation_loss(
    *,
    beta: Tensor,
    x: Tensor,
    object_id: Tensor,
    weights: Tensor | None = None,
    q_min: float,
    noise_threshold: int = 0,
    repulsive: str = "chunked",
    potential: str = "hinge",
    distance_scale: Tensor | None = None,
    max_n_rep: int = 0,
    max_elements: int = 1 << 22,
    generator: torch.Generator | None = None,
    batch: Tensor | None = None,
) -> dict[str, Tensor]:
    r"""Object-condensation potentials and β terms of one event (or of a batch with offset ids).

    Args:
        beta: condensation scores :math:`\beta_j \in [0, 1]`.
        x: cluster coordinates :math:`\mathbf{x}_j`.
        object_id: object label per hit; hits with ``object_id <= noise_threshold`` are noise.
        weights: hit weights :math:`w_j` on the potentials (default 1).
        q_min: minimal charge :math:`q_{min} > 0`.
        noise_threshold: labels ``<=`` this are noise (package convention: 0).
        repulsive: ``"chunked"`` (exact, :math:`O(N + KC)` memory) or ``"radius"`` (exact for the
            hinge, :math:`O(E)` memory over pairs closer than 1).
        potential: ``"hinge"`` (paper) or ``"soft"`` (HGCalML soft potentials; see module doc).
        distance_scale: predicted per-hit distance scale :math:`\sigma_j > 0` (``"soft"`` only;
            default 1).
        max_n_rep: with ``repulsive="radius"``, keep at most about this many repulsive pairs by
            random subsampling and re-weighting (0 keeps all).
        max_elements: block size (pairs) of the chunked evaluation; bounds the peak memory.
        generator: random generator of the subsampling.
        batch: event index per hit for a batch of events: hits only repel condensation points of
            their own event and the repulsive normaliser counts the hits of that event; the object
            terms are averaged over all objects of the batch. Object ids must differ across events.

    Returns:
        ``{"attractive", "repulsive", "coward", "noise"}`` scalar tensors, plus ``"n_objects"``,
        ``"n_noise"`` (plain ints as 0-d tensors), ``"coward_log"`` (:math:`-\frac{1}{K}\sum_k \log\beta_{\alpha_k}`,
        an optional extra β term) and, for ``"radius"``, ``"n_rep"``. An event without
        objects gives zero potentials and coward term; an event without noise gives a zero noise term.

    Raises:
        OCInputError: zero hits, NaN/inf in ``beta``/``x``, β outside [0, 1], shape mismatch.

    Shapes:
        beta ``[N]`` or ``[N, 1]``; x ``[N, C]``; object_id ``[N]`` or ``[N, 1]``; weights ``[N]``.
    """
    if repulsive not in ("chunked", "radius"):
        raise OCInputError(f"condensation_loss: repulsive must be 'chunked' or 'radius', got {repulsive!r}")
    if potential not in ("hinge", "soft"):
        raise OCInputError(f"condensation_loss: potential must be 'hinge' or 'soft', got {potential!r}")
    if potential == "soft" and repulsive == "radius":
        raise OCInputError("condensation_loss: the soft (Gaussian) repulsion has no finite range; use repulsive='chunked'")
    beta, x, object_id, weights = _check_inputs(beta, x, object_id, weights, q_min)
    obj, signal, k = _objects(object_id, noise_threshold)
    n_noise = int((~signal).sum())
    noise = beta[~signal].mean() if n_noise else _zero(beta)
    out_extra = {"n_objects": torch.tensor(k), "n_noise": torch.tensor(n_noise)}
    if k == 0:
        z = _zero(beta) + _zero(x)
        return {"attractive": z, "repulsive": z, "coward": z, "noise": noise, **out_extra}

    q = _charge(beta, q_min)
    alpha = _condensation_points(q, obj, signal, k)
    x_a, q_a = x[alpha], q[alpha]
    sig_idx = torch.nonzero(signal, as_tuple=True)[0]
    o_s = obj[sig_idx]
    n_k = scatter_sum(torch.ones_like(q[sig_idx]), o_s, dim=0, dim_size=k)
    eps = 1e-9
    d2_member = ((x[sig_idx] - x_a[o_s]) ** 2).sum(1)
    if potential == "soft":
        if distance_scale is None:
            distance_scale = torch.ones_like(beta)
        sigma = _flat(distance_scale, "distance_scale", x.shape[0])
        c = 1.0 / (sigma[alpha] + 1e-4)
        f_att = torch.log(math.e * d2_member * c[o_s] / 2.0 + 1.0)
    else:
        c = torch.ones_like(q_a)
        f_att = d2_member
    wq = weights * q
    v_att_k = scatter_sum(wq[sig_idx] * f_att, o_s, dim=0, dim_size=k) * q_a / (n_k + eps)
    attractive = v_att_k.mean()

    if batch is None:
        ev = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    else:
        ev = _flat(batch, "batch", x.shape[0]).long()
    ev_k = ev[alpha]
    if batch is not None and bool((ev[sig_idx] != ev_k[o_s]).any()):
        raise OCInputError("condensation_loss: an object id spans several events of 'batch'; offset the ids per event")
    n_ev = torch.bincount(ev).to(q.dtype)
    n_rep_k = n_ev[ev_k] - n_k
    extra = {}
    if repulsive == "chunked":
        s_k = _ChunkedPairSum.apply(x, wq, x_a, c, obj, ev, ev_k, potential, max_elements)
        v_rep_k = q_a * s_k / (n_rep_k + eps)
        rep = v_rep_k.mean()
    else:
        rep, n_rep = _radius_repulsive(x, wq, x_a, q_a, obj, ev, ev_k, n_rep_k + eps, k, max_n_rep, max_elements,
                                       generator)
        extra["n_rep"] = n_rep

    if potential == "soft":
        eps_lse = 1e-3
        bmax = scatter(beta[sig_idx].detach(), o_s, dim=0, dim_size=k, reduce="max")
        lse = scatter_sum(torch.exp((beta[sig_idx] - bmax[o_s]) / eps_lse), o_s, dim=0, dim_size=k)
        smooth_max = bmax + eps_lse * torch.log(lse)
        bsum = scatter_sum(beta[sig_idx], o_s, dim=0, dim_size=k)
        coward = (1.0 - smooth_max).mean() + (1.0 - bsum.clamp(0.0, 1.0)).mean()
    else:
        coward = (1.0 - beta[alpha]).mean()
    # -log beta at the condensation points (pytorch_cmspepr's short-range form): unlike 1 - beta its
    # gradient through a sigmoid does not vanish as beta -> 0, which keeps beta from collapsing
    extra["coward_log"] = -torch.log(beta[alpha].clamp(min=1e-6)).mean()
    return {"attractive": attractive, "repulsive": rep, "coward": coward, "noise": noise, **out_extra, **extra}


def _radius_repulsive(x, wq, x_a, q_a, obj, ev, ev_k, norm_k, k, max_n_rep, max_elements, generator):
    """Hinge repulsion over the (hit, condensation point) pairs closer than 1, found blockwise."""
    n = x.shape[0]
    step = _block_rows(n, max_elements)
    rows, cols = [], []
    with torch.no_grad():
        xd, yd = x.detach(), x_a.detach()
        xx = (xd * xd).sum(1)
        for s in range(0, k, step):
            e = min(k, s + step)
            yb = yd[s:e]
            d2 = xx[:, None] + (yb * yb).sum(1)[None, :] - 2.0 * (xd @ yb.T)
            close = ((d2 < 1.0) & (obj[:, None] != torch.arange(s, e, device=x.device)[None, :])
                     & (ev[:, None] == ev_k[None, s:e]))
            j, kk = torch.nonzero(close, as_tuple=True)
            rows.append(j)
            cols.append(kk + s)
    j = torch.cat(rows)
    kk = torch.cat(cols)
    n_rep = torch.tensor(int(j.numel()))
    weight = torch.ones(j.shape[0], dtype=x.dtype, device=x.device)
    if 0 < max_n_rep < j.numel():
        keep = torch.randperm(j.numel(), generator=generator, device="cpu")[:max_n_rep].to(x.device)
        j, kk = j[keep], kk[keep]
        weight = torch.full((j.shape[0],), n_rep.item() / max_n_rep, dtype=x.dtype, device=x.device)
    d = torch.sqrt(((x[j] - x_a[kk]) ** 2).sum(1).clamp(min=1e-30))
    contrib = weight * wq[j] * torch.relu(1.0 - d)
    s_k = scatter_sum(contrib, kk, dim=0, dim_size=k)
    return (q_a * s_k / norm_k).mean(), n_rep


def condensation_loss_radius(**kwargs) -> dict[str, Tensor]:
    """:func:`condensation_loss` with ``repulsive="radius"`` (memory :math:`O(E)`)."""
    kwargs.setdefault("repulsive", "radius")
    return condensation_loss(**kwargs)


def condensation_loss_tiger(*, max_n_rep: int = 0, **kwargs) -> dict[str, Tensor]:
    """Radius-graph repulsion with at most ``max_n_rep`` subsampled, re-weighted pairs ("tiger")."""
    return condensation_loss(repulsive="radius", max_n_rep=max_n_rep, **kwargs)


def payload_weights(beta: Tensor, object_id: Tensor, *, noise_threshold: int = 0, kind: str = "paper") -> Tensor:
    r"""Payload hit weights :math:`\xi_j`.

    ``"paper"``: :math:`\xi_j = (1-n_j)\operatorname{arctanh}^2\beta_j`; ``"beta2"``: the softer
    HGCalML form :math:`(1-n_j)\beta_j^2`. Both are detached-free (gradients reach β). Noise hits get 0.
    """
    b = _flat(beta, "beta")
    oid = _flat(object_id, "object_id", b.shape[0])
    sig = (oid > noise_threshold).to(b.dtype)
    if kind == "paper":
        return sig * torch.atanh(b.clamp(max=1.0 - torch.finfo(b.dtype).eps)) ** 2
    if kind == "beta2":
        return sig * b ** 2
    raise OCInputError(f"payload_weights: kind must be 'paper' or 'beta2', got {kind!r}")


def payload_loss(
    pred: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    xi: Tensor,
    *,
    energy_quantiles: bool = False,
    quantiles: tuple[float, float] = (0.16, 0.84),
) -> dict[str, Tensor]:
    r"""β-weighted payload losses :math:`L_p = \sum_j \xi_j L_j / \sum_j \xi_j` per head.

    Per hit, against the truth of its object:

    * energy: :math:`(E_t-E_p)^2/(E_t+10^{-3})` (HGCalML, without its soft clipping); pinball
      losses at :math:`\tau` = ``quantiles`` on the two extra energy outputs, scaled by
      :math:`1/\sqrt{E_t}`;
    * position: Huber on :math:`|\Delta\mathbf{x}|/100` mm (10 cm);
    * time: :math:`(t-\hat t)^2/(\hat\sigma^2+0.1)+\hat\sigma^2` when a time uncertainty is predicted,
      else squared error;
    * PID: cross entropy (targets < 0 are ignored).

    Args:
        pred: ``energy`` [N], optional ``energy_q`` [N, 2], ``position`` [N, 2 or 3], ``time`` [N],
            ``time_sigma`` [N], ``pid_logits`` [N, P].
        target: ``energy`` [N], ``position``, ``time``, ``pid`` [N] long, per hit (its object's truth).
        xi: payload weights :math:`\xi_j` [N].
    """
    den = xi.sum().clamp(min=1e-6)
    out: dict[str, Tensor] = {}
    if "energy" in pred and "energy" in target:
        et = target["energy"]
        le = (et - pred["energy"]) ** 2 / (et.abs() + 1e-3)
        out["energy"] = (xi * le).sum() / den
        if energy_quantiles and "energy_q" in pred:
            lq = 0.0
            for i, tau in enumerate(quantiles):
                diff = et - pred["energy_q"][:, i]
                lq = lq + torch.maximum(tau * diff, (tau - 1.0) * diff) / (et.abs() + 1e-3).sqrt()
            out["energy_quantile"] = (xi * lq).sum() / den
    if "position" in pred and "position" in target:
        p = pred["position"]
        t = target["position"][:, : p.shape[1]]
        lp = torch.nn.functional.huber_loss(p / 100.0, t / 100.0, reduction="none").sum(1)
        out["position"] = (xi * lp).sum() / den
    if "time" in pred and "time" in target:
        dt2 = (target["time"] - pred["time"]) ** 2
        if "time_sigma" in pred:
            s2 = pred["time_sigma"] ** 2
            lt = dt2 / (s2 + 0.1) + s2
        else:
            lt = dt2
        out["time"] = (xi * lt).sum() / den
    if "pid_logits" in pred and "pid" in target:
        tgt = target["pid"]
        ok = tgt >= 0
        ce = torch.nn.functional.cross_entropy(pred["pid_logits"], tgt.clamp(min=0), reduction="none")
        w = xi * ok.to(xi.dtype)
        out["pid"] = (w * ce).sum() / w.sum().clamp(min=1e-6)
    return out


def oc_total(parts: Mapping[str, Tensor], *, s_c: float = 1.0, s_b: float = 1.0,
             payload_scale: float = 1.0, payload_weights_by_name: Mapping[str, float] | None = None,
             s_log: float = 0.0) -> Tensor:
    r"""Paper total :math:`L = s_p L_p + s_C(L_\beta + L_V)` with :math:`L_\beta = L_{coward} + s_B L_{noise}`
    (plus :math:`s_{log}\,L_{coward,log}` when ``s_log`` > 0)."""
    lv = parts["attractive"] + parts["repulsive"]
    lb = parts["coward"] + s_b * parts["noise"]
    if s_log > 0:
        lb = lb + s_log * parts["coward_log"]
    total = s_c * (lv + lb)
    pw = dict(payload_weights_by_name or {})
    for name in ("energy", "energy_quantile", "position", "time", "pid", "shower_energy", "radius"):
        if name in parts:
            total = total + payload_scale * pw.get(name, 1.0) * parts[name]
    return total
