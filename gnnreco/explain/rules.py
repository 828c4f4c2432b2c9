r"""LRP rules for single layers and their composition into rule sets.

Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) redistributes the
relevance :math:`R_k` of a layer output onto its inputs. For a Linear layer
:math:`z_k = \sum_j a_j w_{jk} + b_k` every rule here has the form

.. math::
    R_j = a_j \sum_k \frac{\rho(w_{jk})\, R_k}{z'_k + \epsilon\,\mathrm{sign}(z'_k)},\qquad
    z'_k = \sum_j a_j \rho(w_{jk}) + \rho(b_k)

with :math:`\rho(w) = w` (LRP-ε; LRP-0 at :math:`\epsilon = 0`), :math:`\rho(w) = w + \gamma w^+`
(LRP-γ), :math:`\rho(w) = w^+` (z⁺), while the w² rule ignores the activations,
:math:`R_j = \sum_k w_{jk}^2 / \sum_{j'} w_{j'k}^2\, R_k`. :math:`\mathrm{sign}(0) = +1` (as Captum).

**Implementation: gradient × input with a modified backward.** Relevance is carried as a modified
gradient :math:`g`, with :math:`R = a \odot g` for every tensor :math:`a` of the forward pass. A rule
replaces a layer's output :math:`y` by the *graft* :math:`y + (u - \mathrm{sg}(u))`
(:math:`\mathrm{sg}` = stop-gradient) of a surrogate :math:`u`: the forward value is unchanged, the
backward is that of :math:`u`. For the rules above :math:`u = z' \odot \mathrm{sg}(y / (z' + \epsilon))`,
whose backward gives :math:`g_j = \sum_k \rho(w_{jk})\, g_k y_k / (z'_k + \epsilon)`, i.e. exactly the
rule. Everything the model does between rule-bearing modules (concatenation, indexing, sums, residual
additions, scatter-sum/mean, gather) is linear and its plain gradient × input is LRP-0, which is
conservative; max aggregation sends the gradient to the argmax, so relevance goes to the winner.

Relevance that leaves the propagation (the share of biases, of :math:`\epsilon`, of pass-through
positions with zero input, of explicit sinks) is recorded by :class:`Ledger`, so the conservation check
can return an exact residual.

Element-wise layers (activations, Dropout in eval) use the ratio rule :math:`R_{in} = R_{out}` per element
(gradient :math:`g_{in} = g_{out}\, y / x`). Normalisations use ``epsilon`` by default: LayerNorm with its
standard deviation frozen (Ali et al. 2022; the LN rule of AttnLRP) and BatchNorm in eval mode are affine
maps treated like a Linear layer, their shift :math:`\beta` taking its share as a bias. The ratio rule
(``pass``) is still available for norms, but where :math:`x_i \approx 0` while :math:`y_i = \beta_i \ne 0` its
gradient :math:`y/x` amplifies relevance by orders of magnitude (shares of 10⁴–10⁶ × :math:`R_{out}` that
cancel), which float32 cannot carry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Rule", "Epsilon", "Gamma", "ZPlus", "WSquare", "Flat", "Pass", "Detach", "Ledger", "RuleSet",
    "ACTIVATIONS", "NORMS", "LINEARS", "PASSIVE", "supported_layers", "make_rule", "load_rule_set", "graft",
]

# --------------------------------------------------------------------------- layer families
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.SiLU, nn.GELU, nn.ELU, nn.Tanh, nn.LeakyReLU, nn.Sigmoid, nn.Softplus, nn.CELU, nn.SELU,
    nn.Mish, nn.Hardtanh, nn.PReLU,
)
NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.BatchNorm1d)
PASSIVE: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Identity)


def _linear_types() -> tuple[type[nn.Module], ...]:
    types: list[type[nn.Module]] = [nn.Linear]
    try:  # torch_geometric's Linear (used by GravNetConv) is a plain affine map too
        from torch_geometric.nn.dense.linear import Linear as PygLinear

        types.append(PygLinear)
    except Exception:  # noqa: BLE001 - PyG is optional for this module
        pass
    return tuple(types)


LINEARS: tuple[type[nn.Module], ...] = _linear_types()


def supported_layers() -> list[str]:
    """Names of the leaf layer types that have LRP rules."""
    return sorted({t.__name__ for t in (*LINEARS, *ACTIVATIONS, *NORMS, *PASSIVE)})


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class Ledger:
    """Relevance that leaves the propagation, accumulated during the backward pass.

    Each entry is a list of 0-d tensors (or of leaves whose ``value * grad`` is read after the
    backward pass); :meth:`totals` sums them per kind: ``bias``, ``epsilon`` (stabiliser and
    pass-through positions with zero input), ``sink`` (explicitly absorbed tensors, e.g. a softmax
    fed forward as a gate).
    """

    leaves: dict[str, list[Tensor]] = field(default_factory=lambda: {"bias": [], "sink": []})
    absorbed: dict[str, list[Tensor]] = field(default_factory=lambda: {"epsilon": []})

    def leaf(self, kind: str, value: Tensor) -> Tensor:
        """A fresh leaf with ``value`` whose relevance ``value * grad`` is booked under ``kind``."""
        t = value.detach().requires_grad_(True)
        self.leaves.setdefault(kind, []).append(t)
        return t

    def watch(self, kind: str, out: Tensor, share: Tensor) -> None:
        """Book :math:`\\sum g \\odot` ``share`` under ``kind`` when the gradient ``g`` of ``out`` arrives."""
        if not out.requires_grad:
            return
        share = share.detach()
        bucket = self.absorbed.setdefault(kind, [])

        def hook(g: Tensor) -> None:
            bucket.append((g.double() * share.double()).sum().detach())

        out.register_hook(hook)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, ts in self.leaves.items():
            out[kind] = float(sum(float((t.detach().double() * t.grad.double()).sum()) for t in ts
                                  if t.grad is not None))
        for kind, ts in self.absorbed.items():
            out[kind] = out.get(kind, 0.0) + float(sum(float(t) for t in ts))
        return out


def graft(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` in the forward pass, the gradient of ``surrogate`` in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def _sign1(z: Tensor) -> Tensor:
    s = torch.sign(z)
    return torch.where(s == 0, torch.ones_like(s), s)


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    nz = den != 0
    return torch.where(nz, num / torch.where(nz, den, torch.ones_like(den)), torch.zeros_like(num))


# --------------------------------------------------------------------------- rules
class Rule:
    """One LRP rule. ``apply(module, x, y, ledger)`` returns the grafted output of ``module``."""

    name = "rule"

    def supports(self, module: nn.Module) -> bool:
        """Whether this rule can be applied to ``module`` (a pattern rule falls through otherwise)."""
        return True

    def apply(self, module: nn.Module, x: Tensor, y: Tensor, ledger: Ledger) -> Tensor:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} cannot be applied to {type(module).__name__}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _Weighted(Rule):
    """Rules of the form :math:`z' = a\\,\\rho(W)^\\top + \\rho(b)`, divided by a stabilised :math:`z'`."""

    def __init__(self, epsilon: float = 1e-9) -> None:
        self.epsilon = float(epsilon)

    def supports(self, module: nn.Module) -> bool:
        return isinstance(module, (*LINEARS, *NORMS))

    def rho(self, w: Tensor) -> Tensor:
        return w

    def rho_bias(self, b: Tensor) -> Tensor:
        return b

    def _affine(self, module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(input seen by the weights, weight, bias) of the layer as an affine map."""
        if isinstance(module, LINEARS):
            return x, module.weight, module.bias
        if isinstance(module, nn.LayerNorm):
            # y = (x - mu) * gamma / sigma + beta with sigma frozen: the centring is linear in x
            dims = tuple(range(-len(module.normalized_shape), 0))
            mu = x.mean(dim=dims, keepdim=True)
            var = x.var(dim=dims, keepdim=True, unbiased=False)
            scale = (var + module.eps).rsqrt().detach()
            w = module.weight if module.weight is not None else torch.ones_like(x[0])
            return (x - mu) * scale, torch.diag_embed(w), module.bias
        if isinstance(module, nn.BatchNorm1d) and not module.training and module.running_var is not None:
            inv = (module.running_var + module.eps).rsqrt()
            w = module.weight * inv if module.weight is not None else inv
            b = -module.running_mean * w + (module.bias if module.bias is not None else 0.0)
            return x, torch.diag_embed(w), b
        return super().apply(module, x, x, Ledger())  # raises

    def apply(self, module: nn.Module, x: Tensor, y: Tensor, ledger: Ledger) -> Tensor:
        a, w, b = self._affine(module, x)
        wr = self.rho(w.detach())
        br = None if b is None else self.rho_bias(b.detach())
        bleaf = None if br is None else ledger.leaf("bias", br)
        z = F.linear(a, wr, bleaf)
        den = z.detach() + self.epsilon * _sign1(z.detach())
        c = _safe_ratio(y.detach(), den)  # 0/0 (LRP-0 on a dead unit) passes nothing
        out = graft(y, z * c)
        # relevance absorbed by epsilon: R_k (1 - z'_k / den_k)
        ledger.watch("epsilon", out, y.detach() - z.detach() * c)
        return out


class Epsilon(_Weighted):
    """LRP-ε: :math:`R_j = a_j \\sum_k w_{jk} R_k / (z_k + \\epsilon\\,\\mathrm{sign}\\,z_k)` (ε = 0: LRP-0)."""

    name = "epsilon"


class Gamma(_Weighted):
    """LRP-γ: weights :math:`w + \\gamma w^+` (bias :math:`b + \\gamma b^+` if ``modify_bias``)."""

    name = "gamma"

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-9, modify_bias: bool = False) -> None:
        super().__init__(epsilon)
        self.gamma = float(gamma)
        self.modify_bias = bool(modify_bias)

    def rho(self, w: Tensor) -> Tensor:
        return w + self.gamma * w.clamp(min=0)

    def rho_bias(self, b: Tensor) -> Tensor:
        return b + self.gamma * b.clamp(min=0) if self.modify_bias else b


class ZPlus(_Weighted):
    """z⁺ rule: weights :math:`w^+`; the bias is dropped unless ``bias=True`` (Captum's α1β0 keeps it)."""

    name = "zplus"

    def __init__(self, epsilon: float = 1e-9, bias: bool = False) -> None:
        super().__init__(epsilon)
        self.bias = bool(bias)

    def rho(self, w: Tensor) -> Tensor:
        return w.clamp(min=0)

    def rho_bias(self, b: Tensor) -> Tensor:
        return b if self.bias else torch.zeros_like(b)


class WSquare(Rule):
    """w² rule (input layers): :math:`R_j = \\sum_k w_{jk}^2 / \\sum_{j'} w_{j'k}^2 \\, R_k`.

    Inputs that are exactly zero are left out of the normalisation (they can carry no gradient × input
    relevance), so relevance stays conserved.
    """

    name = "w2"

    def __init__(self, epsilon: float = 1e-9) -> None:
        self.epsilon = float(epsilon)

    def supports(self, module: nn.Module) -> bool:
        return isinstance(module, LINEARS)

    def weights(self, w: Tensor) -> Tensor:
        return w * w

    def apply(self, module: nn.Module, x: Tensor, y: Tensor, ledger: Ledger) -> Tensor:
        if not isinstance(module, LINEARS):
            return super().apply(module, x, y, ledger)
        inv = _safe_ratio(torch.ones_like(x), x.detach())
        ones = x * inv  # value 1 (0 where x == 0), gradient 1/x
        z = F.linear(ones, self.weights(module.weight.detach()))
        den = z.detach() + self.epsilon * _sign1(z.detach())
        c = _safe_ratio(y.detach(), den)
        out = graft(y, z * c)
        ledger.watch("epsilon", out, y.detach() - z.detach() * c)
        return out


class Flat(WSquare):
    """Flat rule: relevance spread uniformly over the inputs (:math:`w_{jk} \\to 1`)."""

    name = "flat"

    def weights(self, w: Tensor) -> Tensor:
        return torch.ones_like(w)


class Pass(Rule):
    """Ratio (pass-through) rule for element-wise layers: :math:`R_{in,i} = R_{out,i}`."""

    name = "pass"

    def supports(self, module: nn.Module) -> bool:
        return not isinstance(module, LINEARS)

    def apply(self, module: nn.Module, x: Tensor, y: Tensor, ledger: Ledger) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"pass rule needs an element-wise layer; {type(module).__name__} maps "
                             f"{tuple(x.shape)} to {tuple(y.shape)}")
        r = _safe_ratio(y.detach(), x.detach())
        out = graft(y, x * r)
        ledger.watch("epsilon", out, torch.where(x.detach() == 0, y.detach(), torch.zeros_like(y)))
        return out


class Detach(Rule):
    """No relevance flows through this layer (graph-building paths such as GravNet's ``lin_s``).

    Use only where the output enters the model multiplicatively as a weight (edge weights, gates):
    the other factor then receives all the relevance and nothing is lost.
    """

    name = "detach"

    def apply(self, module: nn.Module, x: Tensor, y: Tensor, ledger: Ledger) -> Tensor:
        return y.detach()


_RULES: dict[str, type[Rule]] = {
    "epsilon": Epsilon, "eps": Epsilon, "zero": Epsilon, "lrp0": Epsilon, "gamma": Gamma, "zplus": ZPlus,
    "z+": ZPlus, "alpha1beta0": ZPlus, "w2": WSquare, "wsquare": WSquare, "flat": Flat, "pass": Pass,
    "identity": Pass, "detach": Detach,
}


def make_rule(spec: Rule | str | Mapping[str, Any]) -> Rule:
    """A rule from a name (``"epsilon"``), a mapping (``{"name": "gamma", "gamma": 0.5}``) or a Rule."""
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name is None:
            raise ValueError(f"rule mapping {dict(spec)} needs a 'name' (one of {sorted(_RULES)})")
    else:
        raise TypeError(f"rule must be a name, a mapping or a Rule, got {type(spec).__name__}")
    key = str(name).lower()
    if key not in _RULES:
        raise ValueError(f"unknown LRP rule {name!r}; expected one of {sorted(_RULES)}")
    if key in ("zero", "lrp0"):
        kwargs.setdefault("epsilon", 0.0)
    return _RULES[key](**kwargs)


# --------------------------------------------------------------------------- rule sets
# norms: affine with frozen statistics (the ratio rule y/x explodes where x ~ 0 but the norm's shift is not)
_DEFAULT_TYPES: dict[str, Any] = {"Linear": "epsilon", "activation": "pass", "norm": "epsilon", "passive": "pass"}
# graph-building projections: their outputs only set edge weights, so relevance does not flow through them
_DEFAULT_PATTERNS: dict[str, Any] = {"*lin_s": "detach", "*lin_sigma": "detach", "*ffn_dist": "detach"}


@dataclass
class RuleSet:
    """A composite rule set: which rule each leaf module gets.

    Resolution order for a module with qualified name ``name``: the first matching glob pattern of
    ``patterns`` (matched against ``name``; a pattern matching a container applies to all its
    leaves of the types the rule applies to: a ``gamma`` pattern on a block sets its Linear layers and
    leaves its activations to their type rule), then its class name in ``types``, then its family (``activation``, ``norm``,
    ``passive``, ``Linear`` for every affine layer). ``epsilon`` (if given) replaces the ε of every
    rule built from a name.

    Args:
        types: class name or family → rule spec.
        patterns: module-name glob → rule spec.
        epsilon: global ε for rules built from names.
    """

    types: dict[str, Any] = field(default_factory=lambda: dict(_DEFAULT_TYPES))
    patterns: dict[str, Any] = field(default_factory=lambda: dict(_DEFAULT_PATTERNS))
    epsilon: float | None = None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> RuleSet:
        """From a config mapping ``{types: {...}, patterns: {...}, epsilon: ...}`` (defaults fill gaps)."""
        if cfg is None:
            return cls()
        unknown = set(cfg) - {"types", "patterns", "epsilon", "name", "description"}
        if unknown:
            raise ValueError(f"explain rule set: unknown keys {sorted(unknown)}; expected types, patterns, epsilon")
        types = dict(_DEFAULT_TYPES)
        types.update(dict(cfg.get("types") or {}))
        patterns = dict(_DEFAULT_PATTERNS)
        patterns.update(dict(cfg.get("patterns") or {}))
        eps = cfg.get("epsilon")
        return cls(types=types, patterns=patterns, epsilon=None if eps is None else float(eps))

    def _build(self, spec: Any) -> Rule:
        if self.epsilon is not None and not isinstance(spec, Rule):
            if isinstance(spec, str):
                spec = {"name": spec}
            spec = dict(spec)
            if str(spec["name"]).lower() in ("epsilon", "eps", "gamma", "zplus", "z+", "alpha1beta0", "w2",
                                             "wsquare", "flat"):
                spec.setdefault("epsilon", self.epsilon)
        return make_rule(spec)

    def rule_for(self, name: str, module: nn.Module) -> Rule | None:
        """The rule of leaf ``module`` (qualified name ``name``), or None if it has none."""
        for pat, spec in self.patterns.items():
            if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, pat + ".*"):
                rule = self._build(spec)
                if rule.supports(module) or list(module.children()):
                    return rule
        cls_name = type(module).__name__
        if cls_name in self.types:
            return self._build(self.types[cls_name])
        for family, types in (("Linear", LINEARS), ("activation", ACTIVATIONS), ("norm", NORMS),
                              ("passive", PASSIVE)):
            if isinstance(module, types) and family in self.types:
                return self._build(self.types[family])
        return None


def load_rule_set(source: str | Path | Mapping[str, Any] | RuleSet | None) -> RuleSet:
    """A :class:`RuleSet` from None (defaults: ε everywhere), a mapping, a YAML path or the name of a
    packaged config in ``gnnreco/conf/explain`` (``epsilon``, ``gamma``, ``composite``)."""
    if source is None or isinstance(source, RuleSet):
        return source or RuleSet()
    if isinstance(source, Mapping):
        return RuleSet.from_dict(source)
    path = Path(source)
    if not path.suffix:
        path = Path(__file__).resolve().parent.parent / "conf" / "explain" / f"{source}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"explain rule set {str(source)!r}: no file {path}")
    import yaml

    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    try:
        return RuleSet.from_dict(cfg)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
