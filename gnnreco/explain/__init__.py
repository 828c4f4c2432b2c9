"""gnnreco.explain: layer-wise relevance propagation (LRP) for every gnnreco GNN.

See ``docs/explain.md``. Entry points: :func:`explain`, :func:`conservation`, the rules in
:mod:`gnnreco.explain.rules` and the plots in :mod:`gnnreco.explain.plots`.
"""

from gnnreco.explain.api import Adapter, Explanation, adapter_for, conservation, explain, explain_chain
from gnnreco.explain.graph import register_composite, supported_composites
from gnnreco.explain.propagate import UnsupportedLayerError
from gnnreco.explain.rules import (
    Detach,
    Epsilon,
    Flat,
    Gamma,
    Pass,
    Rule,
    RuleSet,
    WSquare,
    ZPlus,
    load_rule_set,
    make_rule,
    supported_layers,
)

__all__ = [
    "explain", "explain_chain", "conservation", "Explanation", "Adapter", "adapter_for", "UnsupportedLayerError",
    "Rule", "Epsilon", "Gamma", "ZPlus", "WSquare", "Flat", "Pass", "Detach", "RuleSet", "load_rule_set",
    "make_rule", "supported_layers", "register_composite", "supported_composites",
]
