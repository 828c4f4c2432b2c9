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

Modules with children are either *audited* (their ``forward`` does only linear work between child
modules: concatenation, indexing, sums, scatter-sum/mean/max, residual additions) or get an *LRP
forward* here that computes the same values (tests check this) with the rules above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
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
def _mlpf_gravnet_forward(self, h: Tensor, mask: Tensor, geo: Tensor | None = None) -> Tensor:
    B, N, _ = h.shape
    s, f = self.lin_s(h).detach(), self.lin_f(h)
    if getattr(self, "geo_scale", None) is not None and geo is not None:  # geometric prior: graph building only
        s = torch.cat([s, (self.geo_scale * geo).detach()], -1)
    d2 = (s.unsqueeze(2) - s.unsqueeze(1)).pow(2).sum(-1)
    d2 = d2.masked_fill(~mask.unsqueeze(1), 1e9)
    k = min(self.k, N)
    negd, idx = torch.topk(-d2, k, dim=-1)
    valid = (negd > -1e8).to(h.dtype)
    w = torch.exp(10.0 * negd) * valid
    fj = f.gather(1, idx.reshape(B, -1, 1).expand(-1, -1, f.shape[-1])).reshape(B, N, k, -1)
    msg = fj * w.unsqueeze(-1)
    tape = current_tape()
    if tape is not None:  # record as a flat edge list (event-major element ids)
        ar = torch.arange(B * N, device=h.device).view(B, N, 1).expand(B, N, k).reshape(-1)
        src = (idx + (torch.arange(B, device=h.device) * N).view(B, 1, 1)).reshape(-1)
        keep = valid.reshape(-1) > 0
        flat = msg.reshape(B * N * k, -1)
        flat = tape.message("knn", flat, ar, src)
        tape.tensors.setdefault("_mlpf_keep", keep)
        msg = flat.reshape(B, N, k, -1)
    mean = msg.sum(2) / valid.sum(-1, keepdim=True).clamp(min=1)
    mx = msg.max(2).values
    out = self.lin_o(torch.cat([h, mean, mx], -1))
    return self.norm(h + self.drop(pass_through(out, F.elu(out)))) * mask.unsqueeze(-1).to(h.dtype)


def _ghconv_forward(self, h: Tensor, A: Tensor) -> Tensor:
    A = A.detach()
    deg = A.sum(-1, keepdim=True).clamp(min=1e-6)
    norm = deg.rsqrt()
    f_t, f_h, f_g = self.lin(h).split(self.width, -1)
    src = norm * f_t
    agg = norm * (A @ src)
    tape = current_tape()
    perm = None if tape is None else tape.tensors.get("_lsh_perm")
    if tape is not None and perm is not None and agg.requires_grad:
        agg.retain_grad()
        tape.lazy.append(_lsh_message(tape.scoped("lsh"), agg, src.detach(), A, norm.detach(), perm))
    g = torch.sigmoid(f_g).detach()  # gate held constant
    return self.act(f_h + g * (agg - f_h))


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


def _lsh_layer_forward(self, h: Tensor, mask: Tensor, geo: Tensor | None = None) -> Tensor:
    from gnnreco.tasks.pflow.model import lsh_perm

    B, N, W = h.shape
    S = self.bin_size
    d = self.ffn_dist(h).detach()
    if getattr(self, "geo_scale", None) is not None and geo is not None:  # geometric prior: binning only
        d = torch.cat([d, (self.geo_scale * geo).detach()], -1)
    perm = lsh_perm(d, mask, self.codebook, S)
    hs = h.gather(1, perm.unsqueeze(-1).expand(-1, -1, W)).reshape(B, -1, S, W)
    ds = d.gather(1, perm.unsqueeze(-1).expand(-1, -1, d.shape[-1])).reshape(B, -1, S, d.shape[-1])
    ms = mask.gather(1, perm).reshape(B, -1, S).to(h.dtype)
    sq = ds.pow(2).sum(-1)
    d2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * ds @ ds.transpose(-1, -2)).clamp(min=0)
    A = torch.exp(-self.kernel_scale * d2) * ms.unsqueeze(-1) * ms.unsqueeze(-2)
    tape = current_tape()
    if tape is not None:
        tape.tensors["_lsh_perm"] = perm
    x = hs
    try:
        for conv in self.convs:
            x = conv(x, A)
    finally:
        if tape is not None:
            tape.tensors.pop("_lsh_perm", None)
    x = self.drop(x).reshape(B, -1, W)
    out = torch.zeros_like(h).scatter(1, perm.unsqueeze(-1).expand(-1, -1, W), x)
    return self.norm(h + out) * mask.unsqueeze(-1).to(h.dtype)


def _calo_position(X: Tensor) -> Tensor | None:
    try:
        from gnnreco.tasks.pflow.model import calo_position
    except ImportError:  # older pflow models without the geometric prior
        return None
    return calo_position(X).detach()


def _mlpf_net_forward(self, X: Tensor, mask: Tensor):
    from gnnreco.tasks.pflow.model import decode_momentum, encode_elements, pad_to_multiple

    N = X.shape[1]
    mask = mask.to(torch.bool)
    if self.bin_size > 1:
        X, mask = pad_to_multiple(X, mask, self.bin_size)
    X = X * mask.unsqueeze(-1).to(X.dtype)
    tape = current_tape()
    e = encode_elements(X)
    if tape is not None:  # explain the encoded element features (13 per element)
        e = tape.ledger.leaf("input", e)
        tape.tensors["encoded_inputs"] = e
    mf = mask.unsqueeze(-1).to(X.dtype)
    geo = _calo_position(X)  # enters graph building (distance spaces) only
    h_id = self.embed_id(e) * mf
    for layer in self.layers_id:
        h_id = layer(h_id, mask, geo)
    h_reg = self.embed_reg(e) * mf
    for layer in self.layers_reg:
        h_reg = layer(h_reg, mask, geo)
    z = torch.cat([e, h_id], -1)
    binary, pid, charge = self.head_binary(z), self.head_pid(z), self.head_charge(z)
    probs = torch.softmax(pid, -1)
    if tape is not None:  # class probabilities enter the regression head as a relevance sink
        probs = tape.ledger.leaf("sink", probs)
    reg = self.head_reg(torch.cat([e, h_id, h_reg, probs], -1))
    p4 = decode_momentum(X, reg)
    outs = (binary, pid, charge, reg, p4)
    return tuple(o[:, :N] for o in outs)


# --------------------------------------------------------------------------- transformer (AttnLRP / CP-LRP)
def _transformer_layer_forward(self, h: Tensor, mask: Tensor, geo: Tensor | None = None) -> Tensor:
    r"""Pre-norm transformer layer with the attention weights held constant.

    :math:`a_i = \sum_j A_{ij} v_j` with :math:`A = \mathrm{softmax}(q k^\top/\sqrt d + \text{mask})` treated
    as a constant (CP-LRP, Ali et al. 2022; the value path of AttnLRP, Achtibat et al. 2024): relevance
    flows from :math:`a_i` to the values :math:`v_j` in proportion to :math:`A_{ij} v_{jf}` (LRP-0 on a
    linear map, conservative), none flows through the query/key path. LayerNorms take their rule from the
    rule set (default: σ frozen, the LN rule of both papers). The messages :math:`j \to i` of the attention
    graph are recorded with their relevance summed over heads and features.
    """
    import math

    B, N, W = h.shape
    H = self.heads
    d = W // H
    q, k, v = self.qkv(self.ln1(h)).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    scores = (q.detach() @ k.detach().transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~mask[:, None, None, :].to(torch.bool), float("-inf"))
    att = torch.softmax(scores, -1).detach()
    a = att @ v
    tape = current_tape()
    if tape is not None and a.requires_grad:
        a.retain_grad()
        tape.lazy.append(_attention_message(tape.scoped("attention"), a, v.detach(), att, mask))
    h = h + self.out(a.transpose(1, 2).reshape(B, N, W))
    h = h + self.ffn(self.ln2(h))
    return h * mask.unsqueeze(-1).to(h.dtype)


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
    "gnnreco.tasks.pflow.model:GravNetLayer": "_mlpf_gravnet_forward",
    "gnnreco.tasks.pflow.model:GHConvDense": "_ghconv_forward",
    "gnnreco.tasks.pflow.model:LSHLayer": "_lsh_layer_forward",
    "gnnreco.tasks.pflow.model:MLPFNet": "_mlpf_net_forward",
    "gnnreco.tasks.dfei.model:GNBlock": True,
    "gnnreco.tasks.dfei.model:EncodeProcessDecode": True,
    "gnnreco.tasks.dfei.model:DFEIChain": True,
    "gnnreco.tasks.dfei.model:DFEIFused": True,
    "gnnreco.tasks.pflow.model:TransformerLayer": "_transformer_layer_forward",
})
