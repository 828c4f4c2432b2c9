"""Benchmark of the calo task: OC-loss memory and time, physics after a short CPU training, inference time.

``python -m gnnreco.bench.calo [--quick] [--write] [--train-seconds S]``

1. **OC loss** forward + backward at 66k hits / 10k objects / C = 3 (issue 7), time and peak memory of
   :func:`gnnreco.tasks.calo.loss.condensation_loss` (``chunked`` and ``radius``) beside the reference
   (``object_condensation.pytorch.losses.condensation_loss`` and ``..._tiger`` when installed, else the
   dense :func:`reference_condensation_loss` below). Each variant runs in a fresh subprocess; the peak
   memory is the growth of the process's peak RSS over the memory held after building the inputs.
   The dense reference needs ~25 GB at full size, more than this machine has, so the reference is also
   measured at a reduced size (same hits per object) where every variant runs, and the values are
   compared there.
2. **Physics**: a :class:`~gnnreco.tasks.calo.model.CaloGravNet` trained for ``train_seconds`` on
   freshly simulated 50-shower events (noise included), then efficiency / fake rate above 10 GeV and
   the energy resolution relative to the truth-assignment hit sum, on independent events.
3. **Inference** time per ~50k-hit event (network + condensation) on the available CPU threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["run", "reference_condensation_loss", "oc_loss_benchmark", "train_and_evaluate", "inference_time"]


def reference_condensation_loss(*, beta: Tensor, x: Tensor, object_id: Tensor, weights: Tensor | None = None,
                                q_min: float, noise_threshold: int = 0, potential: str = "hinge",
                                distance_scale: Tensor | None = None) -> dict[str, Tensor]:
    r"""Dense :math:`O(NK)` object-condensation loss written directly from the paper's equations.

    The yardstick for values and memory when the ``object_condensation`` package is not installed;
    the ``"soft"`` potential is the HGCalML form (see :mod:`gnnreco.tasks.calo.loss`).
    """
    beta = beta.reshape(-1)
    object_id = object_id.reshape(-1)
    w = torch.ones_like(beta) if weights is None else weights.reshape(-1)
    ids = torch.unique(object_id[object_id > noise_threshold])
    m = (object_id[:, None] == ids[None, :]).to(beta.dtype)  # M_jk
    q = torch.atanh(beta) ** 2 + q_min
    alpha = torch.argmax(q[:, None] * m, dim=0)
    d2 = ((x[:, None, :] - x[alpha][None, :, :]) ** 2).sum(-1)
    pre = w[:, None] * q[:, None] * q[alpha][None, :]
    if potential == "soft":
        s = torch.ones_like(beta) if distance_scale is None else distance_scale.reshape(-1)
        d2 = d2 / (s[alpha][None, :] + 1e-4)
        f_att, f_rep = torch.log(torch.e * d2 / 2 + 1), torch.exp(-d2 / 2)
    else:
        f_att, f_rep = d2, torch.relu(1 - torch.sqrt(d2 + 1e-30))
    att = (pre * m * f_att).sum(0) / (m.sum(0) + 1e-9)
    rep = (pre * (1 - m) * f_rep).sum(0) / ((1 - m).sum(0) + 1e-9)
    if potential == "soft":
        coward = (1 - 1e-3 * torch.logsumexp(beta[:, None] / 1e-3 + torch.log(m), dim=0)).mean() + \
            (1 - (beta[:, None] * m).sum(0).clamp(0, 1)).mean()
    else:
        coward = (1 - beta[alpha]).mean()
    noise = beta[object_id <= noise_threshold].mean()
    return {"attractive": att.mean(), "repulsive": rep.mean(), "coward": coward, "noise": noise}


# ----------------------------------------------------------------------------------------------
# 1. OC loss: one variant per subprocess


_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
variant, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
beta = (torch.rand(n, generator=g) * 0.98).requires_grad_(True)
x = (torch.rand(n, 3, generator=g) * (k ** (1 / 3))).requires_grad_(True)  # ~1 object per unit volume
oid = torch.randint(0, k + 1, (n,), generator=g)
w = torch.ones(n)
if variant == "package":
    from object_condensation.pytorch.losses import condensation_loss as f
elif variant == "package_tiger":
    from object_condensation.pytorch.losses import condensation_loss_tiger as f
elif variant == "dense_reference":
    from gnnreco.bench.calo import reference_condensation_loss as f
else:
    from functools import partial
    from gnnreco.tasks.calo.loss import condensation_loss
    f = partial(condensation_loss, repulsive=variant)
def kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = kb()
t0 = time.perf_counter()
r = f(beta=beta, x=x, object_id=oid, weights=w, q_min=1.0)
tot = r["attractive"] + r["repulsive"] + r["coward"] + r["noise"]
tot.backward()
dt = time.perf_counter() - t0
print(json.dumps({"time_s": dt, "peak_mb": (kb() - base) / 1024.0,
                  "values": {k: float(r[k]) for k in ("attractive", "repulsive", "coward", "noise")}}))
"""


#: glibc mmap threshold of the loss-benchmark children (bytes): blocks above it are mapped and unmapped
#: on free, so the peak RSS follows the live memory of every implementation alike
MMAP_THRESHOLD = 1 << 20


def _run_child(variant: str, n: int, k: int, threads: int, timeout: float = 1800) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    # a fixed mmap threshold: glibc's dynamic one keeps freed multi-MiB blocks in the heap, and the
    # peak RSS then depends on the order of allocations rather than on the live tensors (the radius
    # variant at 66k / 10k measured 0.26 GB in one run and 3.1 GB in another with the same code)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    try:
        p = subprocess.run([sys.executable, "-c", _CHILD, variant, str(n), str(k), str(threads)],
                           capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        if p.returncode in (-9, 137):
            last = "killed (out of memory)"
        return {"error": last[:120]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def oc_loss_benchmark(quick: bool = False, threads: int = 2, full: tuple[int, int] = (66_000, 10_000),
                      ) -> tuple[list[list[object]], dict]:
    """Rows of the OC-loss table and the raw measurements."""
    try:
        import object_condensation  # noqa: F401

        refs = ["package", "package_tiger"]
    except ImportError:
        refs = ["dense_reference"]
    n_full, k_full = full
    scale = 16 if not quick else 64
    n_small, k_small = n_full // int(math.sqrt(scale)), k_full // int(math.sqrt(scale))
    sizes = [(n_small, k_small)] + ([] if quick else [(n_full, k_full)])
    res: dict = {}
    rows: list[list[object]] = []
    for n, k in sizes:
        full_size = (n, k) == (n_full, k_full)
        for v in ["chunked", "radius", *refs]:
            if full_size and v == "dense_reference":
                res[(v, n, k)] = {"error": "not run: needs ~25 GB (N×K dense)"}
            elif full_size and v in ("package", "package_tiger"):
                res[(v, n, k)] = {"error": "not run: needs > 20 GB, more than this machine's RAM"}
            else:
                res[(v, n, k)] = _run_child(v, n, k, threads)
        ref = res[(refs[0], n, k)]
        for v in ["chunked", "radius", *refs]:
            r = res[(v, n, k)]
            if "error" in r:
                rows.append([f"{n // 1000}k / {k // 1000 if k >= 1000 else k}{'k' if k >= 1000 else ''}", v,
                             "—", "—", "—", "—", r["error"]])
                continue
            if "error" not in ref:
                dv = max(abs(r["values"][q] - ref["values"][q]) for q in r["values"])
                mem_ratio = r["peak_mb"] / max(ref["peak_mb"], 1e-3)
                t_ratio = r["time_s"] / max(ref["time_s"], 1e-9)
            else:
                dv, mem_ratio, t_ratio = float("nan"), float("nan"), float("nan")
            rows.append([f"{n // 1000}k / {k // 1000 if k >= 1000 else k}{'k' if k >= 1000 else ''}", v,
                         round(r["time_s"], 2), round(r["peak_mb"], 1), round(t_ratio, 2), round(mem_ratio, 3),
                         f"max |Δ| = {dv:.1e}" if dv == dv else ""])
    return rows, {f"{a}@{b}x{c}": v for (a, b, c), v in res.items()}


# ----------------------------------------------------------------------------------------------
# 2. physics

#: the network trained by the physics benchmark
NET = {"hidden": 32, "n_blocks": 2, "k": 12, "space_dim": 3, "prop_dim": 16, "coord_dim": 3, "coord_anchor_mm": 100.0,
       "space_anchor_mm": 100.0, "shower_calibration": True, "predict_distance_scale": True}


def _crop_sector(ev: dict, rng: np.random.Generator) -> dict:
    """Hits of a random 90° azimuthal sector (training on crops: 4× cheaper steps, same local physics)."""
    phi = np.arctan2(ev["hit_pos"][:, 1], ev["hit_pos"][:, 0])
    phi0 = rng.uniform(-np.pi, np.pi)
    keep = np.mod(phi - phi0, 2 * np.pi) < 0.5 * np.pi
    n = len(phi)
    out = {k: (v[keep] if (k.startswith("hit_") or k == "x") and len(v) == n else v) for k, v in ev.items()}
    out["num_nodes"] = np.array([int(keep.sum())], dtype=np.int64)
    return out


def _event(seed: int, n_particles: int | list[int], energy=(1.0, 100.0), pileup_density: float = 0.0,
           crop: bool = False):
    from torch_geometric.data import Batch

    from gnnreco.data.datamodule import event_to_data
    from gnnreco.sim.calo import simulate
    from gnnreco.tasks.calo.data import process_event

    raw = simulate(seed, gun={"n_particles": n_particles, "energy": list(energy)}, pileup_density=pileup_density)
    ev = process_event(raw)
    if crop:
        ev = _crop_sector(ev, np.random.default_rng(seed))
    data = event_to_data({k: torch.as_tensor(v) for k, v in ev.items()})
    return Batch.from_data_list([data])


class _TrainingEvents(torch.utils.data.IterableDataset):
    """Training events ``first, first + 1, ...`` (cropped events of ``showers`` showers, an int or
    ``[min, max]``); with several loader workers worker ``w`` simulates the seeds ``first + w + i W``
    and the loader hands them out in seed order."""

    def __init__(self, first: int, showers: int | list[int] = 50) -> None:
        self.first = first
        self.showers = showers

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        i = w
        while True:
            yield _event(self.first + i, self.showers, crop=True)
            i += nw


def _as_is(batch):
    return batch


def _merge(batches: list):
    """One batch of the events of several one-event batches (for several events per training step)."""
    from torch_geometric.data import Batch

    return Batch.from_data_list([d for b in batches for d in b.to_data_list()])


def _training_events(first: int, workers: int = 0, showers: int | list[int] = 50):
    """Iterator over the training events from seed ``first`` (``showers`` per event before the crop):
    simulated in the loop, or ahead of it by ``workers`` processes (for a GPU, whose steps outrun one
    simulating core)."""
    if workers <= 0:
        return (_event(first + i, showers, crop=True) for i in itertools.count())
    loader = torch.utils.data.DataLoader(_TrainingEvents(first, showers), batch_size=None, num_workers=workers,
                                         prefetch_factor=4, collate_fn=_as_is)
    return iter(loader)


#: first seed of the training events (before 2026-11-25 20:05 UTC it was 10000, which a training of
#: more than 10000 steps would have run into the validation seeds 20000+)
TRAIN_SEED0 = 1_000_000
#: first seed of the test events (validation 20000+, shower calibration 40000+, pair classifier 50000+);
#: ``--test-seed0`` moves the test to another independent block of seeds for a repeat measurement
TEST_SEED0 = 30_000

#: the CaloModule settings of the physics benchmark
MODULE = {"q_min": 0.5, "payload_scale": 0.5, "payload_weights": {"energy": 0.2}, "s_log": 0.5, "local_radius": True,
          "t_beta": 0.1, "t_d": 2.0}


def train_and_evaluate(train_seconds: float = 900.0, n_test: int = 20, seed: int = 0, threads: int = 2,
                       checkpoint: str | Path | None = None, log_every: int = 25,
                       repulsive_scale: float = 1.0, net_kwargs: dict | None = None,
                       module_kwargs: dict | None = None, lr: float = 3e-3, calib_events: int = 0,
                       reuse: bool = False, init_from: str | Path | None = None, calib_on: str = "condensed",
                       n_val: int = 10, share_scan: bool = True, device: str = "cpu", workers: int = 0,
                       train_only: bool = False, events_per_step: int = 1,
                       train_showers: int | list[int] = 50, keep_accumulator: bool = False,
                       pair_events: int = 0, plot_dir: str | Path | None = None,
                       test_seed0: int = TEST_SEED0, test_views: int = 1, save_pairs: bool = True,
                       settings: dict | None = None, share_events: int = 0) -> dict:
    """Train a CaloGravNet on fresh cropped events (50 showers unless ``train_showers``) for
    ``train_seconds``, evaluate on ``n_test`` 50-shower events.

    The trained weights go to ``checkpoint`` (``state_dict`` of the network) with a JSON sidecar
    ``<checkpoint>.json`` that records how they were made (network and module settings, steps,
    seconds, learning rate, seed, final loss, load). With ``reuse`` an existing checkpoint is loaded
    with the settings of its sidecar and the training is skipped; the thresholds are still chosen on
    the validation events and the test events are the same. ``init_from`` continues the training of
    a saved checkpoint (same settings, from its sidecar; the steps and seconds are added up).

    With ``calib_events > 0`` the shower calibration head is refitted after the thresholds are chosen
    (:meth:`CaloModule.fit_shower_calibration`, network frozen) on that many further 50-shower
    events (seeds 40000+), on their condensed clusters (``calib_on="condensed"``) or truth showers;
    this is part of the evaluation (the checkpoint holds the network before the refit).

    The reconstruction settings are chosen on ``n_val`` validation events (seeds 20000+), never on
    the test events (seeds ``test_seed0`` on, default :data:`TEST_SEED0`; a block that overlaps the
    validation, calibration, pair-classifier or training seeds is refused): the thresholds t_β, t_d
    with the hard assignment; then, with ``share_scan``, the energy sharing
    (:func:`~gnnreco.tasks.calo.reco.share_energy`: hard or one of the ``SHARE_*`` options) at those
    thresholds; then the thresholds again with the chosen sharing. The result holds the test summary,
    event-bootstrap standard deviations (``bootstrap``) and, when sharing was chosen, the same test
    events without it (``hard``).

    ``device`` is where the network trains (``"cuda"`` on a GPU node; the evaluation always runs on
    the CPU), ``workers`` processes simulate the training events ahead of the steps (the same events,
    in the same order, as without them), and ``train_only`` returns the checkpoint's sidecar record
    after training, without the evaluation. ``events_per_step`` training events go into one step as
    one batch (the loss keeps them apart): on a GPU one cropped event per step is launch-bound (17
    steps/s for h = 64 on an H100, no faster than h = 32 on one CPU core), several fill it.

    ``train_showers`` is the multiplicity of the training events before the crop (an int, or
    ``[min, max]`` for a uniform draw per event); the validation and test events always have 50.
    Denser training events put more close pairs of showers, the merges that limit the resolution, into
    each step. ``keep_accumulator`` adds the test events' :class:`CaloMetricsAccumulator` to the result
    (``"accumulator"``), for paired comparisons of networks on the same events (:func:`compare`).

    With ``pair_events > 0`` a :class:`~gnnreco.tasks.calo.pairs.PairClassifier` is fitted on the
    candidate pairs of that many further events (seeds 50000+, network frozen) at the working point
    chosen above; the validation events then choose its suppression threshold
    (:data:`PAIR_THRESHOLDS`, 0 = the paper's rule) with the hit assignment, and then its fragment
    absorption (:data:`ABSORB_THRESHOLDS` × :data:`ABSORB_RADII`, 0 = off). It is saved as
    ``<checkpoint>.pairs.pt`` (see :func:`fit_pairs`) unless ``save_pairs`` is false.

    ``test_views`` (1, 2 or 4) averages the network over that many rotations of each validation and
    test event about the beam axis (:func:`~gnnreco.tasks.calo.model.symmetric_views`, the module's
    ``test_views``); the settings are then chosen, and the pair classifier fitted, on those outputs.

    ``settings`` (t_β, t_d and any reconstruction options, e.g. :func:`reco_settings` of another
    network) skips the validation scans and evaluates at those settings; with ``pair_events`` the pair
    classifier is still fitted, at that working point, and the settings' pair thresholds are used.
    This separates a network's own quality from the noise of its validation choice.

    The result also holds the test events' energy budget (``budget``,
    :meth:`~gnnreco.tasks.calo.metrics.CaloMetricsAccumulator.energy_budget`); with ``plot_dir`` the
    evaluation plots (:func:`~gnnreco.tasks.calo.plots.plot_all`, the budget included) go there.
    """
    if events_per_step < 1:
        raise ValueError(f"events_per_step must be >= 1, got {events_per_step}")
    _check_test_seeds(test_seed0, n_test, n_val, calib_events, pair_events, share_events)
    from functools import partial

    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.calo.module import CaloModule

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    info: dict = {}
    prior: dict = {}
    if reuse:
        info = load_checkpoint_info(checkpoint)
        net_kwargs, module_kwargs = info["net"], info["module"]
    elif init_from:
        prior = load_checkpoint_info(init_from)
        net_kwargs, module_kwargs = prior["net"], {**prior["module"], **(module_kwargs or {})}
    net = CaloGravNet(**(NET if net_kwargs is None else net_kwargs))
    mk = {**MODULE, "repulsive_scale": repulsive_scale, **(module_kwargs or {})}
    module = CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=lr), metric_min_energy=10.0, **mk)
    if reuse:
        net.load_state_dict(torch.load(checkpoint))
        train_seconds = 0.0
    elif init_from:
        net.load_state_dict(torch.load(init_from))
    dev = torch.device(device)
    module.to(dev)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
    # training events: seeds from TRAIN_SEED0 on, never the validation (20000+), test (30000+) or
    # calibration (40000+) events; a continued training goes on with unseen events
    seen = prior.get("train_events", prior.get("train_steps", 0))
    events = _training_events(TRAIN_SEED0 + seen, workers, train_showers) if train_seconds > 0 else iter(())
    t0 = time.perf_counter()
    step, hist = 0, []
    module.train()
    while time.perf_counter() - t0 < train_seconds:
        frac = (time.perf_counter() - t0) / train_seconds
        for gparam in opt.param_groups:
            gparam["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        batch = next(events) if events_per_step == 1 else _merge([next(events) for _ in range(events_per_step)])
        batch = batch.to(dev)
        out = module(batch)
        loss, parts = module.compute_loss(batch, out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        hist.append(float(loss.detach()))
        step += 1
        if log_every and step % log_every == 0:
            print(f"[calo bench] step {step} t={time.perf_counter() - t0:.0f}s loss={np.mean(hist[-log_every:]):.3f} "
                  + " ".join(f"{k}={float(v):.3f}" for k, v in parts.items()), flush=True)
    train_time = time.perf_counter() - t0
    del events  # stops the simulation workers
    module.to("cpu")
    if checkpoint and not reuse:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), checkpoint)
        info = {"net": dict(NET if net_kwargs is None else net_kwargs), "module": mk,
                "train_steps": step + prior.get("train_steps", 0), "train_events": step * events_per_step + seen,
                "events_per_step": events_per_step, "train_showers": train_showers,
                "train_seconds": train_time + prior.get("train_seconds", 0.0), "lr": lr, "seed": seed, "threads": threads,
                "stages": [*prior.get("stages", [{k: prior.get(k) for k in ("train_steps", "train_seconds", "lr")}]
                                      if prior else []), {"train_steps": step, "train_seconds": train_time, "lr": lr,
                                                          "train_showers": train_showers}],
                "final_loss": float(np.mean(hist[-50:])) if hist else float("nan"),
                "load_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
                "train_device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"}
        Path(str(checkpoint) + ".json").write_text(json.dumps(info, indent=1))
    if train_only:
        return info or {"train_steps": step, "train_seconds": train_time}
    module.eval()
    _set(module, {"test_views": test_views})
    # choose the condensation thresholds on validation events, evaluate on independent test events
    val = [_event(20_000 + i, 50) for i in range(n_val)]
    test = [_event(test_seed0 + i, 50) for i in range(n_test)]
    with torch.no_grad():
        val_out = [module(b) for b in val]
        test_out = [module(b) for b in test]
    # t_d is a radius in cluster space, or a multiple of the predicted local radius with local_radius
    td_grid = (1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 4.0) if module.hparams.local_radius else \
        (0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
    thr_grid = [{"t_beta": tb, "t_d": td} for tb in (0.1, 0.3, 0.7) for td in td_grid]
    hard = {"energy_sharing": "none"}
    if settings is not None:
        # fixed settings (e.g. another network's choice): no validation scan
        if not {"t_beta", "t_d"} <= set(settings):
            raise ValueError(f"settings need t_beta and t_d, got {sorted(settings)}")
        best = {k: settings[k] for k in ("t_beta", "t_d")}
        share = {k: v for k, v in settings.items()
                 if k not in ("t_beta", "t_d") and (pair_events > 0 or k not in PAIR_KEYS)}
        if share.get("energy_sharing") == "learned" and share_events <= 0:
            raise ValueError("the settings use the learned energy sharing: give share_events > 0 to fit its "
                             "hit-share classifier")
    else:
        best = choose_thresholds(scan(module, val, val_out, [{**p, **hard} for p in thr_grid], workers=threads))
        share = dict(hard)
    if share_scan and settings is None:
        # energy sharing at those thresholds, then the thresholds again with the chosen sharing
        options = [hard] + [{"energy_sharing": "gaussian", "share_sigma": sg, "share_radius": rho, "share_beta_power": bp,
                             "share_energy_power": q}
                            for sg in SHARE_SIGMAS for rho in SHARE_RADII for bp in SHARE_BETA_POWERS
                            for q in SHARE_ENERGY_POWERS]
        best = {k: best[k] for k in ("t_beta", "t_d")}
        share = choose_thresholds(scan(module, val, val_out, [{**best, **o} for o in options], workers=threads))
        share = {k: v for k, v in share.items() if k not in ("t_beta", "t_d")}
        if share != hard:
            best = choose_thresholds(scan(module, val, val_out, [{**p, **share} for p in thr_grid], workers=threads))
    best = {k: best[k] for k in ("t_beta", "t_d")}
    _set(module, {**best, **share})
    pair: dict = {}
    if pair_events > 0:
        # fitted on the candidate pairs of the chosen working point (β > t_β, within the widest
        # absorption radius), then its suppression and absorption thresholds chosen on validation
        clf, pair = fit_pairs(net, pair_events, checkpoint=checkpoint if save_pairs else None, t_beta=best["t_beta"],
                              radius=max(ABSORB_RADII) * best["t_d"], views=test_views)
        module.set_pair_classifier(clf)
        if settings is None:
            opts = [{"pair_threshold": pt, "assign": a} for pt in PAIR_THRESHOLDS for a in ("beta", "nearest")]
            po = choose_thresholds(scan(module, val, val_out, [{**best, **share, **o} for o in opts],
                                        workers=threads))
            share = {**share, **{k: po[k] for k in ("pair_threshold", "assign")}}
            opts = [{"absorb_threshold": at, "absorb_radius": ar} for at in ABSORB_THRESHOLDS for ar in ABSORB_RADII]
            po = choose_thresholds(scan(module, val, val_out, [{**best, **share, **o} for o in opts],
                                        workers=threads))
            share = {**share, **{k: po[k] for k in ("absorb_threshold", "absorb_radius")}}
        _set(module, {**best, **share})
    share_rec: dict = {}
    gaussian = dict(share)
    if share_events > 0:
        # the learned energy sharing, fitted on the condensations of the working point chosen so far,
        # then chosen on validation against the Gaussian sharing (or fixed by ``settings``)
        if settings is None or share.get("energy_sharing") == "learned":
            share_fixed = settings is not None
            if share_fixed:  # fit at the condensation the fixed settings make
                _set(module, {**best, **share})
            clf_s, share_rec = fit_share(module, share_events, checkpoint=checkpoint if save_pairs else None,
                                         t_d=best["t_d"])
            module.set_share_classifier(clf_s)
            if not share_fixed:
                opts = [{"energy_sharing": "learned", "share_radius": r, "share_beta_power": k,
                         "share_energy_power": 0.0} for r in LEARNED_SHARE_RADII for k in LEARNED_SHARE_POWERS]
                po = choose_thresholds(scan(module, val, val_out, [{**best, **share}] +
                                            [{**best, **share, **o} for o in opts], workers=threads))
                share = {k: v for k, v in po.items() if k not in ("t_beta", "t_d")}
            _set(module, {**best, **share})
    # the chosen working point on the validation events: what a choice between networks may use
    # without touching the test events
    vs = scan(module, val, val_out, [{**best, **share}], workers=threads)[0][1]
    val_summary = {k: vs[k] for k in ("resolution_ratio", "resolution", "efficiency", "fake_rate", "merge_rate")}
    print(f"[calo bench] {'validation choice' if settings is None else 'fixed settings'}: {best} {share}; validation: "
          + " ".join(f"{k} {v:.4f}" for k, v in val_summary.items()), flush=True)
    cal_loss = float("nan")
    if getattr(net, "shower_head", None) is not None and calib_events > 0:
        cal_loss = module.fit_shower_calibration([_event(40_000 + i, 50) for i in range(calib_events)], on=calib_on)
        print(f"[calo bench] shower calibration refit on the {calib_on} showers of {calib_events} events: "
              f"loss {cal_loss:.4f}", flush=True)  # the head acts after condensation: outputs unchanged
    # the test events at the chosen settings and, for comparison, without energy sharing and without
    # the pair classifier's stages (paired against the chosen settings on the same events)
    chosen = {**best, **share}
    variants = {"chosen": chosen}
    if share.get("energy_sharing", "none") != "none":
        variants["hard"] = {**chosen, **hard}
    if pair and (share.get("pair_threshold", 0.0) > 0 or share.get("absorb_threshold", 0.0) > 0):
        variants["no_pairs"] = {**chosen, "pair_threshold": 0.0, "absorb_threshold": 0.0}
    if share.get("energy_sharing") == "learned" and gaussian.get("energy_sharing") != "learned":
        variants["gaussian"] = {**chosen, **gaussian}
    accs = dict(zip(variants, scan_accumulators(module, test, test_out, list(variants.values()), workers=threads)))
    _set(module, chosen)
    acc = accs.pop("chosen")
    s = acc.summary()
    s["bootstrap"] = acc.bootstrap(1000)
    for name, other in accs.items():
        s[name] = {**other.summary(), "bootstrap": other.bootstrap(1000),
                   "paired": acc.bootstrap(1000, other=other)["ratio_difference"]}
    s["n_val"], s["n_test"], s["share"], s["test_views"] = n_val, n_test, share, test_views
    s["validation"] = val_summary
    if pair:
        s["pairs"] = pair
    if share_rec:
        s["share_classifier"] = share_rec
    if keep_accumulator:
        s["accumulator"] = acc
    s.update({"train_steps": step + prior.get("train_steps", 0),
              "train_seconds": train_time + prior.get("train_seconds", 0.0), "t_beta": best["t_beta"],
              "t_d": best["t_d"],
              "final_loss": float(np.mean(hist[-50:])) if hist else float("nan"),
              "hits_per_event": float(np.mean([b.num_nodes for b in test])), "calib_events": calib_events,
              "calib_on": calib_on, "calib_loss": cal_loss})
    if reuse:
        s.update({"train_steps": info.get("train_steps", 0), "train_seconds": info.get("train_seconds", 0.0),
                  "final_loss": info.get("final_loss", float("nan")), "reused": True})
    s["net"], s["module"] = dict(NET if net_kwargs is None else net_kwargs), mk
    s.update(_per_class(acc))
    s["budget"] = acc.energy_budget()
    if plot_dir:
        from gnnreco.tasks.calo.plots import plot_all

        s["plots"] = [str(p) for p in plot_all(acc, plot_dir)]
    return s


#: energy-sharing options scanned on the validation events (CaloModule.share_sigma, share_radius,
#: share_beta_power, share_energy_power); "none" (the hard assignment) is always a candidate
SHARE_SIGMAS = (0.25, 0.5, 1.0)
SHARE_RADII = (1.5, 2.0)
SHARE_BETA_POWERS = (4.0, 8.0)
SHARE_ENERGY_POWERS = (2.0, 4.0)


#: thresholds of P(same shower) scanned for the pair classifier's suppression (0: the paper's rule)
PAIR_THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
#: fragment-absorption thresholds of P(same shower) (0: off) and radii (capture radii) scanned
ABSORB_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)
ABSORB_RADII = (1.0, 1.5, 2.0)
#: first seed of the events the pair classifier is fitted on
PAIR_SEED0 = 50_000
#: first seed of the events the hit-share classifier (learned energy sharing) is fitted on
SHARE_SEED0 = 55_000
#: learned-sharing options scanned on the validation events: candidate radii ρ (capture radii) and
#: sharpening exponents k of P(hit in cluster)
LEARNED_SHARE_RADII = (2.0, 2.5, 3.0)
LEARNED_SHARE_POWERS = (2.0, 8.0, 32.0)
#: the reconstruction settings that belong to the pair classifier
PAIR_KEYS = ("pair_threshold", "assign", "absorb_threshold", "absorb_radius")


def reco_settings(checkpoint: str | Path) -> dict:
    """The reconstruction settings recorded in a checkpoint's sidecar (its ``reco`` block and the pair
    classifier's thresholds of ``reco_pairs``), as :func:`train_and_evaluate` takes them."""
    info = load_checkpoint_info(checkpoint)
    if "reco" not in info:
        raise ValueError(f"{checkpoint}.json records no reconstruction settings ('reco' block): evaluate it with "
                         "the validation scan instead")
    pairs = {k: v for k, v in info.get("reco_pairs", {}).items() if k in PAIR_KEYS}
    return {**info["reco"], **pairs}


def fit_pairs(net, n_events: int, checkpoint: str | Path | None = None, steps: int = 8000,
              t_beta: float = 0.1, radius: float = 4.0, max_pairs_per_event: int = 50_000,
              views: int = 1) -> tuple:
    """Fit a :class:`~gnnreco.tasks.calo.pairs.PairClassifier` to ``net`` (frozen) on the candidate
    pairs (β > ``t_beta``, within ``radius`` local scales of the higher-β one) of
    ``n_events`` 50-shower events, seeds :data:`PAIR_SEED0` on, the network averaged over ``views``
    rotations of each event. With ``checkpoint`` the classifier is saved to ``<checkpoint>.pairs.pt``.
    Returns the classifier and a record (events, views, pairs, share of same-shower pairs, final loss,
    seconds)."""
    from gnnreco.tasks.calo.pairs import fit_pair_classifier, gather_pair_samples, save_pair_classifier

    t0 = time.perf_counter()
    feats, labels = gather_pair_samples(net, (_event(PAIR_SEED0 + i, 50) for i in range(n_events)),
                                        t_beta=t_beta, radius=radius, max_pairs_per_event=max_pairs_per_event,
                                        views=views)
    n_pid = int(getattr(net, "n_pid", 4))
    clf, loss = fit_pair_classifier(feats, labels, n_pid=n_pid, steps=steps)
    rec = {"events": n_events, "views": views, "pairs": int(labels.numel()),
           "same_fraction": float(labels.mean()), "loss": loss, "seconds": time.perf_counter() - t0}
    print(f"[calo bench] pair classifier: {rec['pairs']} pairs of {n_events} events "
          f"({rec['same_fraction']:.3f} same shower), loss {loss:.4f}, {rec['seconds']:.0f} s", flush=True)
    if checkpoint:
        save_pair_classifier(clf, str(checkpoint) + ".pairs.pt", rec)
    return clf, rec


def fit_share(module, n_events: int, checkpoint: str | Path | None = None, t_d: float = 1.5,
              radius: float = 3.0, steps: int = 8000, max_pairs_per_event: int = 40_000) -> tuple:
    """Fit the hit-share classifier of the learned energy sharing (:mod:`gnnreco.tasks.calo.hitshare`)
    on the (hit, condensation point) pairs within ``radius`` capture radii of ``n_events`` 50-shower
    events (seeds :data:`SHARE_SEED0` on), condensed at the module's current settings (network and
    pair classifier frozen, ``test_views`` as set). With ``checkpoint`` it is saved to
    ``<checkpoint>.share.pt``. Returns the classifier and a record (events, pairs, share of positive
    pairs, final loss, seconds)."""
    from gnnreco.tasks.calo.hitshare import gather_hit_share_samples
    from gnnreco.tasks.calo.pairs import fit_pair_classifier, save_pair_classifier

    t0 = time.perf_counter()
    with torch.no_grad():
        feats, labels = gather_hit_share_samples((_event(SHARE_SEED0 + i, 50) for i in range(n_events)), module,
                                                 module.condensation, t_d=t_d, radius=radius,
                                                 max_pairs_per_event=max_pairs_per_event,
                                                 use_scale=bool(module.hparams.local_radius))
    n_pid = int(getattr(module.net, "n_pid", 4))
    clf, loss = fit_pair_classifier(feats, labels, n_pid=n_pid, steps=steps, n_features=feats.shape[1])
    rec = {"events": n_events, "pairs": int(labels.numel()), "positive_fraction": float(labels.mean()),
           "radius": radius, "loss": loss, "seconds": time.perf_counter() - t0}
    print(f"[calo bench] hit-share classifier: {rec['pairs']} pairs of {n_events} events "
          f"({rec['positive_fraction']:.3f} positive), loss {loss:.4f}, {rec['seconds']:.0f} s", flush=True)
    if checkpoint:
        save_pair_classifier(clf, str(checkpoint) + ".share.pt", rec)
    return clf, rec


def _check_test_seeds(test_seed0: int, n_test: int, n_val: int, calib_events: int, pair_events: int,
                      share_events: int = 0) -> None:
    """Refuse a test block of seeds that overlaps the validation, calibration, pair-classifier or
    training events: a test on events that chose or fitted anything would not be independent."""
    if test_seed0 < 0:
        raise ValueError(f"test_seed0 must be >= 0, got {test_seed0}")
    used = {"validation": (20_000, n_val), "shower calibration": (40_000, calib_events),
            "pair classifier": (PAIR_SEED0, pair_events), "hit-share classifier": (SHARE_SEED0, share_events),
            "training": (TRAIN_SEED0, 10 ** 12)}
    for name, (first, n) in used.items():
        if n > 0 and test_seed0 < first + n and first < test_seed0 + n_test:
            raise ValueError(f"test seeds {test_seed0}..{test_seed0 + n_test - 1} overlap the {name} events "
                             f"(seeds {first}..{first + n - 1}); choose another --test-seed0")


def _set(module, settings: dict) -> None:
    for k, v in settings.items():
        module.hparams[k] = v


#: what the forked workers of :func:`scan` inherit (set just before the fork, cleared after)
_SCAN_STATE: dict = {}


def _scan_events(idx: list[int], settings: list[dict]) -> list[list]:
    """The event results of events ``idx`` of the scan in :data:`_SCAN_STATE`, per setting: one
    reconstruction cache per event (:meth:`CaloModule.reconstruct`)."""
    module, val, val_out = _SCAN_STATE["module"], _SCAN_STATE["val"], _SCAN_STATE["val_out"]
    res: list[list] = [[] for _ in settings]
    for i in idx:
        cache: dict = {}
        for st, r in zip(settings, res):
            _set(module, st)
            r.extend(module.event_results(val[i], val_out[i], cache=cache))
    return res


def _scan_worker(args: tuple[list[int], list[dict]]) -> list[list]:
    torch.set_num_threads(1)
    return _scan_events(*args)


def scan_accumulators(module, events: list, outs: list, settings: list[dict], workers: int = 1) -> list:
    """One :class:`~gnnreco.tasks.calo.metrics.CaloMetricsAccumulator` (showers above 10 GeV) per
    reconstruction setting (module hyper-parameters, applied in turn on top of the module's; network
    outputs ``outs`` fixed) over ``events``; the module keeps the last setting.

    Event by event, every setting in turn, with one reconstruction cache per event
    (:meth:`CaloModule.reconstruct`): settings that differ only in the energy sharing reuse the
    condensation, those that differ only in the fragment absorption also the sharing. With
    ``workers > 1`` (and a ``fork`` start method, i.e. Linux) the events are split into that many
    contiguous blocks over forked processes of one thread each; the accumulators hold the same
    events in the same order as with one."""
    from gnnreco.tasks.calo.metrics import CaloMetricsAccumulator

    settings = [dict(st) for st in settings]
    n = len(events)
    _SCAN_STATE.update(module=module, val=events, val_out=outs)
    try:
        import multiprocessing as mp

        if workers > 1 and n >= 2 * workers and "fork" in mp.get_all_start_methods():
            chunks = [c.tolist() for c in np.array_split(np.arange(n), workers)]
            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_scan_worker, [(c, settings) for c in chunks])
        else:
            parts = [_scan_events(list(range(n)), settings)]
    finally:
        _SCAN_STATE.clear()
    if settings:
        _set(module, settings[-1])
    accs = []
    for j in range(len(settings)):
        acc = CaloMetricsAccumulator(min_energy=10.0)
        for part in parts:
            acc.extend(part[j])
        accs.append(acc)
    return accs


def scan(module, val: list, val_out: list, settings: list[dict], workers: int = 1) -> list[tuple[dict, dict]]:
    """Validation summary of each reconstruction setting (:func:`scan_accumulators`)."""
    accs = scan_accumulators(module, val, val_out, settings, workers=workers)
    return [(dict(st), acc.summary()) for st, acc in zip(settings, accs)]


def choose_thresholds(grid: list[tuple[object, dict]], min_efficiency: float = 0.96,
                      max_fake: float = 0.04):
    """The working point of a validation scan (thresholds t_β, t_d, or the energy-sharing options):
    the best energy resolution among the points whose validation efficiency and fake rate keep a
    margin to the goals (≥ ``min_efficiency``, ≤ ``max_fake``); if none does, the largest
    efficiency − fake rate."""
    ok = [(p, s) for p, s in grid if s["efficiency"] >= min_efficiency and s["fake_rate"] <= max_fake
          and s["resolution"] == s["resolution"]]
    if ok:
        return min(ok, key=lambda ps: ps[1]["resolution"])[0]
    scored = [(p, s["efficiency"] - s["fake_rate"]) for p, s in grid if s["efficiency"] == s["efficiency"]]
    return max(scored, key=lambda ps: ps[1])[0] if scored else grid[0][0]


def _per_class(acc) -> dict:
    """Resolution of the network and of the truth-assignment hit sum per true PID class, and the
    hit-sum reference restricted to the matched showers (the showers the network's resolution uses)."""
    from gnnreco.sim.calo import PID_CLASSES
    from gnnreco.tasks.calo.metrics import _truth_sum_response, robust_resolution

    t = acc.truth_table()
    sel = t["energy"] > acc.min_energy
    m = sel & t["matched"]
    out = {}
    ts_all = _truth_sum_response(t, sel)
    _, out["resolution_truth_sum_matched"] = robust_resolution(_truth_sum_response(t, m))
    for c, name in enumerate(PID_CLASSES):
        mc = m & (t["pid"] == c)
        _, out[f"resolution_{name}"] = robust_resolution(t["pred_energy"][mc] / t["energy"][mc])
        _, out[f"resolution_truth_sum_{name}"] = robust_resolution(ts_all[t["pid"][sel] == c])
    return out


def load_checkpoint_info(checkpoint: str | Path | None) -> dict:
    """The sidecar ``<checkpoint>.json`` written by :func:`train_and_evaluate` (network and module
    settings of a saved checkpoint)."""
    if not checkpoint or not Path(checkpoint).exists():
        raise FileNotFoundError(f"calo bench: checkpoint {checkpoint!r} does not exist (train it first: run "
                                "without --reuse-checkpoint)")
    side = Path(str(checkpoint) + ".json")
    if not side.exists():
        raise FileNotFoundError(f"calo bench: {side} is missing; it records the settings the checkpoint was "
                                "trained with (network size, module options)")
    info = json.loads(side.read_text())
    for key in ("net", "module"):
        if key not in info:
            raise ValueError(f"calo bench: {side} has no key {key!r}")
    return info


# ----------------------------------------------------------------------------------------------
# 3. inference time


def inference_time(threads: int = 2, n_showers: int = 265, pileup_density: float = 0.15, repeat: int = 3,
                   checkpoint: str | Path | None = None, net_kwargs: dict | None = None,
                   module_kwargs: dict | None = None, device: str = "cpu", seed: int = 777,
                   pair_classifier: torch.nn.Module | None = None, views: int = 1,
                   share_classifier: torch.nn.Module | None = None) -> dict:
    """Median time of the whole reconstruction of one event (network forward, condensation, shower
    energies, with the energy sharing of ``module_kwargs`` if any) with ``n_showers`` showers and
    pile-up: about 50k hits with the defaults. On ``device="cuda"`` the event is on the GPU before the
    clock starts and every stage is timed to a ``torch.cuda.synchronize()``. With ``pair_classifier``
    and ``pair_threshold > 0`` in ``module_kwargs`` the condensation uses its learned suppression
    (the classifier's time counts in the condensation stage), and with ``absorb_threshold > 0`` the
    fragments are merged (counted in the shower-energy stage); ``energy_sharing: learned`` needs
    ``share_classifier`` (counted there too). ``views`` rotations of the event go
    through the network as one batch (:func:`~gnnreco.tasks.calo.model.symmetric_views`)."""
    from gnnreco.bench.report import time_fn
    from gnnreco.tasks.calo.hitshare import share_energy_learned
    from gnnreco.tasks.calo.model import CaloGravNet, symmetric_views
    from gnnreco.tasks.calo.reco import cluster_energies, condense, merge_fragments, share_energy

    torch.set_num_threads(threads)
    net = CaloGravNet(**(NET if net_kwargs is None else net_kwargs))
    if checkpoint and Path(checkpoint).exists():
        net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    net = net.to(device).eval()
    if pair_classifier is not None:
        pair_classifier = pair_classifier.to(device).eval()
    mk = {**MODULE, **(module_kwargs or {})}
    batch = _event(seed, n_showers, pileup_density=pileup_density).to(device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    n = int(batch.num_nodes)
    stages: dict[str, list[float]] = {"network": [], "condensation": [], "shower energies": []}
    sharing = mk.get("energy_sharing", "none") == "gaussian"
    if mk.get("energy_sharing") == "learned":
        if share_classifier is None:
            raise ValueError("inference_time: energy_sharing 'learned' needs share_classifier")
        share_classifier = share_classifier.to(device).eval()
    cpu: list[float] = []

    def fn():
        c0 = time.process_time()
        with torch.no_grad():
            t0 = time.perf_counter()
            out = symmetric_views(net, batch.x, batch.batch, views)
            sync()
            t1 = time.perf_counter()
            sup = pair_classifier.same_shower(out, batch.hit_pos, batch.hit_energy, mk["pair_threshold"]) \
                if pair_classifier is not None and mk.get("pair_threshold", 0.0) > 0 else None
            c = condense(out["beta"], out["coords"], t_beta=mk["t_beta"], t_d=mk["t_d"], batch=batch.batch,
                         distance_scale=out.get("distance_scale") if mk.get("local_radius") else None,
                         assign=mk.get("assign", "beta"), suppress=sup)
            sync()
            t2 = time.perf_counter()
            shares = c.assignment
            if sharing:
                q = mk.get("share_energy_power", 0.0)
                cw = cluster_energies(c.assignment, batch.hit_energy.clamp(min=0.0), c.cp_index.numel()) ** q \
                    if q else None
                shares = share_energy(out["coords"], c, t_d=mk["t_d"], beta=out["beta"], batch=batch.batch,
                                      distance_scale=out.get("distance_scale") if mk.get("local_radius") else None,
                                      sigma=mk.get("share_sigma", 0.5), radius=mk.get("share_radius", 1.0),
                                      beta_power=mk.get("share_beta_power", 0.0), cluster_weight=cw,
                                      min_fraction=mk.get("share_min_fraction", 1e-3))
            elif mk.get("energy_sharing") == "learned":
                shares = share_energy_learned(out, batch.hit_pos, batch.hit_energy, c, batch.batch, share_classifier,
                                              t_d=mk["t_d"], radius=mk.get("share_radius", 1.0),
                                              power=mk.get("share_beta_power", 1.0),
                                              energy_power=mk.get("share_energy_power", 0.0),
                                              min_fraction=mk.get("share_min_fraction", 1e-3),
                                              use_scale=bool(mk.get("local_radius")))
            if pair_classifier is not None and mk.get("absorb_threshold", 0.0) > 0:
                c, shares = merge_fragments(
                    out["coords"], c, shares, batch.hit_energy, t_d=mk["t_d"], radius=mk.get("absorb_radius", 1.5),
                    decide=pair_classifier.same_shower(out, batch.hit_pos, batch.hit_energy, mk["absorb_threshold"]),
                    batch=batch.batch, distance_scale=out.get("distance_scale") if mk.get("local_radius") else None)
            net.shower_energy(batch.x, out, batch.hit_energy, shares, c.cp_index.numel())
            sync()
            t3 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        for key, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
            stages[key].append(v)

    t = time_fn(fn, repeat=repeat, warmup=1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"hits": n, "time_s": t, "cpu_s": float(np.median(cpu[1:] or cpu)), "load": load,
            "stages": {k: float(np.median(v[1:] or v)) for k, v in stages.items()}}


# ----------------------------------------------------------------------------------------------


def compare(checkpoints: list[str | Path], n_test: int = 150, n_val: int = 16, threads: int = 1,
            n_boot: int = 1000, pair_events: int = 0, test_seed0: int = TEST_SEED0,
            views: list[int] | None = None, settings: dict | None = None,
            share_events: int = 0) -> tuple[list[list[str]], list[dict]]:
    """Saved networks on the same test events, each with the settings its own validation scan chose.

    Independent bootstraps overstate the error of a difference between networks, since the same
    events are hard or easy for both. Here the events are resampled together
    (:meth:`CaloMetricsAccumulator.bootstrap` with ``other``): the last column is each network's
    resolution ratio minus the first network's, with the standard deviation of that difference.
    With ``pair_events`` each network gets its own pair classifier (suppression and fragment merging,
    see :func:`train_and_evaluate`), and with ``share_events`` its own learned sharing. ``views`` gives each checkpoint its ``test_views`` (one value for
    all, or one per checkpoint: the same checkpoint twice with 1 and 2 compares the rotation average
    with the network alone). The classifiers fitted here are not saved: the same checkpoint evaluated
    twice would otherwise overwrite its ``<checkpoint>.pairs.pt`` with the last one's. Returns Markdown
    rows and the per-network summaries; the rows also give each network's resolution ratio on its
    validation events at the settings it chose there, the figure to choose between networks by.
    With ``settings`` every network is evaluated at those settings instead of its own choice.
    """
    if len(checkpoints) < 2:
        raise ValueError(f"compare needs at least two checkpoints, got {len(checkpoints)}")
    views = list(views or [1])
    if len(views) == 1:
        views = views * len(checkpoints)
    if len(views) != len(checkpoints):
        raise ValueError(f"compare: {len(views)} test_views values for {len(checkpoints)} checkpoints")
    results = [train_and_evaluate(n_test=n_test, n_val=n_val, threads=threads, checkpoint=c, reuse=True,
                                  keep_accumulator=True, pair_events=pair_events, test_seed0=test_seed0,
                                  test_views=v, save_pairs=False, settings=settings, share_events=share_events)
               for c, v in zip(checkpoints, views)]
    ref = results[0]
    rows = []
    for c, v, r in zip(checkpoints, views, results):
        acc = r.pop("accumulator")
        if r is ref:
            ref_acc, diff = acc, "—"
        else:
            sd = acc.bootstrap(n_boot, other=ref_acc)["ratio_difference"]
            diff = f"{r['resolution_ratio'] - ref['resolution_ratio']:+.3f} ± {sd:.3f}"
        rows.append([str(c) + (f" ({v} views)" if v > 1 else ""), f"{r['validation']['resolution_ratio']:.3f}",
                     f"{r['efficiency']:.3f}", f"{r['fake_rate']:.3f}", f"{r['merge_rate']:.3f}",
                     f"{r['resolution_ratio']:.3f} ± {r['bootstrap']['resolution_ratio']:.3f}", diff])
    return rows, results


#: the columns of :func:`compare`'s rows
COMPARE_HEADER = ["network", "validation ratio", "efficiency", "fake rate", "merge rate", "resolution ratio",
                  "ratio − first (paired)"]


#: where the benchmark keeps its trained network (``outputs/`` is ignored by git)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "outputs" / "calo_bench" / "calo_gravnet.pt"
#: where the benchmark writes its evaluation plots (git-ignored)
PLOT_DIR = DEFAULT_CHECKPOINT.parent / "plots"


def run(quick: bool = False, train_seconds: float | None = None, threads: int = 2, checkpoint: str | None = None,
        repulsive_scale: float = 1.0, reuse_checkpoint: bool = False, inference_threads: int = 2,
        init_checkpoint: str | None = None, n_test: int | None = None, n_val: int = 10,
        share_scan: bool = True, pair_events: int = 0, test_seed0: int = TEST_SEED0, test_views: int = 1,
        share_events: int = 0, **_: object) -> str:
    """All three parts; returns the Markdown body recorded in docs/benchmarks.md.

    ``checkpoint`` (default :data:`DEFAULT_CHECKPOINT`) receives the trained network; with
    ``reuse_checkpoint`` a network trained earlier (its sidecar JSON says how) is evaluated instead of
    training a new one. ``threads`` is for the training and evaluation, ``inference_threads`` for the
    timed reconstruction of a 50k-hit event.
    """
    train_seconds = (60.0 if quick else 900.0) if train_seconds is None else float(train_seconds)
    rows, raw = oc_loss_benchmark(quick=quick, threads=threads)
    from gnnreco.bench.report import markdown_table

    print(markdown_table(["hits / objects", "implementation", "time [s]", "peak memory [MB]", "time / ref",
                          "memory / ref", "values vs ref"], rows), flush=True)
    print(json.dumps(raw), flush=True)

    ref_name = "object_condensation 1.1.0" if any(k.startswith("package") for k in raw) else "dense reference"
    parts = ["### OC loss, forward + backward (C = 3, q_min = 1)\n",
             markdown_table(["hits / objects", "implementation", "time [s]", "peak memory [MB]",
                             "time / ref", "memory / ref", "values vs ref"], rows),
             f"\nReference: {ref_name} `condensation_loss` (ratios are against it, same size, same run). "
             "Peak memory = growth of the peak RSS of a fresh process over the inputs, with glibc's mmap "
             "threshold fixed at 1 MiB (`MALLOC_MMAP_THRESHOLD_`) for every implementation, so that it follows "
             "the live tensors rather than the allocator's heap history; times include the page faults this costs."]
    ckpt = str(checkpoint or DEFAULT_CHECKPOINT)
    n_test = (5 if quick else 20) if n_test is None else n_test
    phys = train_and_evaluate(train_seconds=train_seconds, n_test=n_test, threads=threads, checkpoint=ckpt,
                              repulsive_scale=repulsive_scale, reuse=reuse_checkpoint, init_from=init_checkpoint,
                              n_val=n_val, share_scan=share_scan, pair_events=pair_events,
                              plot_dir=PLOT_DIR, test_seed0=test_seed0, test_views=test_views,
                              share_events=share_events)
    print("[calo bench] test summary: " + json.dumps(  # the unrounded figures, for the log
        {k: v for k, v in phys.items() if isinstance(v, (int, float, str)) or k in ("bootstrap", "share")},
        default=float), flush=True)
    clf = None
    if phys["share"].get("pair_threshold", 0.0) > 0 or phys["share"].get("absorb_threshold", 0.0) > 0:
        from gnnreco.tasks.calo.pairs import load_pair_classifier

        clf = load_pair_classifier(ckpt + ".pairs.pt")
    share_clf = None
    if phys["share"].get("energy_sharing") == "learned":
        from gnnreco.tasks.calo.pairs import load_pair_classifier

        share_clf = load_pair_classifier(ckpt + ".share.pt")
    inf = inference_time(threads=inference_threads, checkpoint=ckpt, net_kwargs=phys["net"], pair_classifier=clf,
                         views=test_views, share_classifier=share_clf,
                         module_kwargs={**phys["module"], "t_beta": phys["t_beta"], "t_d": phys["t_d"], **phys["share"]})
    ckpt_name = os.path.relpath(ckpt, Path(__file__).resolve().parents[2])
    bs = phys["bootstrap"]
    if "hard" in phys:
        h = phys["hard"]
        hard_rows = [["without energy sharing: efficiency / fake rate", f"{h['efficiency']:.3f} / {h['fake_rate']:.3f}",
                      "", ""],
                     ["without energy sharing: resolution", f"{h['resolution']:.3f} ± {h['bootstrap']['resolution']:.3f}",
                      "", ""],
                     ["without energy sharing: ratio", f"{h['resolution_ratio']:.3f} ± "
                      f"{h['bootstrap']['resolution_ratio']:.3f}", "", ""],
                     ["ratio with − without sharing (paired bootstrap)",
                      f"{phys['resolution_ratio'] - h['resolution_ratio']:+.3f} ± {h['paired']:.3f}", "", ""]]
    else:
        hard_rows = []
    if "no_pairs" in phys:
        h = phys["no_pairs"]
        hard_rows += [["without the pair classifier: efficiency / fake rate",
                       f"{h['efficiency']:.3f} / {h['fake_rate']:.3f}", "", ""],
                      ["without the pair classifier: ratio", f"{h['resolution_ratio']:.3f} ± "
                       f"{h['bootstrap']['resolution_ratio']:.3f}", "", ""],
                      ["ratio with − without the pair classifier (paired bootstrap)",
                       f"{phys['resolution_ratio'] - h['resolution_ratio']:+.3f} ± {h['paired']:.3f}", "", ""]]
    if "gaussian" in phys:
        h = phys["gaussian"]
        hard_rows += [["with the Gaussian sharing instead of the learned one: ratio",
                       f"{h['resolution_ratio']:.3f} ± {h['bootstrap']['resolution_ratio']:.3f}", "", ""],
                      ["ratio learned − Gaussian sharing (paired bootstrap)",
                       f"{phys['resolution_ratio'] - h['resolution_ratio']:+.3f} ± {h['paired']:.3f}", "", ""]]
    goal = lambda ok: "yes" if ok else "no"  # noqa: E731
    prow = [
        ["efficiency (truth E > 10 GeV)", f"{phys['efficiency']:.3f}", "≥ 0.95", goal(phys["efficiency"] >= 0.95)],
        ["fake rate (pred E > 10 GeV)", f"{phys['fake_rate']:.3f}", "≤ 0.05", goal(phys["fake_rate"] <= 0.05)],
        ["merge rate", f"{phys['merge_rate']:.3f}", "", ""],
        ["split rate", f"{phys['split_rate']:.3f}", "", ""],
        ["energy response (median)", f"{phys['response']:.3f}", "", ""],
        ["energy resolution (IQR/1.349/median)", f"{phys['resolution']:.3f} ± {bs['resolution']:.3f}", "", ""],
        ["truth-assignment hit-sum resolution", f"{phys['resolution_truth_sum']:.3f} ± {bs['resolution_truth_sum']:.3f}",
         "", ""],
        ["resolution ratio", f"{phys['resolution_ratio']:.3f} ± {bs['resolution_ratio']:.3f}", "≤ 1.2",
         goal(phys["resolution_ratio"] <= 1.2)],
        *hard_rows,
        ["PID accuracy (matched)", f"{phys.get('pid_accuracy', float('nan')):.3f}", "", ""],
        [f"inference, {inf['hits']} hits, {inference_threads} thread(s), wall [s]", f"{inf['time_s']:.2f}", "≤ 1",
         goal(inf["time_s"] <= 1.0 and inf["hits"] >= 50_000)],
        ["inference, CPU time of the process [s]", f"{inf['cpu_s']:.2f}", "", ""],
    ]
    pr = phys.get("pairs")
    pair_note = (f" (pair classifier fitted on {pr['pairs']} candidate pairs of {pr['events']} events, seeds "
                 f"{PAIR_SEED0}+, in {pr['seconds']:.0f} s)") if pr else ""
    sr = phys.get("share_classifier")
    if sr:
        pair_note += (f" (hit-share classifier of the learned sharing fitted on {sr['pairs']} hit–cluster pairs "
                      f"within {sr['radius']:g} capture radii of {sr['events']} events, seeds {SHARE_SEED0}+, "
                      f"in {sr['seconds']:.0f} s)")
    views_note = (f"; the network averaged over {test_views} rotations of each event about the beam axis "
                  "(`test_views`)") if test_views > 1 else ""
    per_class = " ".join(
        f"{name}: {phys[f'resolution_{name}']:.3f} (hit sum {phys[f'resolution_truth_sum_{name}']:.3f});"
        for name in _pid_names())
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in inf["stages"].items())
    parts += ["\n### Physics and inference\n",
              markdown_table(["metric", "value", "goal", "met"], prow),
              f"\nTraining: {phys['train_steps']} steps ({phys['train_seconds']:.0f} s, 1 thread)"
              f"{' in an earlier run (checkpoint reused: ' + ckpt_name + ')' if phys.get('reused') else ''}, each on "
              f"a random 90° sector of a fresh 50-shower event; test events have about "
              f"{phys['hits_per_event']:.0f} hits (noise included). CaloGravNet {phys['net']}; CaloModule "
              f"{ {k: v for k, v in phys['module'].items() if k not in ('t_beta', 't_d')} }; thresholds chosen on "
              f"{phys['n_val']} validation events (best resolution with efficiency ≥ 0.96 and fake rate ≤ 0.04 "
              f"there): t_β = {phys['t_beta']}, t_d = {phys['t_d']}, reconstruction options {phys['share']}"
              f"{pair_note}{views_note} (resolution ratio {phys['validation']['resolution_ratio']:.3f} on those "
              f"validation events); test on "
              f"{n_test} independent events, seeds {test_seed0}–{test_seed0 + n_test - 1} (± = standard deviation "
              "of 1000 bootstrap replicas over the test events).\n\nResolution per true class (matched showers "
              f"> 10 GeV; the hit-sum reference calibrated per class): {per_class} the hit-sum reference over the "
              "matched showers only: "
              f"{phys['resolution_truth_sum_matched']:.3f}.\n\nInference = network + condensation + shower energies "
              f"of one event (median of 3, {inference_threads} torch thread(s), load {inf['load']:.1f} when "
              f"measured): {stages}."]
    parts += ["\n### Where the energy goes (test events, matched showers > 10 GeV)\n",
              markdown_table(BUDGET_HEADER, budget_rows(phys["budget"])),
              "\nFractions are means over the showers, of each shower's own hit energy. The ratios are "
              "resolutions of the prediction's summed hit energy (each class calibrated by its median) over "
              "the truth-assignment hit sum's on the same showers: as reconstructed, with the energy lost to "
              "unmatched predictions (fragments, fakes) given back, with everything lost given back, and "
              "with nothing received: oracles that size each loss (`CaloMetricsAccumulator.energy_budget`; "
              f"plot `energy_budget.png` in {os.path.relpath(PLOT_DIR, Path(__file__).resolve().parents[2])}/)."]
    return "\n".join(parts)


#: columns of :func:`budget_rows`
BUDGET_HEADER = ["class", "showers", "own", "to other showers", "to fragments", "unassigned", "received",
                 "ratio", "+ fragments", "+ all lost", "− received"]


def budget_rows(budget: dict[str, dict[str, float]]) -> list[list[str]]:
    """Markdown rows of an energy budget (:meth:`CaloMetricsAccumulator.energy_budget`)."""
    rows = []
    for g, d in budget.items():
        rows.append([g, f"{d['n']:.0f}", *(f"{d[k]:.3f}" for k in ("own", "lost_matched", "lost_unmatched", "unassigned",
                                                                    "received")),
                     *(f"{d[k]:.2f}" for k in ("ratio_reco", "ratio_plus_fragments", "ratio_plus_lost",
                                               "ratio_minus_received"))])
    return rows


def _pid_names() -> tuple[str, ...]:
    from gnnreco.sim.calo import PID_CLASSES

    return tuple(PID_CLASSES)


def _showers_arg(values: list[int]) -> int | list[int]:
    """``--train-showers N`` or ``--train-showers MIN MAX`` as :func:`train_and_evaluate` takes it."""
    if len(values) == 1:
        return int(values[0])
    if len(values) == 2 and 0 < values[0] <= values[1]:
        return [int(values[0]), int(values[1])]
    raise SystemExit(f"--train-showers takes N or MIN MAX with 0 < MIN <= MAX, got {values}")


def _module_options(items: list[str]) -> dict:
    """``--module-option KEY=VALUE ...`` as CaloModule keyword arguments; VALUE is read as JSON
    (``payload_weights={"energy": 0.5}``, ``q_min=1.0``) and kept as a string when it is not JSON.
    Keys that CaloModule does not take are refused here, before a long training starts."""
    import inspect

    from gnnreco.tasks.calo.module import CaloModule

    known = set(inspect.signature(CaloModule.__init__).parameters) - {"self", "net", "optimizer"}
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--module-option takes KEY=VALUE, got {item!r}")
        if key not in known:
            raise SystemExit(f"--module-option: CaloModule has no setting {key!r} (it has: {', '.join(sorted(known))})")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: list[str] | None = None) -> None:
    from gnnreco.utils.memory import tune_host_allocator

    tune_host_allocator()  # reuse freed activation buffers (see gnnreco.utils.memory)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and a 60 s training")
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    ap.add_argument("--train-seconds", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (use 1 on a machine shared with other jobs: oversubscribed thread "
                         "pools make every small op wait)")
    ap.add_argument("--repulsive-scale", type=float, default=1.0,
                    help="extra weight of the repulsive potential in training (CaloModule.repulsive_scale)")
    ap.add_argument("--checkpoint", default=None,
                    help=f"where the trained network is saved (default {DEFAULT_CHECKPOINT}, git-ignored)")
    ap.add_argument("--reuse-checkpoint", action="store_true",
                    help="evaluate the network saved at --checkpoint (and its .json sidecar) instead of training")
    ap.add_argument("--inference-threads", type=int, default=2, help="torch threads of the timed inference")
    ap.add_argument("--n-test", type=int, default=None, help="test events (default 20, 5 with --quick)")
    ap.add_argument("--n-val", type=int, default=10, help="validation events for the reconstruction settings")
    ap.add_argument("--no-share-scan", action="store_true",
                    help="hard assignment only (no energy-sharing options in the validation scan)")
    ap.add_argument("--pair-events", type=int, default=0,
                    help="fit the learned suppression of condensation points (gnnreco.tasks.calo.pairs) on this "
                         "many events after the network, and let the validation events choose its threshold")
    ap.add_argument("--share-events", type=int, default=0,
                    help="fit the learned energy sharing (gnnreco.tasks.calo.hitshare) on this many events after "
                         "the pair classifier, and let the validation events choose it or the Gaussian sharing")
    ap.add_argument("--init-checkpoint", default=None,
                    help="continue training this saved network (its .json sidecar gives the settings)")
    ap.add_argument("--compare", nargs="+", default=None, metavar="CKPT",
                    help="evaluate saved networks on the same test events and print each one's resolution "
                         "ratio minus the first's, with a paired event bootstrap (uses --n-test, --n-val, --threads)")
    ap.add_argument("--train-only", action="store_true",
                    help="train, save --checkpoint and its sidecar, and stop (evaluate later with --reuse-checkpoint)")
    ap.add_argument("--train-device", default="cpu", help="where the network trains with --train-only (cuda on a GPU)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes simulating the training events ahead of the steps (--train-only)")
    ap.add_argument("--hidden", type=int, default=None, help="network width of a new network (--train-only)")
    ap.add_argument("--n-blocks", type=int, default=None, help="GravNet blocks of a new network (--train-only)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (--train-only)")
    ap.add_argument("--events-per-step", type=int, default=1,
                    help="training events per step, as one batch (--train-only; several fill a GPU)")
    ap.add_argument("--train-showers", type=int, nargs="+", default=[50], metavar="N",
                    help="showers per training event before the crop: N, or MIN MAX for a uniform draw "
                         "(--train-only; validation and test events keep 50)")
    ap.add_argument("--module-option", nargs="+", default=[], metavar="KEY=VALUE",
                    help="CaloModule settings of the training (--train-only), VALUE as JSON, e.g. "
                         "'payload_weights={\"energy\": 0.5}'; a continued training keeps the others from its sidecar")
    ap.add_argument("--settings-from", default=None, metavar="CKPT",
                    help="with --compare: evaluate every network at the reconstruction settings recorded in CKPT's "
                         "sidecar (no validation scans; pair classifiers still refitted with --pair-events)")
    ap.add_argument("--test-seed0", type=int, default=TEST_SEED0,
                    help=f"first seed of the test events (default {TEST_SEED0}); another block of seeds repeats "
                         "the measurement on independent events")
    ap.add_argument("--test-views", type=int, nargs="+", default=[1], metavar="V",
                    help="average the network over V rotations of each event about the beam axis (1, 2 or 4); "
                         "with --compare one value per checkpoint, or one for all")
    args = ap.parse_args(argv)
    if not args.compare and len(args.test_views) != 1:
        raise SystemExit("--test-views takes one value unless --compare is given")
    if args.module_option and not args.train_only:
        raise SystemExit("--module-option sets a training's loss settings: use it with --train-only "
                         "(a reused network keeps the settings of its sidecar)")
    if args.settings_from and not args.compare:
        raise SystemExit("--settings-from is an option of --compare")
    if args.settings_from and reco_settings(args.settings_from).get("energy_sharing") == "learned" \
            and args.share_events <= 0:
        raise SystemExit(f"{args.settings_from}'s settings use the learned energy sharing: add --share-events N "
                         "(e.g. 300) to fit each network's hit-share classifier")
    if args.compare:
        from gnnreco.bench.report import markdown_table

        rows, _ = compare(args.compare, n_test=args.n_test or 150, n_val=args.n_val, threads=args.threads,
                          pair_events=args.pair_events, test_seed0=args.test_seed0, views=args.test_views,
                          settings=reco_settings(args.settings_from) if args.settings_from else None,
                          share_events=args.share_events)
        print(markdown_table(COMPARE_HEADER, rows))
        return
    if args.train_only:
        net = {**NET, **({"hidden": args.hidden} if args.hidden else {}),
               **({"n_blocks": args.n_blocks} if args.n_blocks else {})}
        info = train_and_evaluate(train_seconds=args.train_seconds or 900.0, threads=args.threads,
                                  checkpoint=args.checkpoint or DEFAULT_CHECKPOINT, log_every=500,
                                  repulsive_scale=args.repulsive_scale, net_kwargs=net, lr=args.lr,
                                  init_from=args.init_checkpoint, device=args.train_device, workers=args.workers,
                                  train_only=True, events_per_step=args.events_per_step,
                                  train_showers=_showers_arg(args.train_showers),
                                  module_kwargs=_module_options(args.module_option) or None)
        print(f"trained: {json.dumps(info)}")
        return
    body = run(quick=args.quick, train_seconds=args.train_seconds, threads=args.threads,
               repulsive_scale=args.repulsive_scale, checkpoint=args.checkpoint,
               reuse_checkpoint=args.reuse_checkpoint, inference_threads=args.inference_threads,
               init_checkpoint=args.init_checkpoint, n_test=args.n_test, n_val=args.n_val,
               share_scan=not args.no_share_scan, pair_events=args.pair_events, test_seed0=args.test_seed0,
               share_events=args.share_events,
               test_views=args.test_views[0])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body += (f"\n\nThe machine was shared with other jobs while this ran (load average {load:.1f} at the end, "
             f"{os.cpu_count()} cores), so times are pessimistic; {args.threads} torch thread(s).")
    print(body)
    if args.write:
        from gnnreco.bench.report import write_section

        cmd = "python -m gnnreco.bench.calo --write" + (" --quick" if args.quick else "") + \
            (f" --train-seconds {args.train_seconds:g}" if args.train_seconds is not None else "") + \
            f" --threads {args.threads}" + \
            (f" --repulsive-scale {args.repulsive_scale:g}" if args.repulsive_scale != 1.0 else "") + \
            (f" --checkpoint {args.checkpoint}" if args.checkpoint else "") + \
            (" --reuse-checkpoint" if args.reuse_checkpoint else "") + \
            (f" --init-checkpoint {args.init_checkpoint}" if args.init_checkpoint else "") + \
            (f" --n-test {args.n_test}" if args.n_test is not None else "") + \
            (f" --n-val {args.n_val}" if args.n_val != 10 else "") + \
            (" --no-share-scan" if args.no_share_scan else "") + \
            (f" --pair-events {args.pair_events}" if args.pair_events else "") + \
            (f" --share-events {args.share_events}" if args.share_events else "") + \
            (f" --test-seed0 {args.test_seed0}" if args.test_seed0 != TEST_SEED0 else "") + \
            (f" --test-views {args.test_views[0]}" if args.test_views[0] != 1 else "") + \
            (f" --inference-threads {args.inference_threads}" if args.inference_threads != 2 else "")
        write_section("calo", "Calorimeter clustering (`gnnreco bench calo`)", cmd, body)


if __name__ == "__main__":
    main()
