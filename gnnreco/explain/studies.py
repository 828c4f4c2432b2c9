r"""Physics studies with LRP: does a trained MLPF use more neighbours for charged than for neutral hadrons?

xai4hep (Mokhtar et al., arXiv 2111.12840) explained a GravNet MLPF trained on Delphes tt̄ and reported
that charged hadrons use more neighbour information than neutral hadrons. This module repeats the
measurement on gnnreco's own Delphes-style tt̄ events (:mod:`gnnreco.sim.delphes_like`) with a
short-trained :class:`~gnnreco.tasks.pflow.model.MLPFNet`:

1. :func:`make_events` / :func:`train_mlpf`: generate events and train for a wall-clock budget with the
   MLPF loss;
2. :func:`relevance_spread`: for one explanation of the class logit :math:`f_c(x_i)` of element
   :math:`i`, the per-element relevance :math:`r_j = \sum_f |R_{j,f}|`, the **neighbour share**
   :math:`1 - r_i / \sum_j r_j` and :math:`k_q`, the **number of elements that hold a fraction q of**
   :math:`\sum_j r_j` (elements sorted by :math:`r_j`, the explained one included);
3. :func:`neighbour_study`: both measures for correctly classified charged (class 1) and neutral (class 2)
   hadrons, summarised per class with a bootstrap error on the mean.

``python -m gnnreco.explain.studies train --minutes 8 --out mlpf.pt`` then
``python -m gnnreco.explain.studies measure --checkpoint mlpf.pt``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["make_events", "train_mlpf", "relevance_spread", "neighbour_study", "summarise", "load_mlpf"]

CLASS_NAMES = ("none", "ch.had", "n.had", "gamma", "e", "mu")


def make_events(n: int, seed0: int = 0, process: str = "ttbar") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` Delphes-style events ``(X [N, 12], y [N, 7])`` with seeds ``seed0 … seed0 + n − 1``."""
    from gnnreco.tasks.pflow.data import generate_pflow_event

    out = []
    for s in range(seed0, seed0 + n):
        r = generate_pflow_event(s, process=process)
        if len(r["X"]) == 0:
            continue
        out.append((torch.as_tensor(np.asarray(r["X"], np.float32)), torch.as_tensor(np.asarray(r["y"], np.float32))))
    return out


def _pad(events: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(x) for x, _ in events)
    X = torch.zeros(len(events), n, 12)
    Y = torch.zeros(len(events), n, 7)
    M = torch.zeros(len(events), n, dtype=torch.bool)
    for b, (x, y) in enumerate(events):
        X[b, : len(x)], Y[b, : len(y)], M[b, : len(x)] = x, y, True
    return X, Y, M


def train_mlpf(events: Sequence[tuple[torch.Tensor, torch.Tensor]], minutes: float = 8.0, backbone: str = "gravnet",
               batch_size: int = 4, lr: float = 2e-3, seed: int = 0, log_every: int = 50,
               **net_kwargs: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train an :class:`MLPFNet` with the MLPF loss for a wall-clock budget of ``minutes``.

    Returns the model (eval mode) and a log with the steps, epochs, last losses and the budget used.
    """
    from gnnreco.tasks.pflow.loss import mlpf_loss
    from gnnreco.tasks.pflow.model import MLPFNet

    torch.manual_seed(seed)
    model = MLPFNet(backbone=backbone, **net_kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    step, epoch, losses = 0, 0, []
    while time.perf_counter() - t0 < minutes * 60:
        order = rng.permutation(len(events))
        for i in range(0, len(order), batch_size):
            X, Y, M = _pad([events[j] for j in order[i:i + batch_size]])
            loss, _ = mlpf_loss(model(X, M), X, Y, M)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss))
            step += 1
            if log_every and step % log_every == 0:
                print(f"step {step} epoch {epoch} loss {np.mean(losses[-log_every:]):.3f} "
                      f"t {time.perf_counter() - t0:.0f}s", flush=True)
            if time.perf_counter() - t0 >= minutes * 60:
                break
        epoch += 1
    model.eval()
    return model, {"steps": step, "epochs": epoch, "loss_last50": float(np.mean(losses[-50:])),
                   "seconds": time.perf_counter() - t0, "backbone": backbone, "net": net_kwargs}


def load_mlpf(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model saved by ``python -m gnnreco.explain.studies train`` (state dict + constructor arguments)."""
    from gnnreco.tasks.pflow.model import MLPFNet

    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "state_dict" not in blob or "log" not in blob:
        raise ValueError(f"{path}: expected a dict with 'state_dict' and 'log' (written by gnnreco.explain.studies)")
    log = blob["log"]
    model = MLPFNet(backbone=log["backbone"], **log["net"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), log


def relevance_spread(node_relevance: torch.Tensor, self_index: int, q: float = 0.9) -> dict[str, float]:
    r"""How widely the relevance of one explained element is spread over the event.

    Args:
        node_relevance: :math:`R_{j,f}`, ``[N, F]`` (one event).
        self_index: :math:`i`, the explained element.
        q: fraction of :math:`\sum_j r_j` for :math:`k_q`.

    Returns:
        ``neighbour_share`` :math:`1 - r_i/\sum_j r_j`; ``k_q`` the smallest number of elements whose
        :math:`r_j` add up to ``q`` of the total; ``k_q_neighbours`` the same for neighbours only
        (:math:`r_i` excluded from total and count).
    """
    r = node_relevance.detach().abs().sum(-1).double()
    tot = float(r.sum())
    if tot <= 0:
        return {"neighbour_share": 0.0, "k_q": 0.0, "k_q_neighbours": 0.0}
    srt = torch.sort(r, descending=True).values
    k = int(torch.searchsorted(torch.cumsum(srt, 0), torch.tensor(q * tot, dtype=srt.dtype)).item()) + 1
    rn = torch.cat([r[:self_index], r[self_index + 1:]])
    totn = float(rn.sum())
    kn = 0
    if totn > 0:
        srtn = torch.sort(rn, descending=True).values
        kn = int(torch.searchsorted(torch.cumsum(srtn, 0), torch.tensor(q * totn, dtype=srtn.dtype)).item()) + 1
    return {"neighbour_share": 1.0 - float(r[self_index]) / tot, "k_q": float(k), "k_q_neighbours": float(kn)}


def neighbour_study(model: torch.nn.Module, events: Sequence[tuple[torch.Tensor, torch.Tensor]],
                    classes: Sequence[int] = (1, 2), per_event: int = 6, q: float = 0.9,
                    rules: Any = None, seed: int = 0) -> dict[int, list[dict[str, float]]]:
    """Explain the true-class logit of up to ``per_event`` correctly classified elements of each class per
    event and measure :func:`relevance_spread`. Returns ``{class: [measures...]}``."""
    from gnnreco.explain import explain

    rng = np.random.default_rng(seed)
    out: dict[int, list[dict[str, float]]] = {c: [] for c in classes}
    for X, y in events:
        mask = torch.ones(1, len(X), dtype=torch.bool)
        with torch.no_grad():
            pred = model(X[None], mask)[1][0].argmax(-1)
        cls = y[:, 0].long()
        for c in classes:
            ok = torch.where((cls == c) & (pred == c))[0].numpy()
            for j in rng.permutation(ok)[:per_event]:
                ex = explain(model, (X[None], mask), ("pid", int(j), c), rules=rules)
                m = relevance_spread(ex.node_relevance[: len(X)], int(j), q)
                m.update(event_size=float(len(X)), is_track=float(X[j, 0] == 2), logit=ex.output)
                out[c].append(m)
    return out


def summarise(result: dict[int, list[dict[str, float]]], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Mean, bootstrap standard error and median of each measure per class."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for c, rows in result.items():
        name = CLASS_NAMES[c]
        out[name] = {"n": len(rows)}
        if not rows:
            continue
        for key in ("neighbour_share", "k_q", "k_q_neighbours"):
            v = np.array([r[key] for r in rows])
            boots = [rng.choice(v, len(v)).mean() for _ in range(n_boot)]
            out[name][key] = {"mean": float(v.mean()), "sem": float(np.std(boots)), "median": float(np.median(v))}
    return out


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--minutes", type=float, default=8.0)
    t.add_argument("--events", type=int, default=400)
    t.add_argument("--backbone", default="gravnet")
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--geo-scale", type=float, default=16.0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--checkpoint", required=True)
    m.add_argument("--events", type=int, default=20)
    m.add_argument("--per-event", type=int, default=6)
    m.add_argument("--q", type=float, default=0.9)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd == "train":
        events = make_events(a.events, seed0=0)
        kw: dict[str, Any] = {"width": a.width, "geo_scale": a.geo_scale}
        if a.backbone == "gravnet":
            kw.update(k=16, space_dim=4, prop_dim=32)
        model, log = train_mlpf(events, a.minutes, a.backbone, **kw)
        log["train_events"] = [0, a.events]
        torch.save({"state_dict": model.state_dict(), "log": log}, a.out)
        print(json.dumps(log))
    else:
        model, log = load_mlpf(a.checkpoint)
        events = make_events(a.events, seed0=100_000)  # never seen in training (seeds 0 … n_train − 1)
        with torch.no_grad():
            acc = {}
            for c in (1, 2):
                hit = tot = 0
                for X, y in events:
                    pred = model(X[None], torch.ones(1, len(X), dtype=torch.bool))[1][0].argmax(-1)
                    sel = y[:, 0].long() == c
                    hit += int((pred[sel] == c).sum())
                    tot += int(sel.sum())
                acc[CLASS_NAMES[c]] = hit / max(tot, 1)
        t0 = time.perf_counter()
        res = neighbour_study(model, events, per_event=a.per_event, q=a.q)
        summ = {"recall": acc, "q": a.q, "seconds": time.perf_counter() - t0, "train": log,
                **summarise(res)}
        print(json.dumps(summ, indent=1))
        if a.json:
            Path(a.json).write_text(json.dumps(summ, indent=1))


if __name__ == "__main__":
    _main()
