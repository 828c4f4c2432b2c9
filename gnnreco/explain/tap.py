r"""Explanation taps: the points of a model's forward that layer-wise relevance propagation must see.

A model forward calls these functions where LRP needs more than its child layers: the messages of a
message-passing step, the gates and weights that LRP holds constant, and the engineered inputs whose
relevance an explanation reports. Outside an explanation (no tape from
:func:`gnnreco.explain.propagate.lrp_session`) each tap returns its argument unchanged, so training,
inference, tracing and export see the plain forward; inside one, the tap records what the explanation
reads. A model with taps in its forward is then explained by its own code, and no LRP copy of the
forward has to follow its changes.

* :func:`message` — messages :math:`m_{ji}` about to be aggregated onto targets ``index`` from ``source``;
  their relevance :math:`m \odot \partial y / \partial m` is kept (``Explanation.messages``).
* :func:`hold` — a factor that LRP treats as a constant (edge weights, gates, kernel weights): the
  relevance of the product goes to the other factor.
* :func:`aggregate` — an aggregation of messages (sum, mean, max, min, std) with its relevance rule: outside
  LRP it calls the layer's own aggregation; inside, the rule of :func:`gnnreco.explain.graph.lrp_aggregate`
  (std gets the variance-share rule) and the messages are recorded.
* :func:`sink` — a tensor whose relevance is booked as absorbed (e.g. class probabilities read by a
  regression head), :func:`elementwise` — a functional element-wise activation (ratio rule).
* dense layouts: :func:`knn_messages` (``[B, N, k, F]`` neighbour messages), :func:`bins` and
  :func:`bin_messages` (messages inside LSH bins, built lazily from the retained gradient) and
  :func:`attention` (scaled dot-product attention with the attention weights held constant).
* :func:`input` — an engineered network input (node, edge/pair or global inputs computed from the raw
  arguments): it becomes an explanation leaf whose relevance is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor

from gnnreco.explain.propagate import current_tape

__all__ = ["active", "message", "hold", "aggregate", "input", "sink", "elementwise", "knn_messages", "bins",
           "bin_messages", "attention", "INPUT_KEYS"]

#: Where the first engineered input of each kind is kept on the tape (read by ``explain``).
INPUT_KEYS = {"node": "encoded_inputs", "edge": "encoded_edge_inputs", "global": "encoded_global_inputs"}


def active() -> bool:
    """True inside an explanation: a layer with a fast path that records nothing (e.g. a dense ``[k, N, F]``
    neighbour layout) takes its edge-list path, whose messages the taps can record."""
    return current_tape() is not None


def message(name: str, value: Tensor, index: Tensor, source: Tensor | None = None) -> Tensor:
    """Messages ``value [E, F]`` aggregated onto ``index [E]`` (from ``source [E]``); returned unchanged."""
    tape = current_tape()
    return value if tape is None else tape.message(name, value, index, source)


def hold(value: Tensor) -> Tensor:
    """``value``, held constant under LRP (detached inside an explanation, untouched outside)."""
    return value if current_tape() is None else value.detach()


def aggregate(name: str, src: Tensor, index: Tensor, dim_size: int, reductions: Sequence[str],
              source: Tensor | None,
              plain: Callable[[Tensor, Tensor, int, Sequence[str]], Tensor] | None = None) -> Tensor:
    """Aggregate messages ``src [E, F]`` onto ``index`` with each of ``reductions``, concatenated.

    Outside an explanation this is ``plain(src, index, dim_size, reductions)``, the layer's own
    aggregation (default: the fused :func:`gnnreco.ops.multi_aggregate`); inside one, the LRP aggregation
    that records the messages (from ``source``) under ``name``. Both give the same values.
    """
    if current_tape() is None:
        if plain is None:
            from gnnreco.ops import multi_aggregate

            return multi_aggregate(src, index, tuple(reductions), dim_size=dim_size)
        return plain(src, index, dim_size, reductions)
    from gnnreco.explain.graph import lrp_multi_aggregate

    return lrp_multi_aggregate(src, index, dim_size, reductions, name, source)


def input(kind: str, value: Tensor) -> Tensor:  # noqa: A001 - the tap's name in model code reads tap.input
    """An engineered input of ``kind`` (``"node"``, ``"edge"`` or ``"global"``); an explanation leaf inside LRP.

    Every tapped input is appended to the tape's ``"inputs"`` list as ``(kind, leaf)``; the first one of
    each kind in the current module scope is also kept under :data:`INPUT_KEYS`.
    """
    tape = current_tape()
    if tape is None:
        return value
    if kind not in INPUT_KEYS:
        raise ValueError(f"tap.input: kind must be one of {sorted(INPUT_KEYS)}, got {kind!r}")
    leaf = tape.ledger.leaf("input", value)
    tape.tensors.setdefault("inputs", []).append((kind, leaf))  # type: ignore[union-attr]
    tape.tensors.setdefault(tape.scoped(INPUT_KEYS[kind]), leaf)
    return leaf


def sink(value: Tensor) -> Tensor:
    """``value`` as a relevance sink inside LRP: what reaches it is booked as absorbed, not propagated."""
    tape = current_tape()
    return value if tape is None else tape.ledger.leaf("sink", value)


def elementwise(x: Tensor, y: Tensor) -> Tensor:
    """``y = f(x)`` for a functional element-wise activation; inside LRP the ratio rule :math:`R_x = R_y`."""
    if current_tape() is None:
        return y
    from gnnreco.explain.graph import pass_through

    return pass_through(x, y)


def knn_messages(name: str, msg: Tensor, idx: Tensor, valid: Tensor) -> Tensor:
    """Neighbour messages in a dense layout, ``msg [B, N, k, F]`` from elements ``idx [B, N, k]`` (``valid``
    marks real neighbours); recorded as a flat edge list with event-major element ids inside LRP."""
    tape = current_tape()
    if tape is None:
        return msg
    import torch

    B, N, k = idx.shape
    tgt = torch.arange(B * N, device=msg.device).view(B, N, 1).expand(B, N, k).reshape(-1)
    src = (idx + (torch.arange(B, device=msg.device) * N).view(B, 1, 1)).reshape(-1)
    flat = tape.message(name, msg.reshape(B * N * k, -1), tgt, src)
    return flat.reshape(msg.shape)


@contextlib.contextmanager
def bins(perm: Tensor) -> Iterator[None]:
    """Inside LRP, the LSH bin assignment ``perm [B, K·S]`` that :func:`bin_messages` maps bins back with."""
    tape = current_tape()
    if tape is None:
        yield
        return
    tape.tensors["_lsh_perm"] = perm
    try:
        yield
    finally:
        tape.tensors.pop("_lsh_perm", None)


def bin_messages(name: str, agg: Tensor, src: Tensor, A: Tensor, norm: Tensor) -> None:
    r"""Record the bin-internal messages of :math:`a = n \odot (A\,(n \odot f))` (``[B, K, S, ·]``) inside LRP;
    their relevance is built after the backward pass from the retained gradient of ``agg``."""
    tape = current_tape()
    perm = None if tape is None else tape.tensors.get("_lsh_perm")
    if tape is None or perm is None or not agg.requires_grad:
        return
    from gnnreco.explain.graph import _lsh_message

    agg.retain_grad()
    tape.lazy.append(_lsh_message(tape.scoped(name), agg, src.detach(), A.detach(), norm.detach(), perm))


def attention(name: str, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention of ``q, k, v [B, H, N, d]`` over the real elements ``mask [B, N]``.

    Outside LRP, ``torch.nn.functional.scaled_dot_product_attention``; inside, the same values with the
    attention weights held constant (CP-LRP / the value path of AttnLRP) and the messages recorded.
    """
    if current_tape() is None:
        import torch.nn.functional as F

        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=dropout_p)
    from gnnreco.explain.graph import lrp_attention

    return lrp_attention(name, q, k, v, mask)
