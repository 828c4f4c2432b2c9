r"""``explain(model, inputs, target)``: LRP explanations of one output of a gnnreco model.

The relevance of the chosen output :math:`f(x)` starts as :math:`R = f(x)` and is propagated back to
the inputs with the rule set (default: LRP-ε on Linear layers, ratio rule elsewhere; see
:mod:`gnnreco.explain.rules`). The result holds

* ``node_relevance`` ``[N, F]``: :math:`R_{j,f}` of every input feature of every node (the neighbour
  relevance of node :math:`j` is :math:`\sum_f R_{j,f}`);
* ``edge_attr_relevance`` ``[E, F_e]`` for models with edge inputs;
* ``messages``: per aggregation, the relevance of each message ``[E, F]`` with its target and source
  node (edge relevance);
* ``absorbed``: relevance taken by biases, ε and sinks, so that
  :math:`R_{out} = \sum R_{in} + \sum R_{absorbed} + \text{residual}`.

Task adapters know each model's tensor-only forward and what a target means:

========== ============================ ==================================================
task       model                        target
========== ============================ ==================================================
tracking   ``InteractionEdgeClassifier`` edge id ``e`` → logit :math:`s_e`
calo       ``CaloGravNet``               ``(name, hit)``: ``beta`` (logit), ``energy``
                                        (factor − 1), ``coords:k``, ``pid:k``, ``time``
pflow      ``MLPFNet``                   ``(output, element[, index])``, output ∈ ``binary``,
                                        ``pid``, ``charge``, ``reg``; ``(event, element)`` too
dfei       ``EncodeProcessDecode``       ``("edge", e, class)`` (LCA class logit) or
                                        ``("node", n[, k])``
generic    any tensor-output model      index tuple into the output, or a callable
========== ============================ ==================================================

Targets on sigmoids/softmaxes are explained at the logit (relevance is defined for the affine
pre-activation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gnnreco.explain.propagate import Message, Tape, lrp_session
from gnnreco.explain.rules import RuleSet, load_rule_set

__all__ = ["Explanation", "Adapter", "explain", "conservation", "adapter_for", "cast_network", "explain_chain", "CALO_TARGETS"]


@dataclass
class Explanation:
    """Relevance of one explained output (see the module docstring)."""

    output: float
    node_relevance: Tensor
    messages: list[Message]
    absorbed: dict[str, float]
    edge_attr_relevance: Tensor | None = None
    extra_inputs: dict[str, Tensor] = field(default_factory=dict)
    target_nodes: Tensor | None = None
    edge_index: Tensor | None = None
    feature_names: Sequence[str] | None = None

    @property
    def input_relevance(self) -> float:
        """:math:`\\sum R_{in}` over all explained inputs."""
        tot = float(self.node_relevance.double().sum())
        if self.edge_attr_relevance is not None:
            tot += float(self.edge_attr_relevance.double().sum())
        return tot + sum(float(t.double().sum()) for t in self.extra_inputs.values())

    @property
    def residual(self) -> float:
        """:math:`R_{out} - \\sum R_{in} - \\sum R_{absorbed}` (0 up to round-off for a sound propagation)."""
        return self.output - self.input_relevance - sum(self.absorbed.values())

    @property
    def neighbour_relevance(self) -> Tensor:
        """Relevance per input node, :math:`\\sum_f R_{j,f}`, ``[N]``."""
        return self.node_relevance.sum(-1)

    def neighbour_fraction(self, node: int | None = None) -> float:
        """Share of :math:`\\sum_j |R_j|` on nodes other than the target node(s) (the "neighbour
        information" of xai4hep's R-maps)."""
        r = self.neighbour_relevance.abs()
        nodes = self.target_nodes if node is None else torch.tensor([node])
        tot = float(r.sum())
        if tot == 0 or nodes is None:
            return 0.0
        return 1.0 - float(r[nodes.long()].sum()) / tot

    def edge_relevance(self, n_edges: int | None = None) -> Tensor:
        """Relevance that crossed each input edge, summed over layers and features, ``[E]``.

        Messages that live on the model's input edge list (Interaction Network in/out aggregates,
        GN blocks) are folded onto it; for graphs the model builds itself see :meth:`graph_edges`.
        """
        n = n_edges if n_edges is not None else (None if self.edge_index is None else self.edge_index.shape[1])
        if n is None:
            raise ValueError("edge_relevance: the model has no input edge list; pass n_edges or use graph_edges()")
        out = torch.zeros(n, dtype=self.node_relevance.dtype)
        for m in self.messages:
            r = m.edge_relevance
            if r.shape[0] % n == 0 and self.edge_index is not None:
                out += r.view(-1, n).sum(0)
        return out

    def graph_edges(self, layer: int | str | None = None) -> tuple[Tensor, Tensor]:
        """``(edge_index [2, M], relevance [M])`` of the messages of one recorded aggregation
        (index or name; default all, concatenated), as ``(source, target)``."""
        msgs = self.messages
        if isinstance(layer, int):
            msgs = [msgs[layer]]
        elif isinstance(layer, str):
            msgs = [m for m in msgs if m.name == layer]
            if not msgs:
                raise KeyError(f"graph_edges: no recorded aggregation {layer!r}; have {[m.name for m in self.messages]}")
        ei = [torch.stack([m.source if m.source is not None else m.index, m.index]) for m in msgs]
        rel = [m.edge_relevance for m in msgs]
        if not ei:
            return torch.empty(2, 0, dtype=torch.long), torch.empty(0)
        return torch.cat(ei, 1), torch.cat(rel)


def conservation(expl: Explanation, include_absorbed: bool = True) -> dict[str, float]:
    """Conservation check of an explanation.

    Returns ``residual`` (:math:`R_{out} - \\sum R_{in} - \\sum R_{absorbed}`), ``relative`` (its size
    relative to :math:`|R_{out}|`), and ``relative_inputs`` (:math:`|R_{out} - \\sum R_{in}| / |R_{out}|`,
    i.e. without counting what biases and ε absorbed).
    """
    scale = max(abs(expl.output), 1e-30)
    res = expl.residual if include_absorbed else expl.output - expl.input_relevance
    return {"output": expl.output, "inputs": expl.input_relevance, **{f"absorbed_{k}": v for k, v in expl.absorbed.items()},
            "residual": res, "relative": abs(res) / scale,
            "relative_inputs": abs(expl.output - expl.input_relevance) / scale}


# --------------------------------------------------------------------------- adapters
@dataclass
class Adapter:
    """How to call one model and pick a scalar output.

    Args:
        inputs: batch / mapping / tuple → positional tensors of the tensor-only forward.
        select: ``(model, outputs, captured, target) → (0-d tensor, target node ids)``.
        capture: names of sub-modules whose (grafted) outputs ``select`` needs.
        node_arg: position of the node-feature input; ``edge_arg`` of the edge features,
            ``edge_index_arg`` of the edge list (or None).
    """

    name: str
    inputs: Callable[[Any], tuple]
    select: Callable[[nn.Module, Any, dict[str, Tensor], Any], tuple[Tensor, Tensor | None]]
    capture: tuple[str, ...] = ()
    node_arg: int = 0
    edge_arg: int | None = None
    edge_index_arg: int | None = None


def _get(batch: Any, *names: str, required: bool = True) -> Any:
    for n in names:
        if isinstance(batch, Mapping) and n in batch:
            return batch[n]
        if hasattr(batch, n) and getattr(batch, n) is not None:
            return getattr(batch, n)
    if required:
        raise KeyError(f"explain: the batch has none of the fields {names}")
    return None


def _as_tuple(batch: Any, fields: Sequence[tuple[str, ...]], optional: Sequence[bool]) -> tuple:
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    return tuple(_get(batch, *f, required=not opt) for f, opt in zip(fields, optional))


def _generic_select(model, out, captured, target):
    if callable(target):
        y = target(out)
    else:
        t = out
        if isinstance(t, (tuple, list)):
            t = t[target[0]]
            target = target[1:]
        y = t[tuple(target) if isinstance(target, (tuple, list)) else target]
    if y.numel() != 1:
        raise ValueError(f"explain: target must select one output value, got shape {tuple(y.shape)}")
    return y.reshape(()), None


def _tracking_select(model, out, captured, target):
    e = int(target)
    if not 0 <= e < out.shape[0]:
        raise IndexError(f"explain(tracking): edge target {e} out of range for {out.shape[0]} edges")
    return out[e], None


CALO_TARGETS = ("beta", "energy", "coords", "time", "pid", "position")


def _calo_column(model, name: str) -> int:
    c = model.coord_dim
    n_e = 3 if model.energy_quantiles else 1
    base, _, k = name.partition(":")
    k = int(k) if k else 0
    offs = {"beta": 0, "coords": 1, "energy": 1 + c, "position": 1 + c + n_e, "time": 3 + c + n_e,
            "pid": 4 + c + n_e}
    if base not in offs:
        raise ValueError(f"explain(calo): target {name!r}; expected one of {CALO_TARGETS} (with ':k' for coords/pid/position)")
    return offs[base] + k


def _calo_select(model, out, captured, target):
    name, hit = target
    z = captured["head"]
    return z[int(hit), _calo_column(model, str(name))], None


_PFLOW_OUT = ("binary", "pid", "charge", "reg")


def _pflow_select(model, out, captured, target):
    if len(target) == 2:
        name, elem, idx = target[0], target[1], None
    else:
        name, elem, idx = target[0], target[1], target[2]
    if name not in _PFLOW_OUT:
        raise ValueError(f"explain(pflow): output {name!r}; expected one of {_PFLOW_OUT}")
    t = out[_PFLOW_OUT.index(name)]
    b, n = (0, int(elem)) if not isinstance(elem, (tuple, list)) else (int(elem[0]), int(elem[1]))
    idx = 0 if idx is None else int(idx)
    return t[b, n, idx], torch.tensor([b * t.shape[1] + n])


def _dfei_select(model, out, captured, target):
    kind, i = target[0], int(target[1])
    k = int(target[2]) if len(target) > 2 else 0
    nv, ne = out
    t = ne if kind == "edge" else nv
    if t is None:
        raise ValueError(f"explain(dfei): the model has no {kind} decoder")
    return t[i, k], None


_DFEI_PIPE_OUT = {"lca": "lca_logits", "edge": "edge_logit", "node": "node_logit"}


def _dfei_pipeline_select(model, out, captured, target):
    kind = str(target[0])
    if kind not in _DFEI_PIPE_OUT:
        raise ValueError(f"explain(dfei {type(model).__name__}): target kind {kind!r}; expected one of "
                         f"{sorted(_DFEI_PIPE_OUT)} as ('lca', pair, class), ('edge', pair) or ('node', particle)")
    i = int(target[1])
    t = out[_DFEI_PIPE_OUT[kind]]
    if not 0 <= i < t.shape[0]:
        raise IndexError(f"explain(dfei): {kind} index {i} out of range for {t.shape[0]} "
                         f"{'particles' if kind == 'node' else 'pairs'}")
    if kind == "lca":
        if not bool(out["lca_mask"][i]):
            raise ValueError(f"explain(dfei): pair {i} {tuple(out['pair_index'][:, i].tolist())} was pruned before "
                             "the LCA stage (its LCA logits are the fixed 'pruned' constants); explain its "
                             "('edge', pair) or ('node', particle) decision instead")
        y = t[i, int(target[2]) if len(target) > 2 else 0]
    else:
        y = t[i]
    captured["_pair_index"] = out["pair_index"]
    return y.reshape(()), None


def adapter_for(model: nn.Module) -> Adapter:
    """The task adapter for ``model`` (by type); a generic one for other tensor-output models."""
    name = type(model).__name__
    mro = {c.__name__ for c in type(model).__mro__}
    if "InteractionEdgeClassifier" in mro:
        return Adapter("tracking", lambda b: _as_tuple(b, [("x",), ("edge_index",), ("edge_attr", "edge_features")],
                                                       [False, False, True]),
                       _tracking_select, node_arg=0, edge_arg=2, edge_index_arg=1)
    if name == "CaloGravNet":
        return Adapter("calo", lambda b: _as_tuple(b, [("x",), ("batch",)], [False, False]), _calo_select,
                       capture=("head",))
    if name == "MLPFNet":
        return Adapter("pflow", lambda b: _as_tuple(b, [("X",), ("mask",)], [False, False]), _pflow_select)
    if name == "EncodeProcessDecode":
        return Adapter("dfei", lambda b: _as_tuple(b, [("x",), ("edge_index",), ("batch",), ("n_pv",)],
                                                   [False, False, False, False]),
                       _dfei_select, edge_index_arg=1)
    if name in ("DFEIChain", "DFEIFused"):
        return Adapter("dfei_pipeline", lambda b: _as_tuple(b, [("x",), ("batch",), ("n_pv",)], [False, False, False]),
                       _dfei_pipeline_select)
    return Adapter("generic", lambda b: tuple(b) if isinstance(b, (tuple, list)) else (b,), _generic_select)


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a Lightning module (``.net``), or the model itself."""
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module) or isinstance(model, nn.Sequential):
        return model
    # a Lightning module, or a plain holder without its own forward; not a network with a ``.net`` part
    wrapper = hasattr(model, "training_step") or type(model).forward is nn.Module.forward
    return net if wrapper else model


_CAST_CACHE: dict[tuple[int, torch.dtype], tuple[Any, tuple, nn.Module]] = {}


def _state_version(net: nn.Module) -> tuple:
    return tuple((id(t), t._version) for t in (*net.parameters(), *net.buffers()))


def _compute_dtype(net: nn.Module, precision: str | torch.dtype | None) -> torch.dtype | None:
    """The dtype to propagate in, or None for the model's own."""
    if precision is None or precision == "native":
        return None
    dt = precision if isinstance(precision, torch.dtype) else {"float64": torch.float64, "double": torch.float64,
                                                               "float32": torch.float32}.get(str(precision))
    if dt is None:
        raise ValueError(f"explain: precision={precision!r}; expected 'float64', 'float32', 'native' or a torch dtype")
    p = next((t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()), None)
    return None if p is None or p.dtype == dt else dt


def cast_network(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``net`` with floating parameters and buffers in ``dtype`` (cached per network and dtype;
    the cache entry is rebuilt when any parameter or buffer of ``net`` changed in place)."""
    import copy
    import weakref

    key = (id(net), dtype)
    ver = _state_version(net)
    hit = _CAST_CACHE.get(key)
    if hit is not None and hit[0]() is net and hit[1] == ver:
        return hit[2]
    twin = copy.deepcopy(net).to(dtype).eval()
    for k in [k for k, v in _CAST_CACHE.items() if v[0]() is None]:
        del _CAST_CACHE[k]
    _CAST_CACHE[key] = (weakref.ref(net), ver, twin)
    return twin


def explain(model: nn.Module, inputs: Any, target: Any, rules: RuleSet | Mapping | str | None = None,
            adapter: Adapter | None = None, precision: str | torch.dtype | None = "float64") -> Explanation:
    """Explain one output of ``model`` on ``inputs`` with LRP.

    Args:
        model: a gnnreco network (or a Lightning module holding it as ``.net``).
        inputs: a batch object / mapping with the fields the task's forward needs, or the tuple of
            positional tensors of the model's tensor-only forward.
        target: which output to explain (per task, see the module docstring).
        rules: rule set (:class:`RuleSet`, mapping, YAML path or packaged name); default LRP-ε.
        adapter: override the task adapter.
        precision: dtype the relevance is propagated in: ``"float64"`` (default) runs the explanation on a
            float64 copy of a float32 network (cached), so that conservation holds to round-off even where
            LRP-ε at ε → 0 lets single relevance shares grow to 10⁴–10⁶ × :math:`R_{out}` and cancel
            (float32 round-off alone then leaves residuals of 1e-3); ``"native"`` (or None) uses the
            model's own dtype — faster and half the memory. Relevance is returned in the dtype used.

    Returns:
        The :class:`Explanation` of the chosen output.

    Raises:
        UnsupportedLayerError: a module of the model has no rule (message names the layer and lists
            the supported types).
    """
    net = _unwrap(model)
    adapter = adapter or adapter_for(net)
    rule_set = load_rule_set(rules)
    args = list(adapter.inputs(inputs))
    dt = _compute_dtype(net, precision)
    if dt is not None:
        net = cast_network(net, dt)
        args = [a.to(dt) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args]
    leaves: dict[int, Tensor] = {}
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.is_floating_point():
            leaves[i] = a.detach().clone().requires_grad_(True)
            args[i] = leaves[i]
    with lrp_session(net, rule_set) as tape:
        captured: dict[str, Tensor] = {}
        handles = []
        mods = dict(net.named_modules())
        for cname in adapter.capture:
            def hook(mod, inp, out, _n=cname):
                captured[_n] = out
            handles.append(mods[cname].register_forward_hook(hook))
        try:
            with torch.enable_grad():
                out = net(*args)
                y, tnodes = adapter.select(net, out, captured, target)
                if not y.requires_grad:
                    raise RuntimeError("explain: the selected output does not depend on the inputs")
                y.backward()
        finally:
            for h in handles:
                h.remove()
        tape.finish()
    if adapter.name == "dfei_pipeline":
        return _collect_dfei_pipeline(tape, float(y.detach()), leaves, args, target, captured["_pair_index"])
    return _collect(tape, float(y.detach()), leaves, args, adapter, target, tnodes)


def _rel(t: Tensor) -> Tensor:
    return (t * t.grad).detach() if t.grad is not None else torch.zeros_like(t.detach())


def _collect_dfei_pipeline(tape: Tape, y: float, leaves: dict[int, Tensor], args: list, target: Any,
                           pair_index: Tensor) -> Explanation:
    """Relevance of a DFEI pipeline output on the event's particles and pairs.

    ``node_relevance [N, 11]``: the particle inputs; ``edge_attr_relevance [E, 5]``: the pair inputs on
    the candidate pairs of the model's output ``pair_index`` (``edge_index``); ``extra_inputs["global"]``: the
    event inputs of every stage, stacked. The inputs are those the model's forward marks with
    :func:`gnnreco.explain.tap.input`.
    """
    totals = tape.ledger.totals()
    absorbed = {k: v for k, v in totals.items() if k != "input"}
    n = args[0].shape[0]
    recorded = tape.tensors.get("inputs", [])
    node = edge = edge_index = None
    extra: dict[str, Tensor] = {}
    glob = []
    for k, (kind, leaf) in enumerate(recorded):  # type: ignore[misc]
        r = _rel(leaf)
        if kind == "node" and node is None and r.shape[0] == n:
            node = r
        elif kind == "edge" and edge is None and r.shape[0] == pair_index.shape[1]:
            edge, edge_index = r, pair_index
        elif kind == "global":
            glob.append(r)
        else:
            extra[f"{kind}_inputs_{k}"] = r
    if node is None:
        raise RuntimeError("explain(dfei): the particle inputs of the model were not recorded; the DFEI model's "
                           "forward no longer marks them with gnnreco.explain.tap.input('node', ...) on the whole event")
    if glob:
        extra["global"] = torch.cat(glob, 0)
    for i, t in leaves.items():  # raw inputs besides the encodings (should carry none)
        r = _rel(t)
        if float(r.abs().sum()) > 0:
            extra[f"arg{i}"] = r
    kind, i = str(target[0]), int(target[1])
    tnodes = torch.tensor([i]) if kind == "node" else pair_index[:, i].detach()
    return Explanation(output=y, node_relevance=node, messages=tape.messages, absorbed=absorbed,
                       edge_attr_relevance=edge, extra_inputs=extra, target_nodes=tnodes,
                       edge_index=None if edge_index is None else edge_index.detach())


def explain_chain(model: nn.Module, inputs: Any, pair: int, lca_class: int, **kwargs: Any) -> dict[str, Any]:
    """Explain one DFEI LCA decision together with the pruning decisions that let its pair through.

    The pruning cuts are hard selections, so no relevance flows across them; the chain is explained stage
    by stage: the LCA logit of ``pair`` (class ``lca_class``), the edge-pruning logit of the same pair
    (why it survived edge pruning) and the node-pruning logits of its two particles (why they survived
    node pruning). ``kwargs`` go to :func:`explain`.

    Returns:
        ``{"lca": Explanation, "edge_pruning": Explanation, "node_pruning": [Explanation, Explanation],
        "pair": (i, j)}`` (``edge_pruning`` is None for :class:`DFEIFused`, which has no separate stage).
    """
    net = _unwrap(model)
    if type(net).__name__ not in ("DFEIChain", "DFEIFused"):
        raise TypeError(f"explain_chain: expected a DFEIChain or DFEIFused, got {type(net).__name__}")
    lca = explain(net, inputs, ("lca", pair, lca_class), **kwargs)
    i, j = (int(t) for t in lca.target_nodes)
    edge = explain(net, inputs, ("edge", pair), **kwargs) if type(net).__name__ == "DFEIChain" else None
    nodes = [explain(net, inputs, ("node", k), **kwargs) for k in (i, j)]
    return {"lca": lca, "edge_pruning": edge, "node_pruning": nodes, "pair": (i, j)}


def _collect(tape: Tape, y: float, leaves: dict[int, Tensor], args: list, adapter: Adapter, target: Any,
             tnodes: Tensor | None) -> Explanation:
    def rel(t: Tensor) -> Tensor:
        return (t * t.grad).detach() if t.grad is not None else torch.zeros_like(t.detach())

    totals = tape.ledger.totals()
    absorbed = {k: v for k, v in totals.items() if k != "input"}
    extra: dict[str, Tensor] = {}
    edge_rel = None
    if "encoded_inputs" in tape.tensors:  # models that explain engineered inputs (pflow, dfei)
        node = rel(tape.tensors["encoded_inputs"])
        node = node.reshape(-1, node.shape[-1])
        for k in ("encoded_edge_inputs", "encoded_global_inputs"):
            if k in tape.tensors:
                extra[k] = rel(tape.tensors[k])
        if "encoded_edge_inputs" in extra:
            edge_rel = extra.pop("encoded_edge_inputs")
        for i, t in leaves.items():  # raw inputs used besides the encoding (should carry none)
            r = rel(t)
            if float(r.abs().sum()) > 0:
                extra[f"arg{i}"] = r
    else:
        node = rel(leaves[adapter.node_arg]) if adapter.node_arg in leaves else torch.zeros(0)
        for i, t in leaves.items():
            if i == adapter.node_arg:
                continue
            if adapter.edge_arg is not None and i == adapter.edge_arg:
                edge_rel = rel(t)
            else:
                extra[f"arg{i}"] = rel(t)
    ei = args[adapter.edge_index_arg] if adapter.edge_index_arg is not None else None
    if adapter.name == "tracking" and ei is not None:
        tnodes = ei[:, int(target)].detach()
    elif adapter.name == "calo":
        tnodes = torch.tensor([int(target[1])])
    elif adapter.name == "dfei" and ei is not None and target[0] == "edge":
        tnodes = ei[:, int(target[1])].detach()
    return Explanation(output=y, node_relevance=node, messages=tape.messages, absorbed=absorbed,
                       edge_attr_relevance=edge_rel, extra_inputs=extra, target_nodes=tnodes,
                       edge_index=None if ei is None else ei.detach())
