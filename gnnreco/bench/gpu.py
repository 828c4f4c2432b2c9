"""GPU benchmark: per-event inference of the tracking, calo and MLPF pipelines on CUDA, and the kNN
graph builder against torch_cluster's CUDA kNN.

``python -m gnnreco.bench.gpu [--parts tracking,calo,pflow,knn] [--json FILE] [--write]``

Each part loads what the CPU benchmarks trained and saved (paths below; missing inputs skip the part
with a message) and reports, on the first CUDA device:

- **tracking** (issue 6, goal ≤ 100 ms per μ = 200 event): per-stage medians over ``n_events``
  events after one warm-up event: graph building (``process_event``, numpy on the host), host→device
  copy, edge filter and edge selection on the GPU, Interaction Network on the GPU, scores back to the
  host, and the walkthrough track builder (host). The GPU scores are compared with the CPU network on
  the same graphs (largest absolute difference). Then the whole chain on the device
  (:class:`~gnnreco.tasks.tracking.device.DeviceTracker`, junction-removal tracks) from the raw hit
  columns, with its labels checked against the host builder.
- **calo** (issue 7, goal ≤ 30 ms per 50k-hit event): :func:`gnnreco.bench.calo.inference_time` on
  CUDA (network with its kNN, condensation, energy sharing and shower energies, at the working point and
  with the classifiers recorded beside the checkpoint: :func:`calo_working_point`), with the network's β
  compared with the CPU forward.
- **pflow** (issue 8): ms/event at 6.4k elements (:func:`gnnreco.bench.pflow.scaling`, link features
  computed on the host inside the timed call), and the network alone, beside the published ≈ 49 ms
  (Delphes, 2021) and ≈ 20 ms (CMS, L4 GPU, 2026).
- **knn** (issue 5, goal ≥ 2× torch_cluster's CUDA kNN at N ≥ 1e5): ``gnnreco.graph.knn_graph`` and
  ``torch_cluster.knn_graph`` on the same CUDA points, k = 16, with the neighbour sets compared (sum of
  the neighbour distances per point, which is tie-independent).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from gnnreco.bench.report import markdown_table, time_fn, write_section

#: inputs, relative to ``--data-root`` (what the CPU benchmarks saved), then to the checkout (what it
#: ships: the benchmark's calo network is committed in ``docs/checkpoints/``)
INPUTS = {
    "tracking_ckpt": "data/tracking_bench/gpu19_a2.pt|data/tracking_bench/model_h32_shape3.pt|"
                     "data/tracking_bench/model_h32_shape2.pt|data/tracking_bench/model_gpu_h64i8.pt|data/tracking_bench/model_h32.pt|"
                     "data/tracking_bench/model_h16.pt",  # first found
    "tracking_cache": "data/tracking_bench",
    "calo_ckpt": "outputs/calo_bench/calo_gravnet.pt|docs/checkpoints/calo_gravnet.pt",
    "pflow_model": "data/pflow_bench/main_link.pt",
    "pflow_events": "data/pflow_bench/ttbar_pythia_v1_001500000.pkl",
}
ROOT = Path(__file__).resolve().parents[2]


def _input(key: str, root: Path | None = None) -> Path:
    roots = [root, ROOT] if root is not None and Path(root).resolve() != ROOT else [ROOT]
    paths = [base / rel for base in roots for rel in INPUTS[key].split("|")]
    for path in paths:
        if path.exists():
            return path
    raise FileNotFoundError(f"{' or '.join(map(str, paths))} is missing (made by the CPU benchmark of this task)")


DEVICE = "cuda"  #: ``--device cpu`` runs the same code on the CPU (a dry run of this script)


def _sync() -> None:
    if torch.device(DEVICE).type == "cuda":
        torch.cuda.synchronize()


def _med(v: list[float]) -> float:
    return float(np.median(v)) if v else float("nan")


def tracking(checkpoint: Path, cache_dir: Path, n_events: int = 5,
             seed: int = 0, mu: float = 200.0, preset: str = "trackml", volumes: tuple[int, ...] = (7, 8, 9),
             filter_recut: float | None = None) -> dict:
    """Per-stage wall time (ms) of the tracking pipeline with the filter and GNN on the GPU; ``filter_recut``
    re-chooses the filter cut as the CPU benchmark's ``--filter-recut`` does."""
    from gnnreco.bench.tracking import (
        EDGE_NAMES,
        _load_nets,
        _needs_cells,
        _raw_event,
        _to_data,
        recut_filter,
    )
    from gnnreco.data.datamodule import event_seed
    from gnnreco.tasks.tracking.data import process_event
    from gnnreco.tasks.tracking.reco import cc_and_walk_tracks

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    net_cpu, filt_cpu = _load_nets(ckpt)
    if filter_recut is not None:
        ckpt = recut_filter(ckpt, filt_cpu, filter_recut, seed=seed, mu=mu, preset=preset, volumes=volumes,
                            cache_dir=str(cache_dir))
    net, filt = _load_nets(ckpt)
    dev = torch.device(DEVICE)
    net = net.to(dev)
    filt = filt.to(dev) if filt is not None else None
    cut = float(ckpt.get("filter_cut", -math.inf))
    names = tuple(ckpt["config"].get("edge_feature_names", EDGE_NAMES))
    stages = ("graph", "to_gpu", "filter", "gnn", "to_host", "walk")
    tim: dict[str, list[float]] = {k: [] for k in stages}
    diffs, sizes = [], []
    for i in range(n_events + 1):  # event 0 warms up CUDA, Triton and the caches and is not counted
        raw = _raw_event(event_seed(seed + 1, i), mu, preset, volumes, str(cache_dir), cells=_needs_cells(names))
        t = [time.perf_counter()]
        ev = process_event(raw, volumes=list(volumes), edge_feature_names=names)
        t.append(time.perf_counter())
        d = _to_data(ev)
        x, ei, ea = (d.x.to(dev, non_blocking=True), d.edge_index.to(dev, non_blocking=True),
                     d.edge_attr.to(dev, non_blocking=True))
        _sync()
        t.append(time.perf_counter())
        with torch.inference_mode():
            if filt is not None:
                keep = filt(x, ei, ea) >= cut
                ei, ea = ei[:, keep], ea[keep]
            _sync()
            t.append(time.perf_counter())
            s = torch.sigmoid(net(x, ei, ea))
            _sync()
            t.append(time.perf_counter())
        scores, ei_h = s.cpu().numpy(), ei.cpu().numpy()
        t.append(time.perf_counter())
        cc_and_walk_tracks(int(ev["num_nodes"][0]), ei_h, scores, ev["hit_coords"])
        t.append(time.perf_counter())
        if i == 0:
            continue
        for k, a, b in zip(stages, t[:-1], t[1:]):
            tim[k].append(1e3 * (b - a))
        sizes.append((int(ev["num_nodes"][0]), int(ev["edge_index"].shape[1]), int(ei_h.shape[1])))
        if i <= 2:  # same graph through the CPU networks
            with torch.inference_mode():
                eic, eac = d.edge_index, d.edge_attr
                if filt_cpu is not None:
                    kc = filt_cpu(d.x, eic, eac) >= cut
                    eic, eac = eic[:, kc], eac[kc]
                sc = torch.sigmoid(net_cpu(d.x, eic, eac)).numpy()
            diffs.append(float(np.abs(sc - scores).max()) if sc.shape == scores.shape else float("inf"))
    med = {k: _med(v) for k, v in tim.items()}
    chain = _tracking_device_chain(net, filt, cut, ckpt, cache_dir, n_events, seed, mu, preset, volumes)
    return {"ms": med, "total_ms": sum(med.values()), "gpu_ms": med["filter"] + med["gnn"], "device_chain": chain,
            "hits": _med([s[0] for s in sizes]), "edges": _med([s[1] for s in sizes]),
            "kept": _med([s[2] for s in sizes]), "max_abs_diff_vs_cpu": max(diffs) if diffs else float("nan"),
            "events": len(sizes), "config": ckpt["config"]}


def _tracking_device_chain(net, filt, cut: float, ckpt: dict, cache_dir: Path, n_events: int, seed: int, mu: float,
                           preset: str, volumes: tuple[int, ...]) -> dict:
    """The whole chain on the device (:class:`gnnreco.tasks.tracking.device.DeviceTracker`): raw hit
    columns in, junction-removal track labels out; ms per event, and whether the labels equal the host
    builder's on the same scores. The cluster-shape η of a network trained with the shape features is an
    input (computed on the host from the cells beforehand, as a clustering step upstream would)."""
    from gnnreco.bench.tracking import EDGE_NAMES, _needs_cells, _raw_event
    from gnnreco.data.datamodule import event_seed
    from gnnreco.tasks.tracking.data import cluster_shape_eta
    from gnnreco.tasks.tracking.device import DeviceTracker, layer_pairs_of
    from gnnreco.tasks.tracking.reco import junction_removal_tracks

    def columns(h):
        return [torch.from_numpy(h[k].to_numpy()) for k in ("x", "y", "z", "layer_id", "volume_id")]

    names = tuple(ckpt["config"].get("edge_feature_names", EDGE_NAMES))
    cells = _needs_cells(names)
    events = [_raw_event(event_seed(seed + 1, i), mu, preset, volumes, str(cache_dir), cells=cells)
              for i in range(n_events + 1)]
    raws = [e["hits"] for e in events]
    shape = [None] * len(raws)
    if cells:
        for i, e in enumerate(events):  # rows of the hits table (sorted by hit_id, as the processor's)
            shape[i] = torch.from_numpy(cluster_shape_eta(e["hits"], e["cells"], e["detector"]))
    x0, y0, z0, l0, v0 = columns(raws[0])
    pairs = layer_pairs_of(torch.hypot(x0.double(), y0.double()), z0.double(), l0, v0)
    trk = DeviceTracker(net, pairs, edge_filter=filt, filter_cut=cut, junction_cut=0.3, edge_feature_names=names,
                        device=next(net.parameters()).device)
    times, same = [], []
    for i, h in enumerate(raws):
        cols = [c.pin_memory() if DEVICE == "cuda" else c for c in columns(h)]
        _sync()
        t0 = time.perf_counter()
        out = trk(*cols, shape_eta=shape[i])
        labels = out["labels"].cpu()
        t1 = time.perf_counter()
        if i:
            times.append(1e3 * (t1 - t0))
            ref = junction_removal_tracks(len(h), out["edge_index"].cpu().numpy(), out["scores"].cpu().numpy(), 0.3)
            same.append(bool(np.array_equal(labels.numpy(), ref)))
    return {"ms": _med(times), "labels_equal_host_builder": all(same), "events": len(times),
            "tracks": int(labels.max()) + 1 if labels.numel() else 0}


def calo_working_point(checkpoint: Path, info: dict) -> tuple[dict, dict]:
    """The module settings the calo benchmark table was measured at (the sidecar's ``reco`` and
    ``reco_pairs`` blocks on top of its training ``module`` block) and the classifiers they need,
    loaded from beside the checkpoint: ``pair_classifier`` (``<checkpoint>.pairs.pt``) when the
    suppression or the fragment merging is on, ``share_classifier`` (``<checkpoint>.share.pt``) for the
    learned sharing. Without a ``reco`` block: the training settings and no classifier."""
    from gnnreco.bench.calo import reco_settings
    from gnnreco.tasks.calo.pairs import load_pair_classifier

    if "reco" not in info:
        return dict(info["module"]), {}
    mk = {**info["module"], **reco_settings(checkpoint)}
    clfs = {}
    if mk.get("pair_threshold", 0.0) > 0 or mk.get("absorb_threshold", 0.0) > 0:
        clfs["pair_classifier"] = load_pair_classifier(str(checkpoint) + ".pairs.pt")
    if mk.get("energy_sharing") == "learned":
        clfs["share_classifier"] = load_pair_classifier(str(checkpoint) + ".share.pt")
    return mk, clfs


def calo(checkpoint: Path, repeat: int = 10) -> dict:
    """Calo reconstruction of one ~50k-hit event on the GPU (:func:`gnnreco.bench.calo.inference_time`)."""
    from gnnreco.bench.calo import _event, inference_time, load_checkpoint_info
    from gnnreco.tasks.calo.model import CaloGravNet

    info = load_checkpoint_info(checkpoint)
    mk, clfs = calo_working_point(checkpoint, info)
    res = inference_time(threads=1, checkpoint=checkpoint, net_kwargs=info["net"], module_kwargs=mk,
                         repeat=repeat, device=DEVICE, **clfs)
    res["working_point"] = {k: v for k, v in mk.items() if k not in info["module"] or info["module"][k] != v}
    res["classifiers"] = sorted(clfs)
    net = CaloGravNet(**info["net"])
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    net.eval()
    batch = _event(777, 265, pileup_density=0.15)
    with torch.no_grad():
        b_cpu = net(batch.x, batch.batch)["beta"]
        b_gpu = net.to(DEVICE)(batch.x.to(DEVICE), batch.batch.to(DEVICE))["beta"].cpu()
    # a trained GravNet is chaotic for a few hits: a rounding-size change of the learned space swaps
    # near-tied kNN neighbours, which moves those hits' beta by up to ~0.3 (on the CPU alone, a 1e-6
    # relative perturbation of the inputs does that to ~20 of 50k hits), so count the hits as well
    d = (b_cpu - b_gpu).abs().reshape(-1)
    res["beta_max_abs_diff_vs_cpu"] = float(d.max())
    res["beta_frac_diff_gt_1e-2"] = float((d > 1e-2).float().mean())
    res["beta_median_abs_diff"] = float(d.median())
    if torch.device(DEVICE).type == "cuda":
        # the network alone with each kNN engine (the whole event above ran knn_impl=auto: the Triton
        # engine when triton is installed)
        xg, bg = batch.x.to(DEVICE), batch.batch.to(DEVICE)

        def engine(name: str) -> None:
            for m in net.modules():
                if hasattr(m, "knn_impl"):
                    m.knn_impl = name

        with torch.no_grad():
            engine("gnnreco")
            b_gpu = net(xg, bg)["beta"].cpu()
            res["network_ms_blocks"] = 1e3 * time_fn(lambda: net(xg, bg), repeat=10, warmup=2)
            engine("triton")
            try:
                res["network_ms_triton"] = 1e3 * time_fn(lambda: net(xg, bg), repeat=10, warmup=2)
                res["beta_triton_vs_blocks_frac_gt_1e-2"] = float(
                    ((net(xg, bg)["beta"].cpu() - b_gpu).abs() > 1e-2).float().mean())
            except Exception as e:  # a kernel failure is a result here, not the end of the bench
                res["network_ms_triton"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    res["ms"] = 1e3 * res["time_s"]
    res["stages_ms"] = {k: 1e3 * v for k, v in res["stages"].items()}
    return res


def pflow(model: Path, events: Path, n: int = 6400, repeat: int = 20) -> dict:
    """MLPF ms/event at ``n`` elements on the GPU, with and without the host-side link features."""
    import pickle

    from gnnreco.bench.pflow import load_model, scaling

    net, net_kw, _ = load_model(str(model))
    with open(events, "rb") as f:
        pool = pickle.load(f)["events"]
    full = scaling(net, pool, [n], repeat=repeat, device=DEVICE)[0][1]
    x = torch.randn(1, n, 12 + int(net_kw.get("extra_features", 0)), device=DEVICE)
    m = torch.ones(1, n, dtype=torch.bool, device=DEVICE)
    with torch.no_grad():
        net_only = time_fn(lambda: net(x, m), repeat=repeat, warmup=2)
    return {"elements": n, "ms": 1e3 * full, "net_ms": 1e3 * net_only, "net_kw": net_kw}


def _tc_knn_graph():
    """``(torch_cluster.knn_graph, name)``, or ``(None, "absent")`` when torch_cluster does not import
    (``scripts/build_torch_ext.py`` installs it only when every one of its libraries built)."""
    try:
        import torch_cluster
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None, "absent"
    return torch_cluster.knn_graph, "torch_cluster"


def _dist_sum(x: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
    d = (x[ei[0]] - x[ei[1]]).double().pow(2).sum(1).sqrt()
    return torch.zeros(x.size(0), dtype=torch.float64, device=x.device).index_add_(0, ei[1], d)


def knn(cases: list[tuple[int, int, str]] | None = None, k: int = 16, max_tc_s: float = 30.0) -> list[dict]:
    """gnnreco vs torch_cluster CUDA kNN graph (k nearest, no self loops) on the same points."""
    from gnnreco.bench.graph import make_points
    from gnnreco.graph import knn_graph

    tc, tc_name = _tc_knn_graph()
    cases = cases or [(100_000, 3, "uniform"), (100_000, 3, "clustered"), (100_000, 4, "uniform"),
                      (100_000, 4, "clustered"), (100_000, 8, "uniform"), (100_000, 12, "uniform"),
                      (1_000_000, 3, "uniform"), (1_000_000, 4, "clustered")]
    rows = []
    for n, d, kind in cases:
        x = make_points(n, d, kind).float().to(DEVICE)
        ours = knn_graph(x, k)
        t_ours = time_fn(lambda x=x: knn_graph(x, k), repeat=5, warmup=1)
        row = {"N": n, "D": d, "points": kind, "k": k, "gnnreco_ms": 1e3 * t_ours, "reference": tc_name}
        if n <= 200_000:  # the GEMM tiles of the brute-force engine, the other candidate at high D
            row["gnnreco_brute_ms"] = 1e3 * time_fn(lambda x=x: knn_graph(x, k, method="brute"), repeat=3, warmup=1)
        if d <= 8 and DEVICE == "cuda":  # the one-kernel Triton engine (not yet auto in gnnreco.graph)
            try:
                tri = knn_graph(x, k, method="triton")
                row["gnnreco_triton_ms"] = 1e3 * time_fn(lambda x=x: knn_graph(x, k, method="triton"), repeat=5,
                                                         warmup=1)
                row["triton_same"] = bool(torch.allclose(_dist_sum(x, tri), _dist_sum(x, ours), rtol=1e-4, atol=1e-5))
                del tri
            except Exception as e:  # a kernel failure is a result here, not the end of the bench
                row["gnnreco_triton_ms"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        if tc is not None:
            t0 = time.perf_counter()
            ref = tc(x, k)
            _sync()
            first = time.perf_counter() - t0
            rep = 1 if first > max_tc_s / 3 else 3
            t_tc = time_fn(lambda x=x: tc(x, k), repeat=rep, warmup=0) if rep > 1 else first
            a, b = _dist_sum(x, ours), _dist_sum(x, ref)
            row.update(torch_cluster_ms=1e3 * t_tc, speedup=t_tc / t_ours, edges=int(ours.size(1)),
                       edges_ref=int(ref.size(1)),
                       same=bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5)))
        rows.append(row)
        print(f"[gpu bench] knn {row}", flush=True)
        del x, ours
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _tables(res: dict) -> str:
    dev = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (dry run)"
    out = [f"Device: {dev}; torch {torch.__version__}."]
    for key in [k for k in res if k.split("@")[0] == "tracking" and "ms" in res[k]]:
        r = res[key]
        ms = r["ms"]
        c = r["config"]
        out += ["", f"**Tracking** (issue 6, `{r.get('checkpoint', '')}`: InteractionGNN h={c['hidden']}, "
                f"{c['iters']} iterations): {r['events']} μ=200 events (pixel volumes), "
                f"{r['hits']:.0f} hits, {r['edges']:.0f} → {r['kept']:.0f} edges; median ms/event per stage.", "",
                markdown_table(["graph (host)", "to GPU", "filter (GPU)", "GNN (GPU)", "to host", "walk (host)",
                                "total", "goal"],
                               [[ms["graph"], ms["to_gpu"], ms["filter"], ms["gnn"], ms["to_host"], ms["walk"],
                                 r["total_ms"], "≤ 100 ms: " + ("met" if r["total_ms"] <= 100 else "**missed**")]]),
                "", f"GPU scores vs the CPU network on the same graphs: max |Δ| = {r['max_abs_diff_vs_cpu']:.2e}."]
        ch = r.get("device_chain") or {}
        if ch:
            out += ["", f"Whole chain on the device (`DeviceTracker`: layer-pair graph, features, filter, GNN, "
                    f"junction removal + connected components; raw hit columns in, labels out): "
                    f"**{ch['ms']:.1f} ms/event** (goal ≤ 100 ms: {'met' if ch['ms'] <= 100 else '**missed**'}); "
                    f"labels equal the host builder's on the same scores: {ch['labels_equal_host_builder']}."]
    if "calo" in res and "ms" in res["calo"]:
        r = res["calo"]
        st = r["stages_ms"]
        wp = (f" At the benchmark's working point ({', '.join(f'{k} {v}' for k, v in r['working_point'].items())}"
              f"; {', '.join(r['classifiers']) or 'no classifier'})." if r.get("working_point") else "")
        out += ["", f"**Calo** (issue 7): one event of {r['hits']} hits, median of the timed calls.{wp}", "",
                markdown_table(["network ms", "condensation ms", "shower energies ms", "total ms", "goal"],
                               [[st["network"], st["condensation"], st["shower energies"], r["ms"],
                                 "≤ 30 ms: " + ("met" if r["ms"] <= 30 else "**missed**")]]),
                "", f"β on the GPU vs the CPU forward: max |Δ| = {r['beta_max_abs_diff_vs_cpu']:.2e}"
                + (f", median {r['beta_median_abs_diff']:.1e}, |Δ| > 0.01 for "
                   f"{100 * r['beta_frac_diff_gt_1e-2']:.3f} % of the hits (near-tied kNN neighbours swapped by "
                   "rounding)." if "beta_frac_diff_gt_1e-2" in r else ".")]
        if "network_ms_triton" in r:
            tri = r["network_ms_triton"]
            out += ["", f"Network alone: {r['network_ms_blocks']:.1f} ms with the block-engine kNN, "
                    + (f"{tri:.1f} ms with `knn_impl='triton'` (β differs by > 0.01 on "
                       f"{100 * r['beta_triton_vs_blocks_frac_gt_1e-2']:.3f} % of the hits)." if isinstance(tri, float)
                       else f"`knn_impl='triton'` {tri}.")]
    if "pflow" in res and "ms" in res["pflow"]:
        r = res["pflow"]
        out += ["", f"**MLPF** (issue 8): {r['elements']} elements, one event per call: **{r['ms']:.1f} ms/event** "
                f"(host link features included), network alone {r['net_ms']:.1f} ms; published ≈ 49 ms "
                "(Delphes, 2021) and ≈ 20 ms (CMS, L4 GPU, 2026)."]
    if res.get("knn"):
        rows = [[r["N"], r["D"], r["points"], r["k"], r["gnnreco_ms"], r.get("gnnreco_brute_ms", "n/a"),
                 r.get("gnnreco_triton_ms", "n/a"), r.get("triton_same", "n/a"),
                 r.get("torch_cluster_ms", "n/a"), r.get("speedup", "n/a"), r.get("same", "n/a")] for r in res["knn"]]
        ok = [r["speedup"] >= 2 for r in res["knn"] if "speedup" in r and r["N"] >= 100_000]
        out += ["", f"**kNN graph** (issue 5), k = 16, reference {res['knn'][0]['reference']}:", "",
                markdown_table(["N", "D", "points", "k", "gnnreco ms (auto)", "gnnreco ms (brute)",
                                "gnnreco ms (triton)", "triton same", "torch_cluster ms",
                                "× torch_cluster (auto)", "same neighbours"], rows),
                "", "Goal ≥ 2× at N ≥ 1e5: " + ("n/a" if not ok else ("met" if all(ok) else "**missed**")) + "."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    from gnnreco.utils.memory import tune_host_allocator

    tune_host_allocator()  # reuse freed activation buffers (see gnnreco.utils.memory)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="tracking,calo,pflow,knn")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--write", action="store_true", help="record the tables in docs/benchmarks.md (section gpu)")
    p.add_argument("--tracking-events", type=int, default=5)
    p.add_argument("--tracking-checkpoint", default=None,
                   help="tracking filter + GNN checkpoint(s), comma-separated (default: the CPU benchmark's)")
    p.add_argument("--tracking-filter-recut", type=float, default=None,
                   help="re-choose the tracking filter cut for this target-edge efficiency (as the tracking bench)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding the inputs (" + ", ".join(INPUTS.values()) + "); default the checkout")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the code paths")
    p.add_argument("--knn-cases", default=None, help="N:D:points,... (default: six cases at N = 1e5 and 1e6)")
    a = p.parse_args(argv)
    global DEVICE
    DEVICE = a.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gnnreco.bench.gpu: no CUDA device on this machine")
    res: dict = {}
    for part in a.parts.split(","):
        t0 = time.perf_counter()
        try:
            r = a.data_root
            if part == "tracking":
                ckpts = ([Path(c) for c in a.tracking_checkpoint.split(",")] if a.tracking_checkpoint
                         else [_input("tracking_ckpt", r)])
                for j, c in enumerate(ckpts):  # the first under "tracking", others under "tracking@<file stem>"
                    key = part if j == 0 else f"{part}@{c.stem}"
                    if not c.exists():
                        res[key] = {"skipped": f"{c} is missing"}
                        continue
                    res[key] = tracking(c, _input("tracking_cache", r), n_events=a.tracking_events,
                                        filter_recut=a.tracking_filter_recut)
                    res[key]["checkpoint"] = c.name
                    print(f"[gpu bench] {key} done in {time.perf_counter() - t0:.0f} s: "
                          f"{json.dumps(res[key], default=str)[:2000]}", flush=True)
                continue
            elif part == "calo":
                res[part] = calo(_input("calo_ckpt", r))
            elif part == "pflow":
                res[part] = pflow(_input("pflow_model", r), _input("pflow_events", r))
            elif part == "knn":
                cases = [(int(float(n)), int(d), kind) for n, d, kind in
                         (c.split(":") for c in a.knn_cases.split(","))] if a.knn_cases else None
                res[part] = knn(cases)
            else:
                raise SystemExit(f"unknown part {part!r}")
        except (FileNotFoundError, ImportError) as e:  # an input this machine lacks: say so, go on
            res[part] = {"skipped": str(e)}
        print(f"[gpu bench] {part} done in {time.perf_counter() - t0:.0f} s: "
              f"{json.dumps(res[part], default=str)[:2000]}", flush=True)
    text = _tables(res)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    if a.write:
        import os

        gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "no GPU (dry run)"
        write_section("gpu-bench", "GPU inference and kNN (`gnnreco.bench.gpu`)", "python -m gnnreco.bench.gpu", text,
                      machine=f"{gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}")


if __name__ == "__main__":
    main()
