"""``gnnreco bench pflow``: MLPF vs rule-based PF physics, and GNN-LSH inference scaling.

Physics: tt̄ events at 13.6 TeV (Pythia 8 when installed) through :mod:`gnnreco.sim.delphes_like`; an
MLPF GNN-LSH is trained for a fixed CPU time budget with a plain PyTorch loop (the same network, loss
and candidate decoding as the Lightning module), then MLPF and the baseline are evaluated on the same
held-out events. Goal (issue 8): MLPF jet p_T resolution (IQR/median) ≥ 20 % better than the baseline
in the 30–100 GeV bin, with median response within 2 % of 1.

Scaling: inference time per event of the same network versus element count (1k … 50k elements, built
by concatenating real events' elements), the fitted exponent of t ∝ N^α, and the time at 6.4k elements
(goal ≤ 100 ms on CPU; published MLPF ≈ 49 ms (Delphes, 2021) and ≈ 20 ms (CMS, L4 GPU, 2026)).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from gnnreco.bench.report import machine_description, markdown_table, time_fn, write_section
from gnnreco.sim.pythia import pythia_available
from gnnreco.tasks.pflow.baseline import rule_based_pf
from gnnreco.tasks.pflow.data import generate_pflow_event
from gnnreco.tasks.pflow.links import with_link_features
from gnnreco.tasks.pflow.loss import mlpf_loss
from gnnreco.tasks.pflow.metrics import PFEvaluator
from gnnreco.tasks.pflow.model import MLPFNet, count_parameters
from gnnreco.tasks.pflow.module import candidates_from_outputs

__all__ = ["run", "make_events", "train_mlpf", "scaling", "TITLE"]

TITLE = "MLPF particle flow (issue 8)"


def _gen(seed: int) -> dict:
    return generate_pflow_event(seed, process="ttbar")


#: default on-disk cache of generated benchmark events (``/data/`` is gitignored)
DEFAULT_CACHE = "data/pflow_bench"
_BLOCK = 100  # events per cache file: seeds [k·100, (k+1)·100)
_CACHE_VERSION = 1  # bump when the generator or detector defaults change


def _block_path(cache_dir: str, start: int) -> str:
    import os

    gen = "pythia" if pythia_available() else "parametric"
    return os.path.join(cache_dir, f"ttbar_{gen}_v{_CACHE_VERSION}_{start:09d}.pkl")


def _load_block(path: str, start: int) -> list[dict] | None:
    import os
    import pickle

    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        blk = pickle.load(f)
    if not isinstance(blk, dict) or blk.get("start") != start or len(blk.get("events", ())) != _BLOCK:
        raise ValueError(f"event cache file {path} is not a block of {_BLOCK} events from seed {start}; "
                         "delete it to regenerate")
    return blk["events"]


def _save_block(path: str, start: int, events: list[dict]) -> None:
    import os
    import pickle

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump({"start": start, "events": events}, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)  # atomic: a crashed run never leaves half a block


def make_events(n: int, seed0: int, n_workers: int = 2, cache_dir: str | None = None) -> list[dict]:
    """``n`` tt̄ events with seeds ``seed0 … seed0+n−1`` (elements, targets, gen particles).

    Events are generated in ``n_workers`` processes. With ``cache_dir`` they are stored there in blocks
    of 100 seeds (one pickle per block, named after the generator backend and the first seed) and
    read back on the next call, so reruns and larger ``n`` only generate the missing blocks; an event
    depends only on its seed, so cached and fresh events are identical.
    """
    import multiprocessing as mp

    seeds = [seed0 + i for i in range(n)]

    def generate(ss: list[int]) -> list[dict]:
        if n_workers <= 1 or len(ss) < 2:
            return [_gen(s) for s in ss]
        with mp.get_context("fork").Pool(n_workers) as pool:
            return pool.map(_gen, ss, chunksize=8)

    if not cache_dir or n == 0:
        return generate(seeds)
    starts = range((seeds[0] // _BLOCK) * _BLOCK, seeds[-1] + 1, _BLOCK)
    have: dict[int, list[dict]] = {}
    missing = []
    for st in starts:
        blk = _load_block(_block_path(cache_dir, st), st)
        if blk is None:
            missing.append(st)
        else:
            have[st] = blk
    for g in range(0, len(missing), 4):  # save every 4 blocks: an interrupted run keeps what it made
        group = missing[g:g + 4]
        fresh = generate([st + i for st in group for i in range(_BLOCK)])
        for k, st in enumerate(group):
            have[st] = fresh[k * _BLOCK:(k + 1) * _BLOCK]
            _save_block(_block_path(cache_dir, st), st, have[st])
    return [have[(s // _BLOCK) * _BLOCK][s % _BLOCK] for s in seeds]


def _pad(events: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(e["X"]) for e in events)
    X = torch.zeros(len(events), n, events[0]["X"].shape[1])
    Y = torch.zeros(len(events), n, 7)
    M = torch.zeros(len(events), n, dtype=torch.bool)
    for i, e in enumerate(events):
        k = len(e["X"])
        X[i, :k] = torch.from_numpy(e["X"])
        Y[i, :k] = torch.from_numpy(e["y"])
        M[i, :k] = True
    return X, Y, M


def train_mlpf(train: list[dict], minutes: float, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
               loss_kw: dict | None = None, lr_floor: float = 0.05, warmup_steps: int = 200,
               init_state: dict | None = None, clock: str = "wall", **net_kw) -> tuple[MLPFNet, dict]:
    """Train an MLPF GNN-LSH for ``minutes`` of wall time (epochs over ``train``, shuffled).

    With ``clock="cpu"`` the budget is CPU time of this process instead, so that runs on a shared
    machine under different loads get the same amount of computation (fair comparisons of options).

    AdamW, gradient clipping at 1, a linear warm-up over ``warmup_steps`` and a cosine decay over
    the time budget down to ``lr_floor``·lr. ``loss_kw`` are keyword arguments of
    :func:`~gnnreco.tasks.pflow.loss.mlpf_loss`. ``init_state`` (a state dict) warm-starts the network.
    """
    torch.manual_seed(seed)
    net = MLPFNet(**net_kw)
    if init_state is not None:
        net.load_state_dict(init_state)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    loss_kw = dict(loss_kw or {})
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock={clock!r}; expected 'wall' or 'cpu'")
    t0, c0 = time.perf_counter(), time.process_time()
    now = time.perf_counter if clock == "wall" else time.process_time
    start = now()
    steps, epochs, losses = 0, 0, []
    deadline = start + 60 * minutes
    while now() < deadline:
        order = rng.permutation(len(train))
        for b in range(0, len(order), batch_size):
            X, Y, M = _pad([train[i] for i in order[b:b + batch_size]])
            net.train()
            loss, _ = mlpf_loss(net(X, M), X, Y, M, **loss_kw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            steps += 1
            losses.append(float(loss.detach()))
            frac = min((now() - start) / (60 * minutes), 1.0)
            warm = min(1.0, steps / max(warmup_steps, 1))
            for g in opt.param_groups:
                g["lr"] = lr * warm * (lr_floor + (1 - lr_floor) * 0.5 * (1 + np.cos(np.pi * frac)))
            if now() >= deadline:
                break
        epochs += 1
    return net.eval(), {"steps": steps, "epochs": epochs, "train_s": time.perf_counter() - t0,
                        "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:])),
                        "cpu_s": time.process_time() - c0}


def save_model(path: str, net: MLPFNet, net_kw: dict, info: dict) -> None:
    """Write the trained network, its constructor arguments and the training record (atomically)."""
    import os

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"format": "gnnreco-pflow-bench-1", "net_kw": dict(net_kw), "info": dict(info),
                "state_dict": net.state_dict()}, tmp)
    os.replace(tmp, path)


def load_model(path: str) -> tuple[MLPFNet, dict, dict]:
    """Read a network written by :func:`save_model`: ``(net in eval mode, net_kw, info)``."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != "gnnreco-pflow-bench-1":
        raise ValueError(f"{path} is not a pflow benchmark checkpoint (expected format 'gnnreco-pflow-bench-1')")
    net = MLPFNet(**ck["net_kw"])
    net.load_state_dict(ck["state_dict"])
    return net.eval(), dict(ck["net_kw"]), dict(ck["info"])


@torch.no_grad()
def evaluate(net: MLPFNet, test: list[dict], diagnose: bool = False) -> PFEvaluator:
    """MLPF and baseline candidates of every test event through one :class:`PFEvaluator`.

    With ``diagnose`` three more rows split the MLPF error: ``mlpf_cls+true_p4`` (MLPF decides which
    elements are particles, the targets give their momenta), ``true_cls+mlpf_p4`` (target classes, MLPF
    momenta) and ``target`` (the targets themselves: the ceiling of any per-element PF on this detector).
    """
    ev = PFEvaluator()
    for e in test:
        X = torch.from_numpy(e["X"])[None]
        M = torch.ones(1, X.shape[1], dtype=torch.bool)
        cand = candidates_from_outputs(net(X, M))[0].numpy()
        algos = {"mlpf": cand, "baseline": rule_based_pf(e["X"][:, :12])}
        if diagnose:
            y = np.asarray(e["y"], np.float32)
            hybrid = y.copy()
            hybrid[:, 0] = np.where(cand[:, 0] > 0, np.maximum(y[:, 0], 1), 0)
            hybrid[cand[:, 0] == 0] = 0
            swap = cand.copy()
            swap[:, 0] = y[:, 0]
            swap[y[:, 0] == 0] = 0
            algos.update({"mlpf_cls+true_p4": hybrid, "true_cls+mlpf_p4": swap, "target": y})
        ev.add(e["y"], e["gen_p4"], algos)
    return ev


def scaling(net: MLPFNet, pool: list[dict], sizes: list[int], repeat: int = 3,
            device: str = "cpu") -> list[tuple[int, float]]:
    """Inference time (s) per single event of N elements, N in ``sizes`` (elements tiled from ``pool``).

    A network with link features (``extra_features=4``) is timed from the 12 schema columns: the numpy
    :func:`~gnnreco.tasks.pflow.links.with_link_features` call is part of each timed call.
    """
    allx = np.concatenate([e["X"][:, :12] for e in pool])
    rng = np.random.default_rng(0)
    out = []
    net = net.to(device).eval()
    link = int(getattr(net, "extra_features", 0)) > 0
    for n in sizes:
        idx = rng.integers(0, len(allx), n)
        x12 = np.ascontiguousarray(allx[idx])
        M = torch.ones(1, n, dtype=torch.bool, device=device)

        def call(x12=x12, M=M):
            x = with_link_features(x12) if link else x12
            return net(torch.from_numpy(x)[None].to(device), M)

        with torch.no_grad():
            t = time_fn(call, repeat=repeat, warmup=1)
        out.append((n, t))
    return out


TRAIN_SEED0 = 1_000_000  #: first training-event seed
VAL_SEED0 = 1_400_000  #: first validation-event seed (``--eval-set val``: choose options here, not on the test set)
TEST_SEED0 = 1_500_000  #: first test-event seed (fixed: the test set does not depend on ``n_train``)


def add_link_features(events: list[dict]) -> list[dict]:
    """Copies of ``events`` whose ``X`` carries the 4 link columns (:mod:`gnnreco.tasks.pflow.links`)."""
    return [{**e, "X": with_link_features(e["X"])} if e["X"].shape[1] == 12 else e for e in events]


def bootstrap_gain(ev: PFEvaluator, lo: float = 30.0, hi: float = 100.0, n_boot: int = 300,
                   seed: int = 0) -> tuple[float, float]:
    """Bootstrap over test events of the resolution gain 1 − res_mlpf/res_baseline in one jet bin.

    Both algorithms are resampled with the same events (their generator jets are the same), so the
    spread is that of the *difference*. Returns ``(standard deviation, fraction of resamples with gain ≥ 0.2)``.
    """
    from gnnreco.tasks.pflow.metrics import med_iqr

    rng = np.random.default_rng(seed)
    per = {}
    for name in ("mlpf", "baseline"):
        per[name] = [(j["gen_pt"], j["response"]) for j in ev.jets[name]]
    n = len(per["mlpf"])
    gains = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        res = {}
        for name, rows in per.items():
            g = np.concatenate([rows[i][0] for i in idx])
            r = np.concatenate([rows[i][1] for i in idx])
            r = r[(g >= lo) & (g < hi)]
            med, iqr = med_iqr(r)
            res[name] = iqr / med
        gains.append(1 - res["mlpf"] / res["baseline"])
    gains = np.asarray(gains)
    return float(np.nanstd(gains)), float(np.mean(gains >= 0.2))


def run(quick: bool = False, n_train: int | None = None, n_test: int | None = None, minutes: float | None = None,
        width: int = 64, n_layers: int = 2, bin_size: int = 64, geo_scale: float = 16.0, workers: int = 2,
        cache_dir: str | None = DEFAULT_CACHE, save_path: str | None = None, load_path: str | None = None,
        loss_kw: dict | None = None, lr: float = 1e-3, batch_size: int = 4, skip_scaling: bool = False,
        init_path: str | None = None, link: bool = False, eval_set: str = "test", clock: str = "wall",
        diagnose: bool = False, **_: object) -> str:
    """Run the benchmark; returns the Markdown report (tables + verdicts).

    Args:
        quick: small smoke-test sizes.
        n_train, n_test: events (train seeds from :data:`TRAIN_SEED0`, test seeds from :data:`TEST_SEED0`).
        minutes: training budget in minutes of wall time (``clock="wall"``) or of CPU time (``"cpu"``).
        cache_dir: event cache (``None``: always generate).
        save_path: write the trained network there (:func:`save_model`).
        load_path: evaluate this saved network instead of training one (no training events needed).
        init_path: warm-start training from this saved network (its architecture is used); the
            record then counts the earlier training too.
        loss_kw: keyword arguments of :func:`~gnnreco.tasks.pflow.loss.mlpf_loss`.
        link: give the network the 4 track–cluster link features (``extra_features=4``,
            :mod:`gnnreco.tasks.pflow.links`); a loaded or warm-started network keeps its own setting.
        eval_set: ``test`` (seeds from :data:`TEST_SEED0`) or ``val`` (``n_test`` events with seeds from
            :data:`VAL_SEED0`, for choosing options without looking at the test events).
    """
    if eval_set not in ("test", "val"):
        raise ValueError(f"eval_set={eval_set!r}; expected 'test' or 'val'")
    # training with one thread: the benchmark machine's 2 cores are shared, and 2 threads contend
    torch.set_num_threads(1)
    n_train = n_train or (60 if quick else 1600)
    n_test = n_test or (20 if quick else 300)
    minutes = minutes if minutes is not None else (0.5 if quick else 25.0)
    loss_kw = dict(loss_kw or {})
    net_kw = {"backbone": "gnn_lsh", "width": width, "n_layers": n_layers, "bin_size": bin_size,
              "geo_scale": geo_scale}
    if link:
        net_kw["extra_features"] = 4
    t0 = time.perf_counter()
    test = make_events(n_test, VAL_SEED0 if eval_set == "val" else TEST_SEED0, workers, cache_dir)
    if load_path:
        net, net_kw, info = load_model(load_path)
        train = []
        n_train = int(info.get("n_train", 0))
        loss_kw = dict(info.get("loss_kw", {}))
    else:
        train = make_events(n_train, TRAIN_SEED0, workers, cache_dir)
    if not load_path and init_path:
        net0, net_kw, prev = load_model(init_path)
        init_state = net0.state_dict()
    else:
        init_state, prev = None, None
    n_extra = int(net_kw.get("extra_features", 0))
    if n_extra:
        train, test = add_link_features(train), add_link_features(test)
    gen_s = time.perf_counter() - t0
    events = train + test
    if not load_path:
        net, info = train_mlpf(train, minutes, batch_size=batch_size, lr=lr, loss_kw=loss_kw,
                               init_state=init_state, clock=clock, **net_kw)
        info.update({"n_train": n_train, "loss_kw": loss_kw, "lr": lr, "batch_size": batch_size, "clock": clock,
                     "load_at_end": os.getloadavg()[0]})
        if prev is not None:  # the whole training history, earlier stage first
            info["stages"] = list(prev.get("stages", [{k: v for k, v in prev.items() if k != "stages"}])) + [
                {k: v for k, v in info.items()}]
            for k in ("steps", "epochs", "train_s", "cpu_s"):
                info[k] = sum(st.get(k, 0) for st in info["stages"])
            info["loss_first"] = info["stages"][0]["loss_first"]
        if save_path:
            save_model(save_path, net, net_kw, info)
    width, n_layers, bin_size, geo_scale = (net_kw.get(k, d) for k, d in
                                            (("width", 64), ("n_layers", 2), ("bin_size", 64), ("geo_scale", 0.0)))
    ev = evaluate(net, test, diagnose)
    gain_sd, p_goal = bootstrap_gain(ev)
    s = ev.summary()
    b = [r for r in s["mlpf"]["jets"] if r["lo"] == 30.0][0]
    bb = [r for r in s["baseline"]["jets"] if r["lo"] == 30.0][0]
    gain = 1 - b["resolution"] / bb["resolution"]
    hi = [r for r in s["mlpf"]["jets"] if r["lo"] == 100.0][0]
    hb = [r for r in s["baseline"]["jets"] if r["lo"] == 100.0][0]
    resp_ok = abs(b["median"] - 1) <= 0.02
    n_elem = np.array([len(e["X"]) for e in events])

    sizes = [1000, 2000, 4000, 6400] if quick else [1000, 2000, 4000, 6400, 12800, 25600, 50000]
    if skip_scaling:
        sizes = []
    sc = scaling(net, test, sizes, repeat=3)
    torch.set_num_threads(2)
    # 2 threads only up to 6.4k: on the shared machine two threads contend and the large sizes take minutes
    sc2 = scaling(net, test, [n for n in sizes if n <= 6400], repeat=3) + [(n, float("nan")) for n in sizes if n > 6400]
    torch.set_num_threads(1)
    alpha = t64 = t64_2 = t_link = float("nan")
    if n_extra and sc:
        allx = np.concatenate([e["X"][:, :12] for e in test])
        xs = allx[np.random.default_rng(0).integers(0, len(allx), 6400)]
        t_link = time_fn(lambda: with_link_features(xs), repeat=5, warmup=1)
    if sc:
        ns, ts = np.array([x[0] for x in sc], float), np.array([x[1] for x in sc])
        t64_2 = dict(sc2).get(6400, float("nan"))
        alpha = float(np.polyfit(np.log(ns), np.log(ts), 1)[0])
        t64 = dict(sc).get(6400, float("nan"))
    gpu_row = "no CUDA device on this machine: GPU time not measured"
    if torch.cuda.is_available() and sc:
        g = scaling(net, test, [6400], repeat=10, device="cuda")[0][1]
        gpu_row = f"{1e3 * g:.1f} ms/event at 6.4k elements on {torch.cuda.get_device_name(0)}"
        net.cpu()

    seed_from = VAL_SEED0 if eval_set == "val" else TEST_SEED0
    gen_name = "Pythia 8 (pythia8mc)" if pythia_available() else "parametric fallback (pythia8mc not installed)"
    origin = (f"loaded from `{load_path}` (not retrained)" if load_path else
              f"trained in this run{f', saved to `{save_path}`' if save_path else ''}")
    if info.get("stages"):
        origin += " (training stages: " + "; ".join(
            f"{st.get('train_s', 0) / 60:.0f} min wall / {st.get('cpu_s', float('nan')) / 60:.1f} min CPU, "
            f"lr {st.get('lr')}, loss options {st.get('loss_kw') or 'defaults'}" for st in info["stages"]) + ")"
    lines = [
        f"Events: pp → tt̄, 13.6 TeV, no pile-up, generator **{gen_name}**, detector `gnnreco.sim.delphes_like` "
        f"defaults; {n_train} training (seeds from {TRAIN_SEED0}) / {n_test} {eval_set} events (seeds from {seed_from}), "
        f"{n_elem.mean():.0f} elements/event on average (generation or cache read {gen_s:.0f} s). "
        f"MLPF GNN-LSH width {width}, {n_layers}+{n_layers} layers, bin {bin_size}, geometric prior (geo_scale) "
        f"{geo_scale}, link features {'on (extra_features=4)' if n_extra else 'off'}, "
        f"{count_parameters(net)} parameters, {origin}: {info['train_s'] / 60:.1f} min wall / "
        f"{info.get('cpu_s', float('nan')) / 60:.1f} min CPU, 1 thread ({info['epochs']} epochs, {info['steps']} steps, "
        f"batch {info.get('batch_size', 4)}, lr {info.get('lr', 1e-3)}, loss {info['loss_first']:.2f} → "
        f"{info['loss_last']:.2f}); loss options {info.get('loss_kw') or 'defaults'}; "
        f"load average {info.get('load_at_end', float('nan')):.1f} at the end of training, "
        f"{os.getloadavg()[0]:.1f} at the end of evaluation.",
        "",
        f"**Physics ({eval_set} events; response = median p_T,reco/p_T,gen, resolution = IQR/median, ΔR < 0.1 matching)**",
        "",
        ev.table(),
        "",
        f"- Goal: MLPF resolution in the 30–100 GeV bin ≥ 20 % better than the baseline: measured "
        f"{100 * gain:.1f} % better ({b['resolution']:.3f} vs {bb['resolution']:.3f}) → "
        f"**{'met' if gain >= 0.2 else 'NOT met'}** (bootstrap over {eval_set} events: ±{100 * gain_sd:.1f} % "
        f"standard deviation; {100 * p_goal:.0f} % of resamples reach 20 %).",
        f"- Goal: MLPF response within 2 % of 1 in 30–100 GeV: {b['median']:.3f} → **{'met' if resp_ok else 'NOT met'}**.",
        f"- 100–300 GeV (no goal): MLPF resolution {hi['resolution']:.3f} vs baseline {hb['resolution']:.3f} "
        f"({100 * (1 - hi['resolution'] / hb['resolution']):.1f} % better), response {hi['median']:.3f} vs {hb['median']:.3f}.",
        "",
    ]
    if sc:
        lines += [
            "**Scaling (GNN-LSH inference, one event, batch 1, CPU)**",
            "",
            markdown_table(["elements", "ms/event (1 thread)", "ms per 1k elements (1 thread)", "ms/event (2 threads)"],
                           [[int(n), 1e3 * t, 1e6 * t / n, 1e3 * t2] for (n, t), (_, t2) in zip(sc, sc2)]),
            "",
            f"- Fitted exponent t ∝ N^α: α = {alpha:.2f} (linear = 1; goal: linear).",
            *([f"- The times include the numpy link features ({1e3 * t_link:.1f} ms of them at 6.4k elements)."]
              if n_extra else []),
            f"- CPU time at 6.4k elements: {1e3 * t64:.1f} ms with 1 thread, {1e3 * t64_2:.1f} ms with 2 threads "
            f"(goal ≤ 100 ms) → **{'met' if min(t64, t64_2) <= 0.1 else 'NOT met'}** on this loaded machine "
            "(the quiet-machine latency record is the `pflow-latency` section); "
            "published MLPF ≈ 49 ms (Delphes, 2021) and ≈ 20 ms (CMS, L4 GPU, 2026) are GPU numbers.",
            f"- GPU: {gpu_row}.",
        ]
    else:
        lines += ["Scaling skipped (`--skip-scaling`); inference latency: `python -m gnnreco.bench.pflow --latency-only`."]
    lines += [f"- Machine: {machine_description()}; the 2 cores are shared with other jobs, so times are upper bounds."]
    return "\n".join(lines)


def run_latency(n_events: int = 20, width: int = 64, n_layers: int = 2, bin_size: int = 64,
                geo_scale: float = 16.0, workers: int = 2, link: bool = False, **_: object) -> str:
    """Inference latency and scaling only, with an untrained network.

    The GNN-LSH cost does not depend on the weights: every LSH bin holds exactly ``bin_size``
    elements, so the work per layer is fixed by N. This lets the latency goal be re-measured on a quiet
    machine in a minute, without the 25-minute training of :func:`run`. With ``link`` the network reads
    the 4 link features and their numpy computation is timed with it (one row per size, "total").
    """
    import os

    torch.manual_seed(0)
    net = MLPFNet(backbone="gnn_lsh", width=width, n_layers=n_layers, bin_size=bin_size, geo_scale=geo_scale,
                  extra_features=4 if link else 0)
    pool = make_events(n_events, 2_000_000, workers)
    if link:
        pool = add_link_features(pool)
    sizes = [1000, 2000, 4000, 6400, 12800, 25600, 50000]
    rows, res = [], {}
    for th in (1, 2):
        torch.set_num_threads(th)
        res[th] = dict(scaling(net, pool, sizes if th == 1 else [n for n in sizes if n <= 12800], repeat=5))
    torch.set_num_threads(1)
    for n in sizes:
        t1, t2 = res[1][n], res[2].get(n, float("nan"))
        rows.append([n, 1e3 * t1, 1e6 * t1 / n, 1e3 * t2, t1 / t2])
    ns = np.array(sizes, float)
    alpha = float(np.polyfit(np.log(ns), np.log([res[1][n] for n in sizes]), 1)[0])
    best = min(res[1][6400], res[2][6400])
    load = os.getloadavg()[0]
    return "\n".join([
        f"GNN-LSH width {width}, {n_layers}+{n_layers} layers, bin {bin_size}, {count_parameters(net)} parameters; "
        f"elements drawn from {n_events} Pythia/fallback tt̄ events; median of 5 calls after 1 warm-up; "
        f"load average at the end {load:.2f}.",
        "",
        markdown_table(["elements", "ms/event (1 thread)", "ms per 1k elements (1 thread)",
                        "ms/event (2 threads)", "speed-up 2 vs 1 thread"], rows),
        "",
        f"- Fitted exponent t ∝ N^α (1 thread): α = {alpha:.2f} (goal: linear).",
        f"- CPU time at 6.4k elements: {1e3 * res[1][6400]:.1f} ms (1 thread), {1e3 * res[2][6400]:.1f} ms "
        f"(2 threads); goal ≤ 100 ms → **{'met' if best <= 0.1 else 'NOT met'}**.",
        f"- Machine: {machine_description()}.",
    ])


def main() -> None:
    from gnnreco.utils.memory import tune_host_allocator

    tune_host_allocator()  # reuse freed activation buffers (see gnnreco.utils.memory)
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="record the result in docs/benchmarks.md")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="--minutes counts wall time (default) or this process's CPU time")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--loss", type=json.loads, default=None,
                    help='JSON keyword arguments of mlpf_loss, e.g. \'{"pt_linear_weight": 1.0}\'')
    ap.add_argument("--cache-dir", default=DEFAULT_CACHE, help="event cache ('' disables; default %(default)s)")
    ap.add_argument("--save-model", default=None, help="write the trained network to this path")
    ap.add_argument("--init-model", default=None, help="warm-start training from this saved network")
    ap.add_argument("--load-model", default=None, help="evaluate this saved network instead of training")
    ap.add_argument("--diagnose", action="store_true",
                    help="extra rows: MLPF classes + target momenta, target classes + MLPF momenta, targets")
    ap.add_argument("--link-features", action="store_true",
                    help="network reads the 4 track-cluster link features (extra_features=4)")
    ap.add_argument("--eval-set", choices=("test", "val"), default="test",
                    help="evaluate on the test events or on validation events (seeds from VAL_SEED0)")
    ap.add_argument("--skip-scaling", action="store_true", help="physics only (no inference timing)")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the inference latency/scaling (untrained network, ~1 min); own section")
    a = ap.parse_args()
    if a.latency_only:
        table = run_latency(width=a.width, n_layers=a.layers, workers=a.workers, link=a.link_features)
        print(table)
        if a.write:
            write_section("pflow-latency", "MLPF inference latency (issue 8)",
                          "python -m gnnreco.bench.pflow --latency-only"
                          + (" --link-features" if a.link_features else ""), table)
        return
    table = run(quick=a.quick, n_train=a.n_train, n_test=a.n_test, minutes=a.minutes, width=a.width,
                n_layers=a.layers, workers=a.workers, cache_dir=a.cache_dir or None, save_path=a.save_model,
                load_path=a.load_model, loss_kw=a.loss, lr=a.lr, batch_size=a.batch_size,
                skip_scaling=a.skip_scaling, diagnose=a.diagnose,
                init_path=a.init_model, link=a.link_features, eval_set=a.eval_set, clock=a.clock)
    print(table)
    if a.write:
        import shlex
        import sys

        cmd = "python -m gnnreco.bench.pflow " + " ".join(shlex.quote(x) for x in sys.argv[1:] if x != "--write")
        write_section("pflow", TITLE, cmd.strip(), table)


if __name__ == "__main__":
    main()
