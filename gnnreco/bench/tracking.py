"""Tracking benchmark: graph construction, GNN edge classification and track building at μ = 200.

``python -m gnnreco.bench.tracking [--quick] [--write]``

1. Simulate a training sample at ``mu_train`` (default 200; pixel detector of the TrackML-like geometry,
   events cached on disk under ``cache_dir``), process it into layer-pair graphs, train the edge
   filter (:mod:`gnnreco.tasks.tracking.filter`, cut chosen for ``filter_eff`` of the target edges on
   held-out events) and an :class:`InteractionGNN` on the filtered graphs on one CPU thread within
   ``train_budget_s``; or load both from ``checkpoint``.
2. Take ``n_test`` events at ``mu_test`` (default 200) and time each stage per event: graph building
   (:func:`process_event`: hit table, layer pairs, features, labels), the edge filter, GNN inference
   and track building (CC + walkthrough).
3. Report the graph-construction efficiency of the target edges (consecutive hits of particles with
   pT > 1 GeV, ≥ 3 hits), the GNN edge efficiency and purity at the edge cut and at the cut that reaches
   95 % purity, the double-majority track efficiency (pT > 1 GeV, |η| < 4) and fake rate, and the
   TrackML score, next to two rule-based references measured in the same run: the *truth-score upper
   bound* (true edges scored 1, fakes 0, same track builder) and *graph only* (every constructed edge
   kept, connected components).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gnnreco.bench.report import markdown_table, write_section

__all__ = ["run"]

#: the edge features of the benchmark networks; the cluster-shape ones are added unless ``--no-cluster-shape``
EDGE_NAMES: tuple[str, ...] = ("dr", "dphi", "dz", "deta", "phislope")


def _to_data(ev: dict[str, np.ndarray]):
    from gnnreco.data.datamodule import event_to_data

    return event_to_data({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ev.items()})


def _raw_event(seed: int, mu: float, preset: str, volumes: tuple[int, ...], cache_dir: str | None,
               cells: bool = False) -> dict:
    """Simulated event (``hits``, ``particles``, ``truth``; with ``cells`` also ``cells`` and the
    geometry's ``detector`` table) restricted to ``volumes``; cached on disk.

    With ``cache_dir`` the tables are stored as parquet (``<preset>_mu<mu>_<seed>.<table>.parquet``) and
    read back on the next call, so repeated benchmark runs do not re-simulate (~5 s per μ = 200 event);
    a cached event without its cells table is simulated again when ``cells`` are asked for.
    """
    import pandas as pd

    from gnnreco.tasks.tracking.data import simulate

    names = ("hits", "particles", "truth") + (("cells",) if cells else ())
    out = None
    if cache_dir:
        from pathlib import Path

        base = Path(cache_dir) / f"{preset}_mu{mu:g}_{int(seed)}"
        paths = {k: base.with_name(base.name + f".{k}.parquet") for k in names}
        if all(p.exists() for p in paths.values()):
            out = {k: pd.read_parquet(p) for k, p in paths.items()}
    if out is None:
        ev = simulate(seed, preset=preset, mu=mu)
        hits = ev.hits[ev.hits["volume_id"].isin(list(volumes))].reset_index(drop=True)
        truth = ev.truth[ev.truth["hit_id"].isin(hits["hit_id"])].reset_index(drop=True)
        out = {"hits": hits, "particles": ev.particles, "truth": truth}
        if cells:
            out["cells"] = ev.cells[ev.cells["hit_id"].isin(hits["hit_id"])].reset_index(drop=True)
        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            for k, p in paths.items():
                tmp = p.with_name(p.name + ".tmp")
                out[k].to_parquet(tmp)
                tmp.replace(p)
    if cells:
        out["detector"] = _detector_table(preset)
    return out


def _detector_table(preset: str):
    """The ``detectors.csv`` table of a simulator preset (built once per process)."""
    if preset not in _DETECTORS:
        from gnnreco.sim.tracker import TrackerSimulator

        _DETECTORS[preset] = TrackerSimulator.from_preset(preset).detector_table()
    return _DETECTORS[preset]


_DETECTORS: dict[str, Any] = {}


def _construction_eff(ev: dict[str, np.ndarray]) -> tuple[int, int]:
    """(found, total) target modulewise truth edges: a target particle's hits ordered by distance from
    the origin, grouped into stations per layer, each station linked to the next (reference §1.1)."""
    from gnnreco.graph import construction_metrics, truth_graph

    c = ev["hit_coords"].astype(np.float64)
    R = np.sqrt(c[:, 0] ** 2 + c[:, 2] ** 2)
    tg = truth_graph(torch.from_numpy(ev["hit_particle_id"]), "modulewise", order=torch.from_numpy(R),
                     module_id=torch.from_numpy(ev["hit_layer"]),
                     hit_mask=torch.from_numpy(ev["hit_target"]))
    if tg.shape[1] == 0:
        return 0, 0
    df = construction_metrics(torch.from_numpy(ev["edge_index"]), tg, num_nodes=len(c))
    row = df.iloc[0]
    return int(row["n_found"]), int(row["n_truth"])


def _train_gnn(events: list, epochs: int, hidden: int, iters: int, aggregations: tuple[str, ...], lr: float,
               budget_s: float, seed: int, sectors: int = 1, verbose: bool = False, device: str = "cpu",
               init_state: Mapping[str, Any] | None = None):
    """Train an :class:`InteractionGNN` one graph per step (weighted BCE, acorn weighting) within a wall-time
    budget; with ``sectors`` > 1 every event is split into that many φ sectors (edges by source hit).
    On ``device`` "cuda" every graph is moved to the GPU once; the returned network is on the CPU.
    ``init_state`` starts from those weights (a continued training)."""
    from gnnreco.nn.losses import weighted_bce_loss
    from gnnreco.tasks.tracking.model import InteractionGNN

    torch.manual_seed(seed)
    net = InteractionGNN(node_features=events[0]["x"].shape[1], edge_features=events[0]["edge_attr"].shape[1],
                         hidden=hidden, n_graph_iters=iters, aggregations=aggregations)
    if init_state is not None:
        net.load_state_dict(init_state)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    data = []
    for e in events:
        if sectors <= 1:
            data.append(_to_data(e))
            continue
        # φ sectors of the source hit: smaller graphs, more optimiser steps for the same edges
        from gnnreco.tasks.tracking.filter import select_edges

        phi_src = e["hit_coords"][e["edge_index"][0], 1]
        sec = np.clip(((phi_src + np.pi) / (2 * np.pi) * sectors).astype(np.int64), 0, sectors - 1)
        data.extend(_to_data(select_edges(e, sec == k)) for k in range(sectors))
    if torch.device(device).type != "cpu":
        data = [d.to(device) for d in data]
    rng = np.random.default_rng(seed)
    # cosine decay over the steps the budget allows (estimated after the first epoch); the budget is
    # wall time (the machine is shared), the CPU time is reported
    t0 = time.process_time()
    w0 = time.perf_counter()
    n_steps = done_epochs = 0
    total = max(epochs * len(data), 1)
    sched_lr = lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))  # noqa: E731
    for ep in range(epochs):
        net.train()
        losses = []
        for i in rng.permutation(len(data)):
            d = data[i]
            if d.edge_index.shape[1] == 0:
                continue
            for g in opt.param_groups:
                g["lr"] = lr * sched_lr(n_steps)
            loss = weighted_bce_loss(net(d.x, d.edge_index, d.edge_attr), d.y, d.weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.detach())
            n_steps += 1
        done_epochs += 1
        used = time.perf_counter() - w0
        if ep == 0 and budget_s:
            # re-plan the cosine schedule for the number of epochs that fit in the budget
            total = max(1, min(epochs, int(budget_s / max(used, 1e-9))) * len(data))
        if verbose:
            print(f"[tracking bench] GNN epoch {ep + 1}: loss {float(torch.stack(losses).mean()) if losses else 0:.4f}, {used:.0f}s wall, "
                  f"{time.process_time() - t0:.0f}s CPU", flush=True)
        if (budget_s and used > budget_s) or n_steps >= total:  # the schedule's learning rate is 0 from here
            break
    return net.cpu().eval(), time.process_time() - t0, done_epochs, n_steps, time.perf_counter() - w0


def _cut_at_purity(scores: np.ndarray, y: np.ndarray, target: np.ndarray, purity: float) -> tuple[float, float]:
    """Lowest score cut whose purity reaches ``purity``, and the target-edge efficiency there."""
    order = np.argsort(-scores)
    s, t = scores[order], y[order]
    cum_true = np.cumsum(t)
    pur = cum_true / np.arange(1, len(s) + 1)
    ok = np.nonzero(pur >= purity)[0]
    if ok.size == 0:
        return float("nan"), 0.0
    k = ok.max()
    cut = float(s[k])
    return cut, float((target & (scores >= cut)).sum() / max(target.sum(), 1))


def _processed_event(args: tuple) -> dict | None:
    """Simulate (or read from the cache) and process one event: the unit of work of ``--workers``."""
    from gnnreco.tasks.tracking.data import process_event

    seed, mu, preset, volumes, cache_dir, edge_names = args
    torch.set_num_threads(1)
    raw = _raw_event(seed, mu, preset, volumes, cache_dir, cells=_needs_cells(edge_names))
    return process_event(raw, volumes=list(volumes), edge_feature_names=edge_names)


def _needs_cells(edge_names) -> bool:
    from gnnreco.tasks.tracking.data import needs_cluster_shape

    return needs_cluster_shape(edge_names)


def _simulate_one(args: tuple) -> None:
    torch.set_num_threads(1)
    _raw_event(*args[:5], cells=_needs_cells(args[5]))


def _event_map(fn, seeds: list[int], mu: float, preset: str, volumes: tuple[int, ...], cache_dir: str | None,
               workers: int, edge_names: tuple[str, ...] = EDGE_NAMES) -> list:
    """``fn((seed, mu, preset, volumes, cache_dir, edge_names))`` for every seed, in order; ``workers`` > 1
    uses a process pool (fork)."""
    jobs = [(int(s), mu, preset, tuple(volumes), cache_dir, tuple(edge_names)) for s in seeds]
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        return pool.map(fn, jobs, chunksize=1)


def _simulate_cached(seeds: list[int], mu: float, preset: str, volumes: tuple[int, ...], cache_dir: str,
                     workers: int, edge_names: tuple[str, ...] = EDGE_NAMES) -> None:
    """Simulate the events of ``seeds`` into ``cache_dir`` with a pool of ``workers`` processes."""
    _event_map(_simulate_one, seeds, mu, preset, volumes, cache_dir, workers, edge_names)


def _train_pipeline(n_train: int, mu_train: float, seed: int, preset: str, volumes: tuple[int, ...],
                    cache_dir: str | None, use_filter: bool, filter_eff: float, filter_hidden: int,
                    filter_budget_s: float, epochs: int, hidden: int, iters: int, aggregations: tuple[str, ...],
                    lr: float, train_budget_s: float, sectors: int, say, workers: int = 1, device: str = "cpu",
                    filter_from: str | None = None, edge_names: tuple[str, ...] = EDGE_NAMES,
                    init_from: str | None = None) -> dict[str, Any]:
    """Train the filter (optional) and the GNN on ``n_train`` processed events; return the checkpoint dict.

    ``workers`` processes simulate and process the training events in parallel; ``device`` is where the GNN
    trains (the filter always trains on the CPU); ``filter_from`` reuses the filter (weights and cut) of
    another checkpoint instead of training one (it must use the same ``edge_names``). ``init_from``
    continues the GNN of a checkpoint (its width, iterations and edge features; its filter unless
    ``filter_from`` names another).
    """
    from gnnreco.data.datamodule import event_seed
    from gnnreco.tasks.tracking.filter import EdgeFilter, filter_event, train_filter

    init = None
    if init_from:
        init = torch.load(init_from, map_location="cpu", weights_only=False)
        ic = init["config"]
        hidden, iters, aggregations = int(ic["hidden"]), int(ic["iters"]), tuple(ic["aggregations"])
        edge_names = tuple(ic.get("edge_feature_names", EDGE_NAMES))
        filter_from = filter_from or init_from
        say(f"[tracking bench] continuing the GNN of {init_from} ({init['gnn_steps']} steps, h={hidden}, {iters} it.)")
    t0 = time.perf_counter()
    events = [ev for ev in _event_map(_processed_event, [event_seed(seed, i) for i in range(n_train)], mu_train,
                                      preset, volumes, cache_dir, workers, edge_names)
              if ev is not None and ev["edge_index"].shape[1] > 0]
    if not events:
        raise RuntimeError("tracking bench: no training event has edges")
    say(f"[tracking bench] {len(events)} training events at mu={mu_train:g} in {time.perf_counter() - t0:.0f}s "
        f"({workers} worker(s))")
    ckpt: dict[str, Any] = {"config": {"hidden": hidden, "iters": iters, "aggregations": list(aggregations),
                                       "node_features": int(events[0]["x"].shape[1]),
                                       "edge_features": int(events[0]["edge_attr"].shape[1]),
                                       "use_filter": use_filter, "filter_eff": filter_eff,
                                       "filter_hidden": filter_hidden, "mu_train": mu_train, "n_train": len(events),
                                       "edge_feature_names": list(edge_names)}}
    if use_filter and filter_from:
        src = torch.load(filter_from, map_location="cpu", weights_only=False)
        net_f = _load_filter(src)
        if net_f is None:
            raise ValueError(f"--filter-from {filter_from}: the checkpoint has no filter")
        cut = float(src["filter_cut"])
        src_names = tuple(src["config"].get("edge_feature_names", EDGE_NAMES))
        if src_names != tuple(edge_names):
            raise ValueError(f"--filter-from {filter_from}: its filter uses the edge features {list(src_names)}, "
                             f"this training {list(edge_names)}")
        ckpt["config"]["filter_hidden"] = src["config"]["filter_hidden"]
        ckpt["config"]["filter_eff"] = src["config"].get("filter_eff", filter_eff)
        say(f"[tracking bench] filter and cut {cut:.3f} from {filter_from}")
        with torch.inference_mode():
            events = [filter_event(net_f, ev, cut)[0] for ev in events]
        ckpt.update(filter_state=net_f.state_dict(), filter_cut=cut, filter_train_s=src.get("filter_train_s"),
                    filter_epochs=src.get("filter_epochs"), filter_kept_val=src.get("filter_kept_val"),
                    filter_from=str(filter_from))
    elif use_filter:
        n_val = max(1, len(events) // 10)
        fit, val = events[:-n_val], events[-n_val:]
        net_f = EdgeFilter(ckpt["config"]["node_features"], ckpt["config"]["edge_features"], hidden=filter_hidden,
                           n_layers=3)
        res = train_filter(fit or val, net_f, epochs=12, budget_s=filter_budget_s, seed=seed)
        net_f = res["net"]
        cut, kept = _filter_cut(net_f, val, filter_eff)
        say(f"[tracking bench] filter: {res['epochs']} epochs in {res['cpu_s']:.0f}s CPU, cut {cut:.3f} keeps "
            f"{100 * kept:.1f}% of the validation edges at {100 * filter_eff:.1f}% target efficiency")
        events = [filter_event(net_f, ev, cut)[0] for ev in events]
        ckpt.update(filter_state=net_f.state_dict(), filter_cut=cut, filter_train_s=res["cpu_s"],
                    filter_epochs=res["epochs"], filter_kept_val=kept)
    net, t_train, done_epochs, n_steps, w_train = _train_gnn(events, epochs, hidden, iters, aggregations, lr,
                                                             train_budget_s, seed, sectors, verbose=True,
                                                             device=device,
                                                             init_state=init["gnn_state"] if init else None)
    where = torch.cuda.get_device_name(0) if torch.device(device).type == "cuda" else "CPU, one thread"
    say(f"[tracking bench] GNN trained {done_epochs} epochs ({n_steps} steps) in {t_train:.0f}s CPU, "
        f"{w_train:.0f}s wall on {where}")
    ckpt.update(gnn_state=net.state_dict(), gnn_train_s=t_train, gnn_train_wall_s=w_train, gnn_epochs=done_epochs,
                gnn_steps=n_steps, sectors=sectors, train_device=where, lr=lr)
    if init:  # the stages before this one: the source's own earlier stages, then the source itself
        ckpt["stages"] = [*init.get("stages", []),
                          {k: init.get(k) for k in ("gnn_steps", "gnn_epochs", "gnn_train_s", "gnn_train_wall_s", "lr",
                                                    "train_device")} | {"n_train": init["config"].get("n_train")}]
        ckpt["init_from"] = str(init_from)
    return ckpt


def _earlier_stages(ckpt: Mapping[str, Any]) -> str:
    """", continuing N steps of earlier training (...)" for a checkpoint made with ``init_from``."""
    st = ckpt.get("stages") or []
    if not st:
        return ""
    parts = [f"{s.get('gnn_steps')} steps at lr {s.get('lr')} on {s.get('n_train')} events" for s in st]
    return f", continuing {sum(int(s.get('gnn_steps') or 0) for s in st)} steps of earlier training ({'; '.join(parts)})"


def _load_filter(ckpt: Mapping[str, Any]):
    """The checkpoint's edge filter (eval mode), or None when it was trained without one."""
    from gnnreco.tasks.tracking.filter import EdgeFilter

    c = ckpt["config"]
    if not c.get("use_filter") or "filter_state" not in ckpt:
        return None
    net_f = EdgeFilter(c["node_features"], c["edge_features"], hidden=c["filter_hidden"], n_layers=3)
    net_f.load_state_dict(ckpt["filter_state"])
    return net_f.eval()


def _load_nets(ckpt: Mapping[str, Any]):
    from gnnreco.tasks.tracking.model import InteractionGNN

    c = ckpt["config"]
    net = InteractionGNN(node_features=c["node_features"], edge_features=c["edge_features"], hidden=c["hidden"],
                         n_graph_iters=c["iters"], aggregations=tuple(c["aggregations"]))
    net.load_state_dict(ckpt["gnn_state"])
    return net.eval(), _load_filter(ckpt)


#: validation events of :func:`recut_filter`
N_RECUT_EVENTS = 5


def recut_filter(ckpt: dict, net_f: torch.nn.Module | None, efficiency: float, *, seed: int = 0, mu: float = 200.0,
                 preset: str = "trackml", volumes: tuple[int, ...] = (7, 8, 9),
                 cache_dir: str | None = "data/tracking_bench", n_events: int = N_RECUT_EVENTS,
                 events: list[Mapping[str, np.ndarray]] | None = None) -> dict:
    """A copy of checkpoint ``ckpt`` whose filter cut keeps the fraction ``efficiency`` of the target edges
    of ``n_events`` validation events (seeds ``event_seed(seed + 2, i)``, disjoint from the training seeds
    ``event_seed(seed, i)`` and the test seeds ``event_seed(seed + 1, i)``).

    A looser cut raises the ceiling of the GNN's edge efficiency (an edge the filter drops scores 0) at
    the price of more edges for the GNN; the GNN itself is not retrained. ``events``: processed events to
    use instead of simulating the validation events."""
    from gnnreco.data.datamodule import event_seed

    if net_f is None:
        raise ValueError("filter_recut: the checkpoint has no filter (it was trained with --no-filter)")
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"filter_recut: the target-edge efficiency must be in (0, 1], got {efficiency}")
    names = tuple(ckpt["config"].get("edge_feature_names", EDGE_NAMES))
    if events is None:
        events = [_processed_event((event_seed(seed + 2, i), mu, preset, volumes, cache_dir, names))
                  for i in range(n_events)]
    events = [ev for ev in events if ev is not None and ev["edge_index"].shape[1]]
    if not events:
        raise ValueError("filter_recut: no validation event with edges")
    cut, kept = _filter_cut(net_f, events, efficiency)
    return dict(ckpt, filter_cut=cut, filter_kept_val=kept, config=dict(ckpt["config"], filter_eff=float(efficiency)))


def _filter_cut(net_f: torch.nn.Module, events: list, efficiency: float) -> tuple[float, float]:
    """The filter logit cut that keeps the fraction ``efficiency`` of the target edges of ``events``,
    and the fraction of their edges it keeps (training's cut and :func:`recut_filter` alike)."""
    from gnnreco.tasks.tracking.filter import cut_for_efficiency, filter_event

    logits = np.concatenate([filter_event(net_f, ev, -math.inf)[1] for ev in events])
    target = np.concatenate([ev["edge_target"] for ev in events])
    cut = float(cut_for_efficiency(logits, target, efficiency))
    return cut, float(np.mean(logits >= cut))


def run(quick: bool = False, n_train: int | None = None, n_test: int | None = None, mu_train: float | None = None,
        mu_test: float = 200.0, epochs: int | None = None, hidden: int = 16, iters: int = 4,
        aggregations: tuple[str, ...] = ("sum", "max"), lr: float = 3e-3, edge_cut: float = 0.5,
        train_budget_s: float | None = None, threads: int = 2, seed: int = 0, preset: str = "trackml",
        volumes: tuple[int, ...] = (7, 8, 9), use_filter: bool = True, filter_eff: float = 0.995,
        filter_hidden: int = 32, filter_budget_s: float = 120.0, sectors: int = 4, cache_dir: str | None = "data/tracking_bench",
        checkpoint: str | None = None, junction_cut: float = 0.3, verbose: bool = True, workers: int = 1,
        train_device: str = "cpu", filter_from: str | None = None, train_only: bool = False,
        device: str = "cpu", cluster_shape: bool = True, init_from: str | None = None,
        filter_recut: float | None = None) -> str:
    """Run the benchmark and return a Markdown table (see the module docstring).

    ``junction_cut`` is the score cut of the junction-removal builder (0.3: the best efficiency / fake-rate
    trade-off on held-out training events 40-45 of the default checkpoint). With ``checkpoint`` the trained filter and GNN are read from that file when it exists (no
    retraining) and written there after training otherwise. ``threads`` torch threads are used at
    inference (training always uses one). ``workers`` processes simulate the training events,
    ``train_device`` is where the GNN trains ("cuda" on a GPU node), ``filter_from`` takes the filter of
    another checkpoint, and ``train_only`` returns after saving the checkpoint (no test loop). ``device``
    runs the filter and GNN of the test loop there (the stage times then include the transfers); the
    test events are simulated first by ``workers`` processes when they are not cached. ``cluster_shape``
    trains with the cluster-shape edge features (:data:`gnnreco.tasks.tracking.data.SHAPE_EDGE_FEATURES`;
    the events are then simulated with their cells); a loaded checkpoint uses the features it was trained with.
    ``init_from`` continues the training of another checkpoint's GNN (its settings and filter).
    ``filter_recut`` re-chooses the filter cut of the (loaded or trained) checkpoint for this target-edge
    efficiency on :data:`N_RECUT_EVENTS` validation events (seeds ``event_seed(seed + 2, i)``, neither
    training nor test), as :func:`recut_filter`; the GNN is unchanged.
    """
    from pathlib import Path

    from gnnreco.data.datamodule import event_seed
    from gnnreco.tasks.tracking.data import SHAPE_EDGE_FEATURES, process_event
    from gnnreco.tasks.tracking.filter import select_edges
    from gnnreco.tasks.tracking.metrics import edge_metrics, track_metrics, trackml_score
    from gnnreco.tasks.tracking.reco import cc_and_walk_tracks, cc_tracks, junction_removal_tracks

    n_train = n_train if n_train is not None else (8 if quick else 40)
    n_test = n_test if n_test is not None else (3 if quick else 100)
    mu_train = mu_train if mu_train is not None else 200.0
    epochs = epochs if epochs is not None else (2 if quick else 200)
    train_budget_s = train_budget_s if train_budget_s is not None else (60.0 if quick else 1500.0)
    say = print if verbose else (lambda *a, **k: None)

    ckpt = None
    if checkpoint and Path(checkpoint).exists():
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        say(f"[tracking bench] loaded {checkpoint}: {ckpt['gnn_steps']} GNN steps, config {ckpt['config']}")
    else:
        torch.set_num_threads(1)
        ckpt = _train_pipeline(n_train, mu_train, seed, preset, volumes, cache_dir, use_filter, filter_eff,
                               filter_hidden, filter_budget_s if not quick else 20.0, epochs, hidden, iters,
                               tuple(aggregations), lr, train_budget_s, sectors, say, workers=workers,
                               device=train_device, filter_from=filter_from,
                               edge_names=EDGE_NAMES + (SHAPE_EDGE_FEATURES if cluster_shape else ()),
                               init_from=init_from)
        if checkpoint:
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(checkpoint) + ".tmp")
            torch.save(ckpt, tmp)
            tmp.replace(checkpoint)
            say(f"[tracking bench] saved {checkpoint}")
    # the features the networks were trained with (an ``init_from`` training keeps its source's)
    edge_names = tuple(ckpt["config"].get("edge_feature_names", EDGE_NAMES))
    if train_only:
        return (f"trained: {ckpt['gnn_epochs']} epochs, {ckpt['gnn_steps']} steps, "
                f"{ckpt['gnn_train_wall_s']:.0f} s wall on {ckpt.get('train_device', 'CPU')}; config {ckpt['config']}")
    net, net_f = _load_nets(ckpt)
    if filter_recut is not None:
        ckpt = recut_filter(ckpt, net_f, filter_recut, seed=seed, mu=mu_test, preset=preset, volumes=volumes,
                            cache_dir=cache_dir)
        say(f"[tracking bench] filter cut re-chosen for {100 * filter_recut:.2f}% target-edge efficiency on "
            f"{N_RECUT_EVENTS} validation events: {ckpt['filter_cut']:.3f} keeps {100 * ckpt['filter_kept_val']:.1f}% "
            "of their edges")
    dev = torch.device(device)
    net = net.to(dev)
    net_f = net_f.to(dev) if net_f is not None else None
    cfg = ckpt["config"]
    torch.set_num_threads(threads)

    stages = ("graph", "filter", "gnn", "walk", "cc", "junction")
    tim: dict[str, list[float]] = {k: [] for k in stages}
    wall: dict[str, list[float]] = {k: [] for k in stages}
    cons = [0, 0]
    filt = [0, 0]
    pooled = {"scores": [], "y": [], "target": []}
    per = {k: [] for k in ("gnn_walk", "gnn_cc", "gnn_junction", "truth_walk", "graph_cc")}
    scores_tml = {k: [] for k in per}
    sizes = []
    if workers > 1 and cache_dir and n_test > 1:
        t = time.perf_counter()
        _simulate_cached([event_seed(seed + 1, i) for i in range(n_test)], mu_test, preset, volumes, cache_dir,
                         workers, edge_names)
        say(f"[tracking bench] {n_test} test events simulated or found in {time.perf_counter() - t:.0f}s")
    load0 = _load()
    t_loop = time.perf_counter()
    for i in range(n_test):
        raw = _raw_event(event_seed(seed + 1, i), mu_test, preset, volumes, cache_dir, cells=_needs_cells(edge_names))
        t, tw = time.process_time(), time.perf_counter()
        ev = process_event(raw, volumes=list(volumes), edge_feature_names=edge_names)
        tim["graph"].append(time.process_time() - t)
        wall["graph"].append(time.perf_counter() - tw)
        if ev is None:
            continue
        n = int(ev["num_nodes"][0])
        n_all = ev["edge_index"].shape[1]
        f, tot = _construction_eff(ev)
        cons[0] += f
        cons[1] += tot
        t, tw = time.process_time(), time.perf_counter()
        if net_f is not None and n_all:
            with torch.inference_mode():
                lf = net_f(torch.from_numpy(ev["x"]).to(dev), torch.from_numpy(ev["edge_index"]).to(dev),
                           torch.from_numpy(ev["edge_attr"]).to(dev)).cpu().numpy()
            keep = lf >= ckpt["filter_cut"]
        else:
            keep = np.ones(n_all, bool)
        evf = select_edges(ev, keep)
        tim["filter"].append(time.process_time() - t)
        wall["filter"].append(time.perf_counter() - tw)
        filt[0] += int((ev["edge_target"] & keep).sum())
        filt[1] += int(ev["edge_target"].sum())
        ei = evf["edge_index"]
        sizes.append((n, n_all, ei.shape[1]))
        d = _to_data(evf)
        t, tw = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            scores = (torch.sigmoid(net(d.x.to(dev), d.edge_index.to(dev), d.edge_attr.to(dev))).cpu().numpy()
                      if ei.shape[1] else np.zeros(0))
        tim["gnn"].append(time.process_time() - t)
        wall["gnn"].append(time.perf_counter() - tw)
        full = np.zeros(n_all, np.float32)  # edges dropped by the filter score 0
        full[keep] = scores
        pooled["scores"].append(full)
        pooled["y"].append(ev["y"])
        pooled["target"].append(ev["edge_target"])
        builds = {}
        t, tw = time.process_time(), time.perf_counter()
        builds["gnn_walk"] = cc_and_walk_tracks(n, ei, scores, ev["hit_coords"])
        tim["walk"].append(time.process_time() - t)
        wall["walk"].append(time.perf_counter() - tw)
        t, tw = time.process_time(), time.perf_counter()
        builds["gnn_cc"] = cc_tracks(n, ei, scores, edge_cut)
        tim["cc"].append(time.process_time() - t)
        wall["cc"].append(time.perf_counter() - tw)
        t, tw = time.process_time(), time.perf_counter()
        builds["gnn_junction"] = junction_removal_tracks(n, ei, scores, junction_cut)
        tim["junction"].append(time.process_time() - t)
        wall["junction"].append(time.perf_counter() - tw)
        builds["truth_walk"] = cc_and_walk_tracks(n, ei, evf["y"].astype(float), ev["hit_coords"])
        builds["graph_cc"] = cc_tracks(n, ev["edge_index"], np.ones(n_all), 0.5)
        den = ev["particle_is_target"] & (ev["particle_pt"] > 1.0) & (np.abs(ev["particle_eta"]) < 4.0)
        for k, lab in builds.items():
            per[k].append(track_metrics(lab, ev["hit_particle_id"], ev["particle_id"], ev["particle_nhits"],
                                        denominator=den, definitions=("double_majority",), return_details=True))
            scores_tml[k].append(trackml_score(ev["hit_id"], ev["hit_particle_id"], ev["hit_weight"], lab))
        if verbose and (i + 1) % max(1, n_test // 10) == 0:
            say(f"[tracking bench] test event {i + 1}/{n_test}: {n} hits, {n_all} -> {ei.shape[1]} edges, "
                f"graph {tim['graph'][-1]:.2f}s filter {tim['filter'][-1]:.2f}s gnn {tim['gnn'][-1]:.2f}s "
                f"walk {tim['walk'][-1]:.2f}s CPU", flush=True)
    load1 = _load()
    t_loop = time.perf_counter() - t_loop

    S = np.concatenate(pooled["scores"])
    Y = np.concatenate(pooled["y"]).astype(bool)
    T = np.concatenate(pooled["target"]).astype(bool)
    em = edge_metrics(S, Y, T, cut=edge_cut, auc=True)
    cut95, eff95 = _cut_at_purity(S, Y, T, 0.95)

    def pooled_tracks(key: str) -> tuple[float, float, float, float]:
        dm = [r["details"]["double_majority"] for r in per[key]]
        reco = np.concatenate([x["particle_reconstructed"] for x in dm])
        den = np.concatenate([r["details"]["denominator"] for r in per[key]])
        matched = np.concatenate([x["track_matched"] for x in dm])
        # gnn_tracking's cluster mask: tracks whose majority particle is in the efficiency selection
        sel = np.concatenate([np.where(r["details"]["track_major_row"] >= 0,
                                       r["details"]["denominator"][np.clip(r["details"]["track_major_row"], 0, None)],
                                       False) if r["details"]["denominator"].size else
                              np.zeros(r["details"]["track_major_row"].size, bool) for r in per[key]])
        eff = float(reco[den].mean()) if den.any() else float("nan")
        fake = float(1 - matched.mean()) if matched.size else float("nan")
        fake_sel = float(1 - matched[sel].mean()) if sel.any() else float("nan")
        return eff, fake, fake_sel, float(np.nanmean(scores_tml[key]))

    med = {k: float(np.median(v)) if v else float("nan") for k, v in tim.items()}
    medw = {k: float(np.median(v)) if v else float("nan") for k, v in wall.items()}
    chain = ("graph", "filter", "gnn", "walk")
    total = sum(med[k] for k in chain)
    total_w = sum(medw[k] for k in chain)
    tr = {k: pooled_tracks(k) for k in per}
    n_nodes = float(np.mean([s[0] for s in sizes])) if sizes else float("nan")
    n_edges = float(np.mean([s[1] for s in sizes])) if sizes else float("nan")
    n_kept = float(np.mean([s[2] for s in sizes])) if sizes else float("nan")
    f_eff = filt[0] / max(filt[1], 1)
    c_eff = cons[0] / max(cons[1], 1)

    def pct(v: float) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    gw, tw_ = tr["gnn_walk"], tr["truth_walk"]
    rows = [
        ["graph construction efficiency, target edges (pT>1 GeV, ≥3 hits)", pct(c_eff), "≥ 99%",
         verdict(c_eff >= 0.99), f"{n_nodes:.0f} hits, {n_edges:.0f} edges / event"],
        ["edge filter: target-edge efficiency / edges kept", f"{pct(f_eff)} / {pct(n_kept / n_edges)}", "", "",
         (f"MLP h={cfg['filter_hidden']}, cut for {100 * cfg['filter_eff']:.1f}% on validation events; "
          f"{n_kept:.0f} edges / event to the GNN") if net_f is not None else "no filter"],
        [f"GNN edge efficiency / purity at cut {edge_cut:g}", f"{pct(em['efficiency'])} / {pct(em['purity'])}",
         "", "", f"AUC {em['auc']:.4f} (filtered-out edges count as score 0)"],
        ["GNN edge efficiency at 95% purity", pct(eff95), "≥ 99% at ≥ 95%", verdict(eff95 >= 0.99),
         f"cut {cut95:.3f}"],
        ["DM track efficiency (pT>1 GeV, |η|<4), GNN + walkthrough", pct(gw[0]), "≥ 98%", verdict(gw[0] >= 0.98),
         f"truth-score bound {pct(tw_[0])}; graph-only CC {pct(tr['graph_cc'][0])}"],
        ["DM fake rate, tracks matched to pT>1 GeV targets (gnn_tracking mask)", pct(gw[2]), "≤ 1%",
         verdict(gw[2] <= 0.01), f"truth-score bound {pct(tw_[2])}; graph-only CC {pct(tr['graph_cc'][2])}"],
        ["DM fake rate, all tracks (≥ 3 hits)", pct(gw[1]), "", "",
         f"truth-score bound {pct(tw_[1])}; graph-only CC {pct(tr['graph_cc'][1])}"],
        [f"DM efficiency / masked fake rate, GNN + junction removal (cut {junction_cut:g})",
         f"{pct(tr['gnn_junction'][0])} / {pct(tr['gnn_junction'][2])}", "≥ 98% / ≤ 1%",
         verdict(tr["gnn_junction"][0] >= 0.98 and tr["gnn_junction"][2] <= 0.01),
         f"all-tracks fake rate {pct(tr['gnn_junction'][1])}"],
        [f"DM efficiency / fake rate (all tracks), GNN + CC (cut {edge_cut:g})",
         f"{pct(tr['gnn_cc'][0])} / {pct(tr['gnn_cc'][1])}", "", "", f"masked fake rate {pct(tr['gnn_cc'][2])}"],
        ["TrackML score (pixel hits), GNN + walkthrough", f"{gw[3]:.4f}", "", "",
         f"truth-score bound {tw_[3]:.4f}; graph-only CC {tr['graph_cc'][3]:.4f}"],
        ["time / event: graph building", f"{med['graph']:.2f} s", "", "",
         f"process_event (hit table, layer pairs, features, truth); wall {medw['graph']:.2f} s"],
        ["time / event: edge filter", f"{med['filter']:.2f} s", "", "", f"wall {medw['filter']:.2f} s"],
        ["time / event: GNN inference", f"{med['gnn']:.2f} s", "", "",
         f"InteractionGNN h={cfg['hidden']}, {cfg['iters']} iterations, {'/'.join(cfg['aggregations'])}; "
         f"wall {medw['gnn']:.2f} s"],
        ["time / event: track building (walkthrough)", f"{med['walk']:.2f} s", "", "",
         f"wall {medw['walk']:.2f} s; CC {med['cc']:.3f} s, junction removal {med['junction']:.3f} s"],
        [f"time / event: total ({'CPU, one thread = one idle core' if threads == 1 else 'wall'})",
         f"{total if threads == 1 else total_w:.2f} s", "≤ 2 s (2 CPU cores)",
         verdict((total if threads == 1 else total_w) <= 2.0),
         f"{threads} torch thread(s); wall {total_w:.2f} s and process CPU {total:.2f} s on the shared machine "
         f"(load {max(load0, load1):.1f})"],
    ]
    table = markdown_table(["quantity", "value", "goal", "goal met", "reference / notes"], rows)
    train_note = (f"filter trained {ckpt.get('filter_epochs') or 0} epochs in {ckpt.get('filter_train_s') or 0:.0f} s "
                  "CPU" + (f" (taken from {Path(ckpt['filter_from']).name})" if ckpt.get("filter_from") else "")
                  + ", then " if net_f is not None else "")
    on_gpu = not str(ckpt.get("train_device", "CPU")).startswith("CPU")  # the GPU's name when trained on one
    where = (f"{ckpt.get('gnn_train_wall_s', float('nan')):.0f} s wall on {ckpt['train_device']}" if on_gpu else
             f"{ckpt['gnn_train_s']:.0f} s CPU on one thread ({ckpt.get('gnn_train_wall_s', float('nan')):.0f} s wall)")
    notes = (
        f"\n\nTraining: {cfg['n_train']} events at μ={cfg['mu_train']:g} (pixel detector, layer-pair graphs; edge "
        f"features {', '.join(edge_names)}): "
        f"{train_note}GNN {ckpt['gnn_epochs']} epochs / {ckpt['gnn_steps']} steps (one φ sector of 1/"
        f"{ckpt.get('sectors', 1)} event per step) in {where}{_earlier_stages(ckpt)}. Test: {len(sizes)} events at "
        f"μ={mu_test:g}, "
        f"{t_loop:.0f} s wall for the loop; load average (1 min) {load0:.1f} before and {load1:.1f} after "
        "on the shared 2-core machine. Stage times are medians per event of the process CPU time (summed over "
        "threads; with one thread it is what an otherwise idle core needs), with the wall time on the shared "
        "machine in the notes. The truth-score bound scores true edges 1 and fakes 0 on the filtered graph and "
        "runs the same walkthrough; graph-only keeps every constructed edge (connected components). The masked fake "
        "rate counts only tracks whose majority particle is in the efficiency denominator (target, pT > 1 GeV, "
        "|η| < 4, ≥ 3 hits), as gnn_tracking's `tracking_metrics` does at a pT threshold (reference §2.1); the "
        "all-tracks rate also counts fragments of low-pT particles and noise-dominated candidates."
    )
    return table + notes


def _load() -> float:
    try:
        import os

        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def main(argv: list[str] | None = None) -> None:
    from gnnreco.utils.memory import tune_host_allocator

    tune_host_allocator()  # reuse freed activation buffers (see gnnreco.utils.memory)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: small training and 3 test events")
    p.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--mu-train", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads at inference (default 2)")
    p.add_argument("--train-budget-s", type=float, default=None, help="wall seconds of GNN training at most")
    p.add_argument("--filter-eff", type=float, default=None, help="target-edge efficiency of the filter cut")
    p.add_argument("--no-filter", action="store_true", help="run the GNN on the unfiltered graph")
    p.add_argument("--cache-dir", default=None, help="simulated-event cache (default data/tracking_bench)")
    p.add_argument("--junction-cut", type=float, default=None, help="score cut of junction removal (default 0.3)")
    p.add_argument("--sectors", type=int, default=None, help="φ sectors per training event (default 4)")
    p.add_argument("--checkpoint", default=None,
                   help="trained filter + GNN: loaded when the file exists, written after training otherwise")
    p.add_argument("--lr", type=float, default=None, help="GNN learning rate (default 3e-3)")
    p.add_argument("--workers", type=int, default=None, help="processes simulating the training events (default 1)")
    p.add_argument("--train-device", default=None, help="where the GNN trains: cpu (default) or cuda")
    p.add_argument("--filter-from", default=None, help="reuse the filter and cut of this checkpoint")
    p.add_argument("--train-only", action="store_true", help="train, save --checkpoint and stop (no test events)")
    p.add_argument("--device", default=None, help="where the test loop runs the filter and GNN (default cpu)")
    p.add_argument("--init-from", default=None, help="continue the GNN (and reuse the filter) of this checkpoint")
    p.add_argument("--filter-recut", type=float, default=None,
                   help="re-choose the filter cut for this target-edge efficiency (e.g. 0.999) on validation events")
    p.add_argument("--no-cluster-shape", action="store_true",
                   help="train without the cluster-shape edge features (default: with them; events are then "
                        "simulated with their cells)")
    args = p.parse_args(argv)
    opts: dict[str, Any] = {}
    for k in ("n_test", "n_train", "mu_train", "epochs", "hidden", "iters", "threads", "train_budget_s",
              "filter_eff", "cache_dir", "checkpoint", "sectors", "junction_cut", "lr", "workers", "train_device",
              "filter_from", "device", "init_from", "filter_recut"):
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k)
    if args.no_filter:
        opts["use_filter"] = False
    if args.no_cluster_shape:
        opts["cluster_shape"] = False
    table = run(quick=args.quick, train_only=args.train_only, **opts)
    print(table)
    if args.write and not args.train_only:
        cmd = "python -m gnnreco.bench.tracking" + (" --quick" if args.quick else "") + "".join(
            f" --{k.replace('_', '-')} {v}" for k, v in opts.items() if k not in ("use_filter", "cluster_shape")) + (
            " --no-filter" if args.no_filter else "") + (" --no-cluster-shape" if args.no_cluster_shape else "")
        write_section("tracking", "Tracking (GNN pipeline at μ = 200)", cmd, table)


if __name__ == "__main__":
    main()
