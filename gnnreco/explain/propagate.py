r"""The relevance-propagation engine: rules on leaf modules, LRP forwards on graph layers.

:func:`lrp_session` prepares a model for one explanation:

1. every module is checked: leaf modules need a rule from the :class:`~gnnreco.explain.rules.RuleSet`
   and modules with children need an entry in the composite registry
   (:mod:`gnnreco.explain.graph`): either *audited* (its ``forward`` does only linear tensor work between
   child modules) or given an *LRP forward* (the same computation with edge weights and gates held
   constant, aggregation rules for std, and message recording). Anything else raises an error naming
   the module and listing the supported types — relevance is never passed through silently;
2. forward hooks replace each leaf output by its rule's graft (see :mod:`gnnreco.explain.rules`);
3. after the backward pass from one output, the relevance of a tensor :math:`a` is :math:`a \odot g`.

Relevance is stored per input feature (``[N, F]``), per message of every aggregation (``[E, F]``,
kept with its target and source index) and per bias/ε sink — O(E·F) memory, never O(N²F).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gnnreco.explain.rules import Ledger, RuleSet, supported_layers

__all__ = ["Message", "Tape", "lrp_session", "current_tape", "UnsupportedLayerError"]


class UnsupportedLayerError(TypeError):
    """A module without an LRP rule (or an unaudited composite module) was met."""


@dataclass
class Message:
    """Messages of one aggregation: ``value[M, F]``, target ``index[M]`` and source ``source[M]``.

    ``relevance`` (filled after the backward pass) is :math:`m \\odot g`, the relevance each message
    carried into its target node.
    """

    name: str
    value: Tensor
    index: Tensor
    source: Tensor | None
    relevance: Tensor | None = None

    @property
    def edge_relevance(self) -> Tensor:
        """Relevance per message summed over features, ``[M]``."""
        if self.relevance is None:
            raise RuntimeError(f"message {self.name!r}: relevance is filled only after the backward pass")
        return self.relevance.sum(-1)


@dataclass
class Tape:
    """What one explanation records: the ledger of absorbed relevance, messages, named tensors."""

    ledger: Ledger = field(default_factory=Ledger)
    messages: list[Message] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)
    lazy: list[Callable[[], Message]] = field(default_factory=list)

    def message(self, name: str, value: Tensor, index: Tensor, source: Tensor | None = None) -> Tensor:
        """Record messages ``value`` (relevance kept after backward) and return them unchanged."""
        if value.requires_grad:
            value.retain_grad()
        self.messages.append(Message(self.scoped(name), value, index.detach(), None if source is None else source.detach()))
        return value

    def keep(self, name: str, value: Tensor) -> Tensor:
        """Keep a named intermediate tensor (its relevance is read after backward)."""
        if value.requires_grad:
            value.retain_grad()
        self.tensors[name] = value
        return value

    def scoped(self, name: str) -> str:
        """``name`` prefixed with the module scope in progress."""
        return f"{self.scope[-1]}.{name}" if self.scope and self.scope[-1] else name

    def finish(self) -> None:
        for m in self.messages:
            g = m.value.grad
            m.relevance = (m.value * g).detach() if g is not None else torch.zeros_like(m.value.detach())
        for fn in self.lazy:  # messages whose relevance is computed from retained gradients
            self.messages.append(fn())
        self.lazy.clear()


_TAPES: list[Tape] = []


def current_tape() -> Tape | None:
    """The tape of the explanation in progress (None outside :func:`lrp_session`)."""
    return _TAPES[-1] if _TAPES else None


def _check_and_plan(model: nn.Module, rules: RuleSet) -> tuple[dict[str, object], dict[str, Callable], list[str]]:
    from gnnreco.explain.graph import composite_handler, supported_composites

    leaf_rules: dict[str, object] = {}
    overrides: dict[str, Callable] = {}
    composites: list[str] = []  # every module with children (audited or with an LRP forward)
    skip_prefixes: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p) for p in skip_prefixes):
            continue
        children = list(mod.children())
        rule = rules.rule_for(name, mod) if name else None
        if rule is not None and getattr(rule, "name", "") == "detach" and children:
            # a detached container: its leaves are detached too and need no other check
            for sub, leaf in mod.named_modules():
                if not list(leaf.children()):
                    leaf_rules[f"{name}.{sub}" if sub else name] = rule
            skip_prefixes.append(name + ".")
            continue
        if not children and (len(list(mod.parameters(recurse=False))) > 0 or type(mod).forward is not nn.Module.forward):
            if rule is None:
                label = name or type(mod).__name__
                raise UnsupportedLayerError(
                    f"LRP: layer {label!r} of type {type(mod).__name__} has no rule. Supported layer types: "
                    f"{', '.join(supported_layers())}; composite modules: {', '.join(supported_composites())}. "
                    "Add a rule for it to the rule set (types/patterns) or register the module.")
            leaf_rules[name] = rule
            continue
        if children:
            handler = composite_handler(mod)
            if handler is None:
                label = name or "<root>"
                raise UnsupportedLayerError(
                    f"LRP: module {label!r} of type {type(mod).__name__} is not a supported composite. Supported "
                    f"composite modules: {', '.join(supported_composites())}; supported layer types: "
                    f"{', '.join(supported_layers())}. Register it with gnnreco.explain.graph.register_composite "
                    "once its forward is checked to be linear between its child modules.")
            composites.append(name)
            if handler is not True:
                overrides[name] = handler
    return leaf_rules, overrides, composites


@contextlib.contextmanager
def lrp_session(model: nn.Module, rules: RuleSet) -> Iterator[Tape]:
    """Install the rules and LRP forwards on ``model`` for one explanation; restore it afterwards.

    The model is put in eval mode for the duration (Dropout off, BatchNorm on running statistics).
    """
    leaf_rules, overrides, composites = _check_and_plan(model, rules)
    tape = Tape()
    modules = dict(model.named_modules())
    handles = []
    saved_forward: dict[str, object] = {}
    was_training = model.training
    model.eval()

    def make_hook(rule):
        def hook(mod: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            x = inputs[0]
            if not isinstance(output, Tensor) or not output.is_floating_point():
                raise UnsupportedLayerError(f"LRP: {type(mod).__name__} returned {type(output).__name__}; "
                                            "rules apply to layers with one tensor output")
            if not torch.is_grad_enabled():
                return output
            return rule.apply(mod, x, output, tape.ledger)

        return hook

    def make_scope(name: str):
        def pre(mod, inputs):
            tape.scope.append(name)

        def post(mod, inputs, output):
            if tape.scope and tape.scope[-1] == name:
                tape.scope.pop()

        return pre, post

    try:
        for name, rule in leaf_rules.items():
            handles.append(modules[name].register_forward_hook(make_hook(rule)))
        for name, fn in overrides.items():
            mod = modules[name]
            if "forward" in mod.__dict__:
                saved_forward[name] = mod.__dict__["forward"]
            mod.forward = fn.__get__(mod, type(mod))  # type: ignore[method-assign]
        for name in composites:  # taps and LRP forwards name their records after the module they run in
            if not name:
                continue
            pre, post = make_scope(name)
            handles.append(modules[name].register_forward_pre_hook(pre))
            handles.append(modules[name].register_forward_hook(post))
        _TAPES.append(tape)
        yield tape
    finally:
        if _TAPES and _TAPES[-1] is tape:
            _TAPES.pop()
        for h in handles:
            h.remove()
        for name in overrides:
            mod = modules[name]
            if name in saved_forward:
                mod.forward = saved_forward[name]  # type: ignore[method-assign]
            else:
                del mod.forward
        model.train(was_training)
