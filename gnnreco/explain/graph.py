r"""Relevance through message passing: LRP forwards of gnnreco's graph layers.

A message-passing layer gathers node features along the edges, forms messages, and scatters them
onto the targets. In the gradient × input picture (:mod:`gnnreco.explain.rules`):

* **gather** :math:`x_j \to m_{ji}`: the relevance of all copies of :math:`x_j` adds up at node j;
* **scatter-sum / mean** :math:`a_i = \sum_j m_{ji}` (or divided by the constant degree):
  :math:`R_{ji} = m_{ji}\, R_{a_i} / a_i` per feature — in proportion to each message's contribution;
* **scatter-max**: all relevance of :math:`a_i` goes to the arg-max message;
* **std** (Interaction Network multi-aggregation): :math:`R_{ji} \propto (m_{ji} - \bar m_i)^2`, the
  message's share of the variance;
* **GravNet** messages :math:`w_{ij} f_j` with :math:`w_{ij} = e^{-10 d_{ij}^2}`: the weights depend
  only on the learned space, whose projection gets the ``detach`` rule (as xai4hep uses the adjacency
  matrix as a weight), so relevance goes to the messages in proportion to :math:`w_{ij} f_j`;
* **gates** (MLPF GHConv :math:`g \odot \hat A h W_t + (1-g) \odot h W_h`) and the GNN-LSH Gaussian
  kernel are held constant in the same way.

Everything is evaluated on the actual (sparse) edge index, so the relevance of a layer's messages is
an ``[E, F]`` tensor; GravNet's kNN graph and MLPF's LSH bins are recorded with their messages.

Modules with children are *audited*: their ``forward`` does only linear work between child modules
(concatenation, indexing, sums, scatter-sum/mean/max, residual additions), and the non-linear parts go
through the taps of :mod:`gnnreco.explain.tap`, which apply the rules above inside an explanation (every
gnnreco task model works this way). A custom model may instead register an *LRP forward* that computes the
same values with those rules (:func:`register_composite`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gnnreco.explain.propagate import Message, current_tape
from gnnreco.explain.rules import _safe_ratio, graft

__all__ = ["register_composite", "composite_handler", "supported_composites", "lrp_aggregate",
           "lrp_multi_aggregate", "pass_through"]

_AUDITED: dict[type, bool | Callable] = {}
_LAZY: dict[str, str | bool] = {}  # "module:Class" -> name of the LRP forward in this file, or True


def register_composite(cls: type, forward: Callable | None = None) -> None:
    """Declare ``cls`` explainable: audited (``forward=None``) or with an LRP ``forward(self, ...)``."""
    _AUDITED[cls] = True if forward is None else forward


def _resolve_lazy() -> None:
    import importlib

    for key in list(_LAZY):
        modname, clsname = key.split(":")
        try:
            cls = getattr(importlib.import_module(modname), clsname)
        except Exception:  # noqa: BLE001 - a task package that is not importable is simply not supported
            continue
        target = _LAZY.pop(key)
        register_composite(cls, None if target is True else globals()[str(target)])


def composite_handler(mod: nn.Module) -> bool | Callable | None:
    """True for an audited composite, its LRP forward, or None if the type is not supported."""
    _resolve_lazy()
    return _AUDITED.get(type(mod))


def supported_composites() -> list[str]:
    _resolve_lazy()
    return sorted(c.__name__ for c in _AUDITED)


# --------------------------------------------------------------------------- primitives
def pass_through(x: Tensor, y: Tensor) -> Tensor:
    """Ratio rule for a functional element-wise op ``y = f(x)``: :math:`R_{in} = R_{out}`."""
    out = graft(y, x * _safe_ratio(y.detach(), x.detach()))
    tape = current_tape()
    if tape is not None:
        tape.ledger.watch("epsilon", out, torch.where(x.detach() == 0, y.detach(), torch.zeros_like(y)))
    return out


def _std_rule(src: Tensor, index: Tensor, dim_size: int, value: Tensor) -> Tensor:
    """Grafted std aggregation: value ``value``; relevance to messages :math:`\\propto (m - \\bar m)^2`."""
    from gnnreco.ops import scatter

    mean = scatter(src.detach(), index, dim=0, dim_size=dim_size, reduce="mean")
    dev2 = (src.detach() - mean[index]) ** 2
    tot = scatter(dev2, index, dim=0, dim_size=dim_size, reduce="sum")
    share = _safe_ratio(dev2, tot[index])  # share of each message in its group's variance
    # surrogate: a sum over messages of src * c with gradient c = share * std / src (R_msg = share * R_std)
    c = _safe_ratio(share * value.detach()[index], src.detach())
    surrogate = scatter(src * c, index, dim=0, dim_size=dim_size, reduce="sum")
    out = graft(value, surrogate)
    tape = current_tape()
    if tape is not None:  # groups with zero variance or zero messages cannot pass relevance on
        lost = value.detach() - scatter((src * c).detach(), index, dim=0, dim_size=dim_size, reduce="sum")
        tape.ledger.watch("epsilon", out, lost)
    return out


def lrp_aggregate(src: Tensor, index: Tensor, dim_size: int, reduce: str, name: str = "agg",
                  source: Tensor | None = None) -> Tensor:
    """One aggregation with its relevance rule; records the messages on the current tape."""
    from gnnreco.nn.interaction_network import aggregate

    tape = current_tape()
    if tape is not None:
        src = tape.message(f"{name}.{reduce}", src, index, source)
    value = aggregate(src, index, dim_size, reduce)
    if reduce == "std":
        return _std_rule(src, index, dim_size, value)
    if reduce not in ("sum", "mean", "max", "min"):
        raise ValueError(f"LRP: aggregation {reduce!r} has no relevance rule; supported: sum, mean, max, min, std")
    return value


def lrp_multi_aggregate(src: Tensor, index: Tensor, dim_size: int, reductions: Sequence[str], name: str = "agg",
                        source: Tensor | None = None) -> Tensor:
    """:func:`lrp_aggregate` for several reductions, concatenated along features."""
    return torch.cat([lrp_aggregate(src, index, dim_size, r, name, source) for r in reductions], dim=-1)


# --------------------------------------------------------------------------- MLPF
def _lsh_message(name: str, agg: Tensor, src: Tensor, A: Tensor, norm: Tensor, perm: Tensor):
    r"""Relevance of the bin-internal messages j → i of one GHConv step, summed over features:
    :math:`R_{ji} = \hat A_{ij} \sum_f (n_j f_{t,jf})\, g_{if}` (``[B·K·S·S]`` entries, O(E))."""

    def make() -> Message:
        B, K, S, _ = A.shape
        g = agg.grad if agg.grad is not None else torch.zeros_like(agg)
        r = torch.einsum("bkif,bkjf->bkij", g, src) * A * norm  # norm: [B,K,S,1] multiplies row i
        ids = perm.reshape(B, K, S)
        off = (torch.arange(B, device=ids.device) * perm.shape[1]).view(B, 1, 1)
        gid = ids + off
        tgt = gid.unsqueeze(-1).expand(B, K, S, S)
        srcid = gid.unsqueeze(-2).expand(B, K, S, S)
        keep = A.detach() > 0
        rel = r[keep].detach().unsqueeze(-1)
        return Message(name, rel, tgt[keep], srcid[keep], relevance=rel)

    return make


# --------------------------------------------------------------------------- transformer (AttnLRP / CP-LRP)
def lrp_attention(name: str, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    r"""Attention :math:`a_i = \sum_j A_{ij} v_j` with the weights held constant (what
    :func:`gnnreco.explain.tap.attention` runs inside an explanation).

    :math:`A = \mathrm{softmax}(q k^\top/\sqrt d + \text{mask})` is treated as a constant (CP-LRP, Ali et al.
    2022; the value path of AttnLRP, Achtibat et al. 2024): relevance flows from :math:`a_i` to the values
    :math:`v_j` in proportion to :math:`A_{ij} v_{jf}` (LRP-0 on a linear map, conservative), none flows
    through the query/key path. The messages :math:`j \to i` of the attention graph are recorded with their
    relevance summed over heads and features.

    Shapes:
        q, k, v ``[B, H, N, d]``, mask ``[B, N]`` → ``[B, H, N, d]``.
    """
    import math

    scores = (q.detach() @ k.detach().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :].to(torch.bool), float("-inf"))
    att = torch.softmax(scores, -1).detach()
    a = att @ v
    tape = current_tape()
    if tape is not None and a.requires_grad:
        a.retain_grad()
        tape.lazy.append(_attention_message(tape.scoped(name), a, v.detach(), att, mask))
    return a


ATTENTION_DENSE_LIMIT = 1 << 22  # record every (i, j) of the attention graph up to this many pairs


def _attention_message(name: str, a: Tensor, v: Tensor, att: Tensor, mask: Tensor, topk: int = 64):
    r"""Relevance of the attention messages j → i: :math:`R_{ji} = \sum_{h,f} A_{hij} v_{hjf} g_{hif}`.

    Events with more than :data:`ATTENTION_DENSE_LIMIT` real pairs keep the ``topk`` sources of largest
    :math:`|R_{ji}|` per target (the node relevance is exact either way; only the recorded graph is cut).
    """

    def make() -> Message:
        B, H, N, _ = att.shape
        g = a.grad if a.grad is not None else torch.zeros_like(a)
        rows, tgts, srcs = [], [], []
        m = mask.to(torch.bool)
        for b in range(B):
            r = torch.zeros(N, N, dtype=a.dtype, device=a.device)
            for hh in range(H):  # one head at a time: N x N memory, not H x N x N
                r += att[b, hh] * (g[b, hh] @ v[b, hh].transpose(0, 1))
            valid = m[b]
            n_real = int(valid.sum())
            if n_real * n_real <= ATTENTION_DENSE_LIMIT:
                ii, jj = torch.nonzero(valid[:, None] & valid[None, :], as_tuple=True)
            else:
                kk = min(topk, N)
                jj = torch.topk(r.abs().masked_fill(~valid[None, :], -1.0), kk, dim=1).indices
                ii = torch.arange(N, device=r.device)[:, None].expand(N, kk)
                keep = valid[ii] & valid[jj]
                ii, jj = ii[keep], jj[keep]
            rows.append(r[ii, jj])
            tgts.append(ii + b * N)
            srcs.append(jj + b * N)
        rel = torch.cat(rows).detach().unsqueeze(-1)
        return Message(name, rel, torch.cat(tgts), torch.cat(srcs), relevance=rel)

    return make


# --------------------------------------------------------------------------- registry
for _cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
    register_composite(_cls)

_LAZY.update({
    "gnnreco.nn.mlp:MLP": True,
    "gnnreco.nn.interaction_network:InteractionBlock": True,
    "gnnreco.tasks.tracking.model:InteractionEdgeClassifier": True,
    "gnnreco.tasks.tracking.model:InteractionGNN": True,
    "gnnreco.tasks.tracking.model:InteractionGNN2": True,
    "gnnreco.tasks.tracking.model:ResIN": True,
    "gnnreco.nn.gravnet_conv:GravNetConv": True,
    "gnnreco.tasks.calo.model:GravNetBlock": True,
    "gnnreco.tasks.calo.model:CaloGravNet": True,
    "gnnreco.tasks.pflow.model:GravNetLayer": True,
    "gnnreco.tasks.pflow.model:GHConvDense": True,
    "gnnreco.tasks.pflow.model:LSHLayer": True,
    "gnnreco.tasks.pflow.model:MLPFNet": True,
    "gnnreco.tasks.dfei.model:GNBlock": True,
    "gnnreco.tasks.dfei.model:EncodeProcessDecode": True,
    "gnnreco.tasks.dfei.model:DFEIChain": True,
    "gnnreco.tasks.dfei.model:DFEIFused": True,
    "gnnreco.tasks.pflow.model:TransformerLayer": True,
})
