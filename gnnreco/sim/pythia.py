"""Shared Pythia 8 event generation: pp collisions, one seed per event, one Pythia per worker.

Any task that needs generator-level events (MLPF particle flow, LHCb-style full event interpretation)
uses this module. An event is returned as a flat dict of numpy arrays over the *final-state*
particles (status > 0 in Pythia's event record):

=========  =====  ==========================================================
key        dtype  meaning
=========  =====  ==========================================================
``pid``    int32  PDG id
``charge`` f32    electric charge in units of e
``px``..   f32    ``px, py, pz, e`` four-momentum (GeV)
``vx``..   f32    ``vx, vy, vz`` production vertex (mm)
``is_pu``  bool   particle comes from a pile-up interaction
=========  =====  ==========================================================

Processes (``process=``): ``ttbar`` (gg/qq̄ → tt̄), ``qcd`` (hard QCD 2→2 with p̂_T > ``pthat_min``),
``ztautau`` (Z/γ* → ττ), ``minbias`` (soft QCD inelastic, used for pile-up). ``extra_settings`` adds any
Pythia ``readString`` lines (e.g. a B-hadron selection for LHCb-like events).

Seeds: one :class:`pythia8mc.Pythia` is built per (process, settings) and per worker process, initialised
once (≈0.5 s) and then re-seeded per event through its random-number engine, so event *i* depends only
on its seed, not on which worker made it or in which order.

When ``pythia8mc`` is not installed (``gnnreco._compat.WITH_PYTHIA8`` is False), or ``backend="parametric"``
is asked, :func:`parametric_event` makes a stand-in event with the same keys: jets as collimated sprays
of hadrons and photons with a falling p_T spectrum plus an isotropic underlying event. It keeps tests
and examples running, but it is *not* a physics generator
results say which backend made them
(``meta["backend"]``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Iterable, Sequence

import numpy as np

from gnnreco._compat import WITH_PYTHIA8

log = logging.getLogger(__name__)

__all__ = [
    "PROCESSES",
    "GEN_KEYS",
    "generate_event",
    "generate_events",
    "pythia_event",
    "parametric_event",
    "pythia_available",
]

#: Pythia settings of each named process (beam energy and seeds are added separately).
PROCESSES: dict[str, tuple[str, ...]] = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "qcd": ("HardQCD:all = on",),
    "ztautau": ("WeakSingleBoson:ffbar2gmZ = on", "23:onMode = off", "23:onIfAny = 15",
                "PhaseSpace:mHatMin = 50."),
    "minbias": ("SoftQCD:inelastic = on",),
}

GEN_KEYS = ("pid", "charge", "px", "py", "pz", "e", "vx", "vy", "vz", "is_pu")

_PYTHIA_CACHE: dict[tuple, object] = {}


def pythia_available() -> bool:
    """True when the ``pythia8mc`` bindings import (see ``gnnreco._compat.WITH_PYTHIA8``)."""
    return bool(WITH_PYTHIA8)


def _settings(process: str, ecm: float, pthat_min: float, extra_settings: Sequence[str]) -> tuple[str, ...]:
    if process not in PROCESSES:
        raise ValueError(f"process={process!r} is unknown; expected one of {sorted(PROCESSES)}")
    base = [f"Beams:eCM = {float(ecm)}", "Next:numberCount = 0", "Next:numberShowEvent = 0",
            "Next:numberShowInfo = 0", "Next:numberShowProcess = 0", "Print:quiet = on",
            "Random:setSeed = on", "Random:seed = 1",
            # long-lived particles decay inside the generator except the usual detector-stable ones
            "ParticleDecays:limitTau0 = on", "ParticleDecays:tau0Max = 10."]
    if process == "qcd":
        base.append(f"PhaseSpace:pTHatMin = {float(pthat_min)}")
    return tuple(base) + PROCESSES[process] + tuple(extra_settings)


def _get_pythia(settings: tuple[str, ...]):
    """The worker's Pythia instance for ``settings`` (created and initialised once)."""
    key = (os.getpid(), settings)
    py = _PYTHIA_CACHE.get(key)
    if py is None:
        import pythia8mc

        py = pythia8mc.Pythia("", False)
        for s in settings:
            if not py.readString(s):
                raise ValueError(f"Pythia rejected the setting {s!r}")
        if not py.init():
            raise RuntimeError(f"Pythia failed to initialise with settings {list(settings)}")
        _PYTHIA_CACHE[key] = py
    return py


def _next_final_state(py, seed: int, max_tries: int = 10) -> np.ndarray:
    """Generate one event with ``seed`` and return its final-state particles as a [n, 10] array."""
    py.rndm.init(int(seed) % 900_000_000 + 1)
    for _ in range(max_tries):
        if py.next():
            break
    else:
        raise RuntimeError(f"Pythia failed to generate an event in {max_tries} tries (seed {seed})")
    ev = py.event
    rows = []
    for i in range(ev.size()):
        p = ev[i]
        if p.isFinal():
            rows.append((p.id(), p.charge(), p.px(), p.py(), p.pz(), p.e(), p.xProd(), p.yProd(), p.zProd()))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 9)


def _rows_to_event(rows: np.ndarray, is_pu: np.ndarray) -> dict[str, np.ndarray]:
    out = {"pid": rows[:, 0].astype(np.int32), "charge": rows[:, 1].astype(np.float32)}
    for j, k in enumerate(("px", "py", "pz", "e", "vx", "vy", "vz")):
        out[k] = rows[:, 2 + j].astype(np.float32)
    out["is_pu"] = is_pu.astype(bool)
    return out


def pythia_event(seed: int, process: str = "ttbar", pileup: float = 0.0, ecm: float = 13600.0,
                 pthat_min: float = 30.0, extra_settings: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """One Pythia 8 event (hard process + Poisson(``pileup``) minimum-bias interactions).

    Args:
        seed: seed of this event (the hard process and the pile-up draw from it).
        process: ``ttbar``, ``qcd``, ``ztautau`` or ``minbias``.
        pileup: mean number μ of pile-up interactions added (0 = none).
        ecm: centre-of-mass energy √s in GeV.
        pthat_min: minimum p̂_T of the ``qcd`` process.
        extra_settings: additional Pythia ``readString`` lines.

    Returns:
        final-state particles as a dict of arrays (keys :data:`GEN_KEYS`).
    """
    hard = _next_final_state(_get_pythia(_settings(process, ecm, pthat_min, extra_settings)), seed)
    parts = [hard]
    flags = [np.zeros(len(hard), bool)]
    if pileup > 0:
        rng = np.random.default_rng([int(seed), 7919])
        n_pu = int(rng.poisson(pileup))
        mb = _get_pythia(_settings("minbias", ecm, pthat_min, ()))
        for _ in range(n_pu):
            rows = _next_final_state(mb, int(rng.integers(1, 2**31 - 1)))
            # pile-up vertices are spread along the beam line (σ_z ≈ 50 mm)
            rows[:, 8] += rng.normal(0.0, 50.0)
            parts.append(rows)
            flags.append(np.ones(len(rows), bool))
    return _rows_to_event(np.concatenate(parts), np.concatenate(flags))


# ---------------------------------------------------------------------------------------------------
# parametric fallback
_SPECIES = np.array([211, -211, 321, -321, 2212, -2212, 130, 2112, -2112, 22, 11, -11, 13, -13])
_SPECIES_Q = np.array([1, -1, 1, -1, 1, -1, 0, 0, 0, 0, -1, 1, -1, 1], np.float32)
_SPECIES_M = np.array([0.1396, 0.1396, 0.4937, 0.4937, 0.9383, 0.9383, 0.4976, 0.9396, 0.9396, 0.0,
                       0.000511, 0.000511, 0.1057, 0.1057])
# jet fragment composition: π± 52 %, K± 10 %, p 4 %, K0L 4 %, n 4 %, γ (from π0) 25 %, e/μ 1 %
_SPECIES_P = np.array([0.26, 0.26, 0.05, 0.05, 0.02, 0.02, 0.04, 0.02, 0.02, 0.25, 0.003, 0.003, 0.002,
                       0.002])
_SPECIES_P = _SPECIES_P / _SPECIES_P.sum()
_N_JETS = {"ttbar": (4, 7), "qcd": (2, 4), "ztautau": (1, 3), "minbias": (0, 1)}


def parametric_event(seed: int, process: str = "ttbar", pileup: float = 0.0, ecm: float = 13600.0,
                     pthat_min: float = 30.0, n_ue: int = 60) -> dict[str, np.ndarray]:
    """Stand-in event when Pythia is not available (same keys as :func:`pythia_event`).

    Jets: a number of partons (by process) with p_T drawn from a falling spectrum above ``pthat_min``
    (ttbar: ≈ 40–200 GeV), |η| < 2.5, each fragmented into 2 + 3·ln(p_T) particles with momentum
    fractions from a Dirichlet(0.7) draw and angles around the jet axis with spread ∝ 1/√(z·p_T).
    Underlying event: Poisson(``n_ue``) soft particles (p_T ~ Exp(0.6 GeV), |η| < 4), plus
    Poisson(25·``pileup``) pile-up particles flagged ``is_pu``. ``process=ttbar``/``ztautau`` also add
    isolated leptons and neutrinos.
    """
    if process not in _N_JETS:
        raise ValueError(f"process={process!r} is unknown; expected one of {sorted(_N_JETS)}")
    rng = np.random.default_rng([int(seed), 31])
    pid, pt, eta, phi, pu = [], [], [], [], []
    lo, hi = _N_JETS[process]
    n_jets = int(rng.integers(lo, hi + 1))
    base_pt = 25.0 if process != "qcd" else float(pthat_min)
    for _ in range(n_jets):
        jpt = base_pt * (1.0 + rng.pareto(3.0)) * (1.5 if process == "ttbar" else 1.0)
        jeta, jphi = rng.uniform(-2.5, 2.5), rng.uniform(-np.pi, np.pi)
        n = int(2 + 3 * np.log(jpt))
        z = rng.dirichlet(np.full(n, 0.7))
        sp = rng.choice(len(_SPECIES), size=n, p=_SPECIES_P)
        spread = 0.08 / np.sqrt(np.maximum(z * jpt, 0.3))
        pid.append(_SPECIES[sp])
        pt.append(z * jpt)
        eta.append(jeta + rng.normal(0, 1, n) * spread)
        phi.append(jphi + rng.normal(0, 1, n) * spread)
        pu.append(np.zeros(n, bool))
    if process in ("ttbar", "ztautau"):
        for _ in range(int(rng.integers(0, 3))):
            lep = int(rng.choice([11, -11, 13, -13]))
            pid.append(np.array([lep, 12 if abs(lep) == 11 else 14]))
            pt.append(rng.uniform(20, 80, 2))
            eta.append(rng.uniform(-2.5, 2.5, 2))
            phi.append(rng.uniform(-np.pi, np.pi, 2))
            pu.append(np.zeros(2, bool))
    for n_soft, flag in ((int(rng.poisson(n_ue)), False), (int(rng.poisson(25 * pileup)), True)):
        sp = rng.choice(len(_SPECIES), size=n_soft, p=_SPECIES_P)
        pid.append(_SPECIES[sp])
        pt.append(rng.exponential(0.6, n_soft) + 0.1)
        eta.append(rng.uniform(-4, 4, n_soft))
        phi.append(rng.uniform(-np.pi, np.pi, n_soft))
        pu.append(np.full(n_soft, flag))
    pid_a = np.concatenate(pid).astype(np.int32)
    pt_a, eta_a = np.concatenate(pt), np.concatenate(eta)
    phi_a = (np.concatenate(phi) + np.pi) % (2 * np.pi) - np.pi
    lookup = {int(p): i for i, p in enumerate(_SPECIES)}
    mass = np.array([_SPECIES_M[lookup[int(p)]] if int(p) in lookup else 0.0 for p in pid_a])
    charge = np.array([_SPECIES_Q[lookup[int(p)]] if int(p) in lookup else 0.0 for p in pid_a], np.float32)
    px, py, pz = pt_a * np.cos(phi_a), pt_a * np.sin(phi_a), pt_a * np.sinh(eta_a)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    z0 = rng.normal(0, 50.0)
    n = len(pid_a)
    return {"pid": pid_a, "charge": charge, "px": px.astype(np.float32), "py": py.astype(np.float32),
            "pz": pz.astype(np.float32), "e": e.astype(np.float32), "vx": np.zeros(n, np.float32),
            "vy": np.zeros(n, np.float32), "vz": np.full(n, z0, np.float32), "is_pu": np.concatenate(pu)}


def generate_event(seed: int, process: str = "ttbar", pileup: float = 0.0, ecm: float = 13600.0,
                   pthat_min: float = 30.0, backend: str = "auto",
                   extra_settings: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """One generator-level event from Pythia 8 or the parametric fallback.

    Args:
        seed: seed of the event.
        process: ``ttbar``, ``qcd``, ``ztautau`` or ``minbias``.
        pileup: mean number of pile-up interactions μ.
        ecm: √s in GeV (default 13.6 TeV).
        pthat_min: p̂_T threshold of ``qcd``.
        backend: ``auto`` (Pythia if installed), ``pythia`` (error if missing) or ``parametric``.
        extra_settings: extra Pythia settings (ignored by the parametric backend).

    Returns:
        dict of per-particle arrays (:data:`GEN_KEYS`) plus ``backend`` (a one-element int8 array:
        1 = Pythia 8, 0 = parametric).
    """
    if backend not in ("auto", "pythia", "parametric"):
        raise ValueError(f"backend={backend!r}; expected 'auto', 'pythia' or 'parametric'")
    use_pythia = backend == "pythia" or (backend == "auto" and pythia_available())
    if use_pythia and not pythia_available():
        raise ImportError("backend='pythia' needs the pythia8mc package (pip install pythia8mc)")
    if use_pythia:
        ev = pythia_event(seed, process, pileup, ecm, pthat_min, extra_settings)
    else:
        ev = parametric_event(seed, process, pileup, ecm, pthat_min)
    ev["backend"] = np.array([1 if use_pythia else 0], np.int8)
    return ev


def _worker(args: tuple) -> dict[str, np.ndarray]:
    seed, kwargs = args
    return generate_event(seed, **kwargs)


def generate_events(seeds: Iterable[int], n_workers: int = 1, **kwargs) -> list[dict[str, np.ndarray]]:
    """Generate one event per seed, in ``n_workers`` processes (each with its own Pythia instance).

    The result is in the order of ``seeds`` and does not depend on ``n_workers``.
    """
    seeds = [int(s) for s in seeds]
    if n_workers <= 1 or len(seeds) <= 1:
        return [generate_event(s, **kwargs) for s in seeds]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(n_workers, len(seeds))) as pool:
        return pool.map(_worker, [(s, kwargs) for s in seeds], chunksize=max(1, len(seeds) // (4 * n_workers)))
